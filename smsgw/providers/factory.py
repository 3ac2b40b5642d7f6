"""Build a provider from its settings entry, whatever its kind (see smsgw.providers.base)."""

from __future__ import annotations

from urllib.parse import quote

from smsgw.providers.base import Provider, provider_class
from smsgw.providers.receipt_tags import ReceiptRoute, ReceiptTagger
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
    receipts = None
    if public_url is not None:
        if tagger is None:
            raise ValueError("a receipt callback needs a tagger: untagged receipts are refused")
        receipts = ReceiptRoute(receipt_url(public_url, settings.name), tagger)
    return provider_class(settings).from_settings(settings, receipts)
