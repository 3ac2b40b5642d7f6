"""The dispatcher: worker tasks that take messages off the queue and hand them to providers."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Literal

import structlog
from prometheus_client import CollectorRegistry

from smsgw._aio import cancel_and_wait
from smsgw.audit import AuditRecorder
from smsgw.counters import Counters
from smsgw.dispatch.metrics import DispatchMetrics
from smsgw.dispatch.router import Router, Verdict
from smsgw.errors import PermanentProviderError, RetryableProviderError, ThrottledError
from smsgw.limiter.base import LATE_SLOT_S, ProviderLimiter
from smsgw.providers.base import OutgoingSms, Provider
from smsgw.queue.base import MessageQueue
from smsgw.queue.message import Message
from smsgw.retry import backoff_delay
from smsgw.settings import DispatchSettings

__all__ = ["DispatchStats", "Dispatcher"]

_log = structlog.get_logger("smsgw.dispatch")

# How long a message waits when every provider for it has an open circuit (a probe may
# close one meanwhile).
OPEN_CIRCUIT_RETRY_S = 1.0


@dataclass(slots=True)
class DispatchStats(Counters):
    """Counters since start; read by health checks, tests and benchmarks."""

    sent: int = 0
    failed: int = 0
    expired: int = 0
    retried: int = 0
    throttled: int = 0
    # Retries after an answer that may have meant "sent": each may be a duplicate SMS.
    possible_duplicates: int = 0
    # Limiter slots dropped because the loop reached them too late to use them safely.
    late_slots: int = 0
    # Redelivered copies (a replica died mid-send) found already sent and not sent again.
    duplicates_skipped: int = 0
    # Messages put back because every provider serving them had an open circuit.
    circuit_waits: int = 0


class Dispatcher:
    def __init__(
        self,
        queue: MessageQueue,
        router: Router,
        limiter: ProviderLimiter,
        settings: DispatchSettings,
        audit: AuditRecorder,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._queue = queue
        self._router = router
        self._limiter = limiter
        self._settings = settings
        self._audit = audit
        # Instruments live on the app's registry when it exposes /metrics, else a private one.
        self.metrics = DispatchMetrics(registry if registry is not None else CollectorRegistry())
        self._workers: list[asyncio.Task[None]] = []
        self.stats = DispatchStats()

    @property
    def limiter(self) -> ProviderLimiter:
        return self._limiter

    def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._work(), name=f"smsgw-dispatch-{i}")
            for i in range(self._settings.concurrency)
        ]

    async def drain(self, timeout_s: float) -> bool:
        """Finish what this process holds; False if the bound ran out.

        A shared (Redis) queue stops handing out new messages and gives back what it
        prefetched, so the rest is sent by other replicas; the memory queue has no one
        else, so everything accepted is sent here.
        """

        async def finish() -> None:
            await self._queue.stop_fetching()
            await self._queue.wait_empty()

        try:
            await asyncio.wait_for(finish(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        await cancel_and_wait(self._workers)
        self._workers = []

    async def _work(self) -> None:
        while True:
            message = await self._queue.get()
            try:
                await self._deliver(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug must not kill the worker or lose the message silently: log it and treat
                # it as a failed attempt, so the message is retried but cannot loop forever.
                _log.exception("dispatch_bug", message_id=message.id)
                message.attempts += 1
                if message.attempts >= self._settings.max_attempts:
                    await self._fail(message, "internal error")
                else:
                    await self._queue.retry_later(message, self._settings.backoff_max_s)

    async def _deliver(self, message: Message) -> None:
        if self._too_old(message):
            await self._expire(message, f"not sent within {self._settings.max_age_s:g} s")
            return
        if _is_expired(message):
            await self._expire(message)
            return
        provider = self._router.pick(message.country, avoid=message.failed_providers)
        if provider is None:
            await self._no_provider(message)
            return
        verdict: Verdict = "none"
        try:
            verdict = await self._deliver_through(message, provider)
        finally:
            # Also on cancellation or a bug: a half-open probe must be given back.
            self._router.report(provider.name, verdict)

    async def _deliver_through(self, message: Message, provider: Provider) -> Verdict:
        """Send through `provider` (its circuit let the call through); what it showed of the
        provider's health."""
        await self._acquire_slot(provider.name)
        # Waiting for the limiter may have outlived the message.
        if _is_expired(message):
            await self._expire(message)
            return "none"
        if await self._queue.was_sent(message):
            # A redelivered copy of a message another replica already sent: never twice.
            self.stats.duplicates_skipped += 1
            await self._queue.ack(message)
            return "none"
        remaining = message.remaining_s(time.time())
        # Taken over from a replica that died mid-send: it may have gone out already.
        taken_over = self._queue.taken_over(message)
        if taken_over:
            self.stats.possible_duplicates += 1
        self._audit.record(
            message.id,
            "sending",
            provider=provider.name,
            attempt=message.attempts + 1,
            possible_duplicate=taken_over,
        )
        sms = OutgoingSms(
            message_id=message.id,
            to=message.to,
            body=message.body,
            validity_s=None if remaining is None else int(remaining),
        )
        started = time.monotonic()
        try:
            try:
                receipt = await provider.send(sms)
            finally:
                self.metrics.send_seconds.labels(provider.name).observe(time.monotonic() - started)
        except ThrottledError as exc:
            await self._on_throttled(message, provider, exc)
            return "none"  # healthy, only busy: never opens the circuit
        except RetryableProviderError as exc:
            await self._on_retryable(message, provider, exc)
            return "failed"
        except PermanentProviderError as exc:
            # The provider works; it refuses this message (invalid number, blocked, ...).
            message.attempts += 1
            await self._fail(message, exc.detail, provider=provider.name)
            return "ok"
        await self._queue.mark_sent(message)
        message.attempts += 1
        self.stats.sent += 1
        self.metrics.outcome(provider.name, "sent")
        self._audit.record(
            message.id,
            "sent",
            provider=provider.name,
            attempt=message.attempts,
            provider_message_id=receipt.provider_message_id,
        )
        _log.debug(
            "sent",
            message_id=message.id,
            provider=provider.name,
            provider_message_id=receipt.provider_message_id,
            attempts=message.attempts,
        )
        await self._queue.ack(message)
        return "ok"

    async def _no_provider(self, message: Message) -> None:
        if not self._router.serves(message.country):
            # Routing changed since the API accepted it: a policy refusal, not a failure.
            await self._fail(message, "no provider serves this destination", kind="rejected")
            return
        # Every provider for it has an open circuit: wait for a probe to close one. Not
        # an attempt; an OTP that cannot wait expires as usual.
        delay = OPEN_CIRCUIT_RETRY_S
        remaining = message.remaining_s(time.time())
        if remaining is not None and delay >= remaining:
            await self._expire(message, "every provider for it was unavailable")
            return
        self.stats.circuit_waits += 1
        self._audit.record(message.id, "retry", reason="every provider's circuit is open")
        await self._queue.retry_later(message, delay)

    def _too_old(self, message: Message) -> bool:
        # Messages without a validity (bulk) still end: a provider that throttles forever
        # must not keep one circling in the queue (throttle answers do not count attempts).
        return time.time() - message.created_at > self._settings.max_age_s

    async def _acquire_slot(self, provider: str) -> None:
        started = time.monotonic()
        while True:
            slot = await self._limiter.acquire(provider)
            now = time.monotonic()
            if now - slot <= LATE_SLOT_S:
                self.metrics.limiter_wait.labels(provider).observe(now - started)
                return
            # The event loop ran late: sending now would bunch with the next slots.
            self.stats.late_slots += 1

    async def _expire(
        self, message: Message, reason: str = "validity ran out before sending"
    ) -> None:
        # An OTP that outlived its validity is worthless and confusing: drop it, never send late.
        self.stats.expired += 1
        self.metrics.outcome(None, "expired")
        _log.info("expired", message_id=message.id, attempts=message.attempts)
        self._audit.record(message.id, "expired", reason=reason)
        await self._queue.ack(message)

    async def _on_throttled(
        self, message: Message, provider: Provider, exc: ThrottledError
    ) -> None:
        # Not the message's fault: pause the provider for everyone, keep the attempt count.
        self.stats.throttled += 1
        self.metrics.outcome(provider.name, "throttled")
        self._audit.record(
            message.id, "retry", provider=provider.name, reason=f"throttled: {exc.detail}"
        )
        await self._limiter.pause(provider.name, exc.retry_after_s)
        await self._queue.retry_later(message, exc.retry_after_s)

    async def _on_retryable(
        self, message: Message, provider: Provider, exc: RetryableProviderError
    ) -> None:
        message.attempts += 1
        if provider.name not in message.failed_providers:
            message.failed_providers = (*message.failed_providers, provider.name)
        delay = backoff_delay(
            message.attempts, self._settings.backoff_base_s, self._settings.backoff_max_s
        )
        remaining = message.remaining_s(time.time())
        if message.attempts >= self._settings.max_attempts:
            await self._fail(message, f"gave up after {message.attempts} attempts: {exc.detail}")
        elif remaining is not None and delay >= remaining:
            await self._expire(message, f"no time left to retry after: {exc.detail}")
        else:
            self.stats.retried += 1
            self.metrics.outcome(provider.name, "retry")
            if exc.ambiguous:
                # The provider may have sent it already; this retry may deliver it twice.
                self.stats.possible_duplicates += 1
            _log.debug(
                "retry",
                message_id=message.id,
                provider=provider.name,
                reason=exc.detail,
                ambiguous=exc.ambiguous,
                delay_s=round(delay, 3),
            )
            self._audit.record(
                message.id,
                "retry",
                provider=provider.name,
                attempt=message.attempts,
                reason=exc.detail,
                possible_duplicate=exc.ambiguous,
            )
            await self._queue.retry_later(message, delay)

    async def _fail(
        self,
        message: Message,
        reason: str,
        provider: str | None = None,
        kind: Literal["failed", "rejected"] = "failed",
    ) -> None:
        self.stats.failed += 1
        self.metrics.outcome(provider, kind)
        _log.warning(
            kind,
            message_id=message.id,
            provider=provider,
            reason=reason,
            attempts=message.attempts,
        )
        self._audit.record(message.id, kind, provider=provider, reason=reason)
        await self._queue.ack(message)


def _is_expired(message: Message) -> bool:
    return message.expires_at is not None and time.time() >= message.expires_at
