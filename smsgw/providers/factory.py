"""Build a provider from its settings entry."""

from __future__ import annotations

from smsgw.providers.airtel import AirtelProvider
from smsgw.providers.base import Provider
from smsgw.providers.console import ConsoleProvider
from smsgw.providers.twilio import TwilioProvider
from smsgw.providers.vonage import VonageProvider
from smsgw.settings import (
    AirtelProviderSettings,
    ConsoleProviderSettings,
    ProviderSettings,
    TwilioProviderSettings,
    VonageProviderSettings,
)

__all__ = ["build_provider"]


def build_provider(settings: ProviderSettings) -> Provider:
    if isinstance(settings, TwilioProviderSettings):
        return TwilioProvider(settings)
    if isinstance(settings, VonageProviderSettings):
        # Delivery-receipt callbacks are not wired yet: the account's dashboard URL applies.
        return VonageProvider(settings, callback=None)
    if isinstance(settings, AirtelProviderSettings):
        return AirtelProvider(settings)
    if isinstance(settings, ConsoleProviderSettings):
        return ConsoleProvider(settings)
    raise TypeError(f"no provider for {type(settings).__name__}")
