"""SMS providers: one module per provider behind the Provider protocol."""

from smsgw.providers.base import OutgoingSms, Provider, SendReceipt
from smsgw.providers.console import ConsoleProvider
from smsgw.providers.factory import build_provider
from smsgw.providers.twilio import TwilioProvider

__all__ = [
    "ConsoleProvider",
    "OutgoingSms",
    "Provider",
    "SendReceipt",
    "TwilioProvider",
    "build_provider",
]
