"""The provider plugin protocol: a base class times and logs around one abstract send."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import structlog

from smsgw.errors import ProviderError

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
    PermanentProviderError.
    """

    def __init__(self, name: str) -> None:
        self.name = name

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
