"""SMS providers: one module per provider behind the Provider protocol."""

from smsgw.providers.airtel import AirtelProvider
from smsgw.providers.base import OutgoingSms, Provider, SendReceipt
from smsgw.providers.console import ConsoleProvider
from smsgw.providers.factory import build_provider
from smsgw.providers.receipt_tags import ReceiptTagger
from smsgw.providers.twilio import TwilioProvider
from smsgw.providers.vonage import VonageProvider

__all__ = [
    "AirtelProvider",
    "ConsoleProvider",
    "OutgoingSms",
    "Provider",
    "ReceiptTagger",
    "SendReceipt",
    "TwilioProvider",
    "VonageProvider",
    "build_provider",
]
