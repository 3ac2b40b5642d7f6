"""Build a provider from its settings entry, whatever its kind (see smsgw.providers.base)."""

from __future__ import annotations

from urllib.parse import quote

from smsgw.providers.base import Provider, provider_class
from smsgw.providers.receipt_tags import ReceiptTagger
from smsgw.settings import ProviderSettings

__all__ = ["build_provider", "receipt_url"]


def receipt_url(public_url: str, provider_name: str) -> str:
    """The webhook a provider posts delivery receipts to (routed in smsgw.api.routes)."""
    return f"{public_url.rstrip('/')}/v1/webhooks/{quote(provider_name, safe='')}"


def build_provider(
    settings: ProviderSettings,
    public_url: str | None = None,
    tagger: ReceiptTagger | None = None,
) -> Provider:
    """`public_url` (server.public_url): where providers reach our receipt webhooks; without
    it no callback is requested (Vonage then uses the account's dashboard setting).
    `tagger`: tags each send so its receipts prove we sent it (needed with `public_url`)."""
    callback = None if public_url is None else receipt_url(public_url, settings.name)
    return provider_class(settings).from_settings(settings, receipt_url=callback, tagger=tagger)
