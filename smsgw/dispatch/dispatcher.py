"""The dispatcher: takes messages off the queue and sends each through a provider's lane.

No worker pool: each message held is a task, and what paces it is the provider's rate
limiter (and its in-flight cap), not a worker count. A provider answering in 300 ms at 1000
sends/s then simply has ~300 requests open (Little's law), without anyone sizing a pool for
it. `dispatch.concurrency` bounds the messages one replica holds (memory, and what a killed
replica leaves for others to take over); each lane also stops taking more once it holds
about WAIT_AHEAD_S of its rate waiting, so intake follows what the providers can take.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Literal

import structlog
from prometheus_client import CollectorRegistry

from smsgw._aio import cancel_and_wait
from smsgw.audit import AuditRecorder
from smsgw.dispatch.lane import Held, Lane
from smsgw.dispatch.metrics import DispatchMetrics
from smsgw.dispatch.router import Router, Verdict
from smsgw.dispatch.stats import DispatchStats
from smsgw.errors import (
    ConcurrencyLimited,
    PermanentProviderError,
    RetryableProviderError,
    ThrottledError,
)
from smsgw.limiter.base import ProviderLimiter
from smsgw.limiter.in_flight import InFlightLimits
from smsgw.providers.base import OutgoingSms, Provider, SendHandle
from smsgw.queue.base import MessageQueue
from smsgw.queue.message import Message
from smsgw.retry import backoff_delay
from smsgw.segments import segment
from smsgw.settings import DispatchSettings, RateUnit

__all__ = ["DispatchStats", "Dispatcher"]

_log = structlog.get_logger("smsgw.dispatch")

# How long a message waits when every provider for it has an open circuit (a probe may
# close one meanwhile).
OPEN_CIRCUIT_RETRY_S = 1.0
# How long a message waits in the queue when its provider's lane is overfull (the bulkhead).
LANE_FULL_RETRY_S = 0.5
# Messages taken in whose task has not yet picked a provider. A queue that has messages at
# hand answers get() without yielding, so without this bound the intake would take up to
# `concurrency` before any lane could say it is full.
INTAKE_AHEAD = 64


class Dispatcher:
    def __init__(
        self,
        queue: MessageQueue,
        router: Router,
        limiter: ProviderLimiter,
        settings: DispatchSettings,
        audit: AuditRecorder,
        registry: CollectorRegistry | None = None,
        *,
        in_flight: InFlightLimits | None = None,
        rates: Mapping[str, float | None] | None = None,
        rate_units: Mapping[str, RateUnit] | None = None,
    ) -> None:
        self._queue = queue
        self._router = router
        self._limiter = limiter
        self.in_flight = in_flight
        self._settings = settings
        self._audit = audit
        # Instruments live on the app's registry when it exposes /metrics, else a private one.
        self.metrics = DispatchMetrics(registry if registry is not None else CollectorRegistry())
        self.stats = DispatchStats()
        self._instruments = {p.name: self.metrics.for_provider(p.name) for p in router.providers}
        self.lanes = {
            provider.name: Lane(
                provider,
                limiter,
                in_flight,
                rate=(rates or {}).get(provider.name),
                rate_unit=(rate_units or {}).get(provider.name, "segments"),
                stats=self.stats,
                max_held=settings.concurrency,
            )
            for provider in router.providers
        }
        self._intake: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()
        self._unpicked = 0  # taken in, no lane yet
        self._log: structlog.typing.FilteringBoundLogger = _log

    @property
    def limiter(self) -> ProviderLimiter:
        return self._limiter

    @property
    def held(self) -> int:
        """Messages this dispatcher holds: waiting for a place or a slot, or being sent."""
        return len(self._tasks)

    def start(self) -> None:
        # Bound once, with the logging configured by now: the module's lazy proxy binds
        # again on every call, which per sent message cost more than the filtered-out
        # debug line itself.
        self._log = _log.bind()
        self._intake = asyncio.create_task(self._take_in(), name="smsgw-dispatch-intake")

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
        await cancel_and_wait([self._intake, *self._tasks])
        self._intake = None
        self._tasks.clear()

    # -- intake -------------------------------------------------------------------------

    async def _take_in(self) -> None:
        tasks = self._tasks
        while True:
            while not self._may_take():
                self._room.clear()
                await self._room.wait()
            message = await self._queue.get()
            self._unpicked += 1
            task = asyncio.create_task(self._run(message))
            tasks.add(task)
            task.add_done_callback(self._settled)

    def _may_take(self) -> bool:
        if len(self._tasks) >= self._settings.concurrency or self._unpicked >= INTAKE_AHEAD:
            return False
        return any(lane.has_room() for lane in self.lanes.values())

    def _settled(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._room.set()

    async def _run(self, message: Message) -> None:
        try:
            await self._deliver(message)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug must not lose the message silently: log it and treat it as a failed
            # attempt, so the message is retried but cannot loop forever.
            _log.exception("dispatch_bug", message_id=message.id)
            message.attempts += 1
            if message.attempts >= self._settings.max_attempts:
                await self._fail(message, "internal error")
            else:
                await self._queue.retry_later(message, self._settings.backoff_max_s)

    # -- one message --------------------------------------------------------------------

    async def _deliver(self, message: Message) -> None:
        self._unpicked -= 1
        self._room.set()
        if self._too_old(message):
            await self._expire(message, f"not sent within {self._settings.max_age_s:g} s")
            return
        if _is_expired(message):
            await self._expire(message)
            return
        segments = message.segments or segment(message.body).segments
        avoid = message.failed_providers
        busy = [name for name, lane in self.lanes.items() if lane.refusing() or lane.overfull()]
        if busy:
            # Providers refusing for concurrency, or holding too many waiting: another that
            # serves the message is better (pick falls back to them if none does).
            avoid = (*avoid, *busy)
        provider = self._router.pick(message.country, avoid=avoid, segments=segments)
        if provider is None:
            await self._no_provider(message, segments)
            return
        lane = self.lanes[provider.name]
        verdict: Verdict = "none"
        lane.held += 1
        try:
            if lane.overfull():
                await self._lane_full(message, lane)
                return
            verdict = await self._deliver_through(message, lane, lane.units(segments))
        finally:
            lane.held -= 1
            self._room.set()
            # Also on cancellation or a bug: a half-open probe must be given back.
            self._router.report(provider.name, verdict)

    async def _deliver_through(self, message: Message, lane: Lane, units: int) -> Verdict:
        """Send through the lane's provider (its circuit let the call through); what it
        showed of the provider's health."""
        provider = lane.provider
        while True:
            if await self._queue.was_sent(message):
                # A redelivered copy of a message another replica already sent: never twice.
                self.stats.duplicates_skipped += 1
                await self._queue.ack(message)
                return "none"
            place = await lane.take_place()
            turn = Held(None)
            try:
                turn = await lane.take_turn()
                try:
                    handle = await provider.ready()  # step 2 of the lane (lane.py)
                except RetryableProviderError as exc:  # nothing was sent
                    provider.log_failure(message.id, exc)
                    await self._on_retryable(message, provider, exc)
                    return "failed"
                try:
                    outcome = await self._send(message, lane, handle, units, place, turn)
                except ConcurrencyLimited:
                    # Not a failure and nothing was processed: fewer open requests (the
                    # lane paused), then the same message again; it stays in this replica.
                    self.stats.concurrency_refusals += 1
                    self.metrics.outcome(provider.name, "concurrency_refused")
                    continue
            finally:
                turn.release()  # if the send did not already
                place.release()  # the same
            lane.answered()
            return outcome

    async def _send(
        self,
        message: Message,
        lane: Lane,
        handle: SendHandle,
        units: int,
        place: Held,
        turn: Held,
    ) -> Verdict:
        provider = lane.provider
        launched = False
        try:
            waited_from = time.monotonic()
            slot = await lane.slot(units)
            # Waiting for the limiter may have outlived the message.
            if _is_expired(message):
                await self._expire(message)
                return "none"
            remaining = message.remaining_s(time.time())
            sms = OutgoingSms(
                message_id=message.id,
                to=message.to,
                body=message.body,
                validity_s=None if remaining is None else int(remaining),
            )
            pending = handle.launch(sms)  # the request is written: the slot is spent
            launched = True
            turn.release()
            written = time.monotonic()
        finally:
            if not launched:
                handle.cancel()
        instruments = self._instruments[provider.name]
        instruments.decision_delay.observe(written - slot)
        instruments.limiter_wait.observe(slot - waited_from)
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
        lane.open_now += 1
        try:
            try:
                receipt = await pending
            except ConcurrencyLimited as exc:
                lane.refused(exc.retry_after_s)  # before the place goes back (in_flight.py)
                raise
            finally:
                # The provider's place is free once it answered, not once we recorded it:
                # under a binding max_in_flight every ms held here is throughput.
                lane.open_now -= 1
                place.release()
                instruments.send_seconds.observe(time.monotonic() - written)
        except ConcurrencyLimited:
            raise
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
        instruments.sent.inc()
        self._audit.record(
            message.id,
            "sent",
            provider=provider.name,
            attempt=message.attempts,
            provider_message_id=receipt.provider_message_id,
        )
        self._log.debug(
            "sent",
            message_id=message.id,
            provider=provider.name,
            provider_message_id=receipt.provider_message_id,
            attempts=message.attempts,
        )
        await self._queue.ack(message)
        return "ok"

    async def _lane_full(self, message: Message, lane: Lane) -> None:
        # The bulkhead: a provider that takes nothing (refusing for concurrency, paused)
        # must not fill this replica with its messages while others could be sent. Back to
        # the queue for a moment; not an attempt.
        self.stats.lane_full_waits += 1
        self._audit.record(
            message.id, "retry", provider=lane.name, reason="provider busy: too many waiting"
        )
        await self._queue.retry_later(message, LANE_FULL_RETRY_S)

    async def _no_provider(self, message: Message, segments: int) -> None:
        if not self._router.serves(message.country, segments):
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
