"""The provider plugin protocol: a base class times and logs around one abstract send, and
receives the provider's delivery receipts when it sends them."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import structlog

from smsgw.errors import ProviderError
from smsgw.providers import registry
from smsgw.providers.receipt_tags import ReceiptTagger
from smsgw.providers.receipts import Receipt, ReceiptRequest
from smsgw.settings import ProviderSettings

__all__ = ["OutgoingSms", "Provider", "SendReceipt"]

_log = structlog.get_logger("smsgw.providers")


@dataclass(frozen=True, slots=True)
class OutgoingSms:
    message_id: str
    to: str  # E.164
    body: str
    # Seconds the SMS is still worth delivering (an OTP's remaining life); None = no limit.
    validity_s: int | None = None


@dataclass(frozen=True, slots=True)
class SendReceipt:
    provider: str
    provider_message_id: str
    latency_s: float


class Provider(ABC):
    """One SMS provider. Receives its own settings; never reads global config.

    Subclasses implement `_try_send` and raise the errors of smsgw.errors: ThrottledError,
    RetryableProviderError (with `ambiguous` when the request may have been processed) or
    PermanentProviderError. A class that sets `settings_type` is the provider of that
    settings class's kind (smsgw.providers.registry); one that sends receipts to our
    webhook sets `receives_receipts` and implements `parse_receipt`.
    """

    # The entry this provider is built from; declaring it registers the kind.
    settings_type: ClassVar[type[ProviderSettings]]
    # Its sends ask for receipts at our webhook when server.public_url is set.
    receives_receipts: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "settings_type" in cls.__dict__:
            registry.register(cls)

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def from_settings(
        cls,
        settings: ProviderSettings,
        *,
        receipt_url: str | None,
        tagger: ReceiptTagger | None,
    ) -> Provider:
        """Build from the entry. `receipt_url`: our webhook for this provider (None without
        server.public_url); `tagger`: tags each send so its receipts prove we sent it. Only
        a provider that receives receipts needs them (and overrides this)."""
        # A concrete provider's constructor takes its own settings class.
        provider: Provider = cast(Any, cls)(settings)
        return provider

    @classmethod
    def receipt_warnings(cls, settings: ProviderSettings) -> list[tuple[str, str]]:
        """(event, detail) to log at start-up where this entry's receipts are less protected
        than they should be; logged only where its receipts are taken."""
        return []

    def takes_receipts(self) -> bool:
        """Whether its webhook is open: it sends receipts there (see from_settings)."""
        return False

    async def parse_receipt(self, request: ReceiptRequest) -> Receipt | None:
        """Check one webhook request and say what it reports (None: nothing to record);
        raises ReceiptRefused. Called only when takes_receipts()."""
        raise NotImplementedError(f"{type(self).__name__} takes no receipts")

    async def start(self) -> None:
        """Open pooled connections or files; called once inside the running loop."""

    async def close(self) -> None:
        """Release what start() opened."""

    async def send(self, sms: OutgoingSms) -> SendReceipt:
        started = time.perf_counter()
        try:
            provider_message_id = await self._try_send(sms)
        except ProviderError as exc:
            # Per-message detail at debug level: at thousands of SMS/s an info line each would
            # cost more than the send itself. Never the body (it may hold a code) or the number.
            _log.debug(
                "provider_error",
                provider=self.name,
                message_id=sms.message_id,
                error=type(exc).__name__,
                provider_code=exc.code,
                detail=exc.detail,
            )
            raise
        return SendReceipt(self.name, provider_message_id, time.perf_counter() - started)

    @abstractmethod
    async def _try_send(self, sms: OutgoingSms) -> str:
        """Send one SMS; return the provider's id for it."""
