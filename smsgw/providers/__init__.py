"""SMS providers: one module per provider behind the Provider protocol.

Every module of this package is imported here, and importing a provider module registers
its kind (the registry in smsgw.providers.base): a new provider is one file.
"""

import importlib
import pkgutil

from smsgw.providers.airtel import AirtelProvider
from smsgw.providers.base import OutgoingSms, Provider, SendReceipt, provider_class
from smsgw.providers.console import ConsoleProvider
from smsgw.providers.factory import build_provider
from smsgw.providers.http import HttpProvider
from smsgw.providers.receipt_tags import ReceiptRoute, ReceiptTagger
from smsgw.providers.receipts import Receipt, ReceiptRequest
from smsgw.providers.twilio import TwilioProvider
from smsgw.providers.vonage import VonageProvider

__all__ = [
    "AirtelProvider",
    "ConsoleProvider",
    "HttpProvider",
    "OutgoingSms",
    "Provider",
    "Receipt",
    "ReceiptRequest",
    "ReceiptRoute",
    "ReceiptTagger",
    "SendReceipt",
    "TwilioProvider",
    "VonageProvider",
    "build_provider",
    "provider_class",
]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
