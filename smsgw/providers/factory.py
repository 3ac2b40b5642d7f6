"""Build a provider from its settings entry."""

from __future__ import annotations

from smsgw.providers.base import Provider
from smsgw.providers.console import ConsoleProvider
from smsgw.providers.twilio import TwilioProvider
from smsgw.settings import ConsoleProviderSettings, ProviderSettings, TwilioProviderSettings

__all__ = ["build_provider"]


def build_provider(settings: ProviderSettings) -> Provider:
    if isinstance(settings, TwilioProviderSettings):
        return TwilioProvider(settings)
    if isinstance(settings, ConsoleProviderSettings):
        return ConsoleProvider(settings)
    raise TypeError(f"no provider for {type(settings).__name__}")
