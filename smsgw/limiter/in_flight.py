"""Caps on the sends open at once to a provider (Twilio's concurrent-request limit: 429 /
20429 above it), local to the process or shared by every replica through Redis.

- `MemoryInFlight` (embedded mode): an exact counter and FIFO waiters per provider.
- `RedisInFlight`: each replica holds a *grant* of the provider's cap in a Redis hash and opens
  at most that many sends. in_flight.lua renews it every RENEW_S: it drops the entries of
  replicas that stopped renewing (their places come back one lease later), computes this
  replica's max-min fair share of the cap and grants min(max(share, in use), free), so the
  grants never add up to more than the cap.
- A call whose outcome we do not know (a timeout) may have lowered our grant in Redis to what
  we had open when we sent it, so from the moment a call is sent until one succeeds nothing
  opens beyond that; when no call has succeeded for a lease, Redis has dropped our entry and
  we open nothing at all (fail closed). Sends already open when Redis went away cannot be
  recalled: they end within the provider's timeout.
- A new primary (Sentinel failover) may not have the last grants of the old one: for a lease
  after this replica saw the change no grant grows past what it had (or has open), so the
  grants recorded only on the old primary have expired before anyone takes their places.
- refused(): the provider said "too many open" although our share allowed it (a cap set too
  high, or other apps on the same account). The replica lowers its own bound to one below
  what it had open and grows it back by one place every RECOVER_STEP_S, so a wrong cap
  converges instead of storming the provider. Its lower demand reaches Redis at the next
  renewal, and what it gives up goes to the other replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import structlog
from redis.asyncio import Redis

from smsgw._aio import cancel_and_wait
from smsgw.counters import Counters
from smsgw.log import Outage
from smsgw.redis_connect import primary_watch
from smsgw.redis_keys import RedisKeys
from smsgw.redis_scripts import REDIS_FAILURES, load_script

__all__ = ["InFlightLimits", "InFlightStats", "MemoryInFlight", "RedisInFlight"]

_log = structlog.get_logger("smsgw.limiter")

# A grant lives this long in Redis unless renewed: how soon a SIGKILLed replica's places
# come back, and how long a replica cut off from Redis keeps using its grant.
LEASE_S = 3.0
RENEW_S = 0.25
# Early renewals (new demand while the grant is used up) come at most this often.
MIN_RENEW_GAP_S = 0.05
# Bound on one Redis call: well under the lease, so a hung call cannot outlive the grant.
CALL_TIMEOUT_S = 0.5
# Our grant lapses this much before Redis' expiry stamp (taken after we sent the call),
# for clock rates and the scheduling delay of our own timers.
LEASE_MARGIN_S = 0.1
# After a refusal the replica's own bound grows back by one place this often.
RECOVER_STEP_S = 1.0


@dataclass(slots=True)
class InFlightStats(Counters):
    """Counters since start, summed over providers."""

    refusals: int = 0  # refused() calls: the provider answered 429 / 20429
    waits: int = 0  # open() calls that had to queue
    share_changes: int = 0  # times a provider's usable limit changed
    renewals: int = 0  # renewal calls to Redis
    redis_failures: int = 0  # renewal calls that failed
    fail_closed: int = 0  # grants that lapsed because Redis did not answer for a lease


class InFlightLimits(Protocol):
    """What the dispatcher needs: a place per open send, per provider."""

    @property
    def stats(self) -> Mapping[str, int]: ...

    def try_open(self, provider: str) -> bool:
        """Take a place now if this replica's share allows (and nobody queues before us)."""

    async def open(self, provider: str) -> None:
        """Wait (FIFO) until a place is taken; a cancelled wait takes none."""

    def close(self, provider: str) -> None:
        """Give a place back; never raises."""

    def in_flight(self, provider: str) -> int:
        """Places this replica holds now."""

    def limit(self, provider: str) -> int | None:
        """This replica's current usable share; None = unlimited."""

    def cap(self, provider: str) -> int | None:
        """The configured cap across every replica; None = unlimited."""

    def refused(self, provider: str, retry_after_s: float | None) -> None:
        """The provider refused a send for concurrency: call while that send is still open."""

    async def start(self) -> None: ...

    async def close_all(self) -> None:
        """Stop background work and cancel waiters (after the sends have drained)."""


class _Ceiling:
    """A replica's own bound after refusals: additive increase back up to the cap."""

    def __init__(self, cap: int, step_s: float) -> None:
        self._cap = cap
        self._step_s = step_s
        self._value: int | None = None
        self.next_at = math.inf  # when it grows next (time.monotonic())

    def value(self, now: float) -> int | None:
        if self._value is not None and now >= self.next_at:
            steps = 1 + math.floor((now - self.next_at) / self._step_s)
            self._value += steps
            self.next_at += steps * self._step_s
            if self._value >= self._cap:
                self._value, self.next_at = None, math.inf
        return self._value

    def lower(self, in_flight: int, retry_after_s: float | None, now: float) -> None:
        current = self.value(now)
        value = max(1, in_flight - 1)  # keep one place: a replica must probe to recover
        if current is not None:
            value = min(value, current)
        if value >= self._cap:
            return
        # Each refusal extends the hold (never shortens it): no growth while the provider
        # still says no.
        hold_until = now + max(self._step_s, retry_after_s or 0.0)
        self.next_at = hold_until if current is None else max(self.next_at, hold_until)
        self._value = value


class _Gate:
    """One provider in this replica: its open count and its FIFO waiters."""

    def __init__(
        self,
        cap: int | None,
        share: Callable[[], int | None],
        stats: InFlightStats,
        step_s: float,
        on_starved: Callable[[], None] | None = None,
    ) -> None:
        self.cap = cap
        self.in_flight = 0
        self.ceiling = None if cap is None else _Ceiling(cap, step_s)
        self._share = share
        self._stats = stats
        self._on_starved = on_starved
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._waiting = 0  # open() calls waiting, without the cancelled ones
        self._last_limit: int | None = cap
        self._timer: asyncio.TimerHandle | None = None

    def limit(self) -> int | None:
        bound = self._share()
        if self.ceiling is not None:
            own = self.ceiling.value(time.monotonic())
            if own is not None:
                bound = own if bound is None else min(bound, own)
        if bound != self._last_limit:
            self._last_limit = bound
            self._stats.share_changes += 1
        return bound

    def waiting(self) -> int:
        return self._waiting

    def try_open(self) -> bool:
        while self._waiters and self._waiters[0].done():
            self._waiters.popleft()
        return not self._waiters and self._take()

    async def open(self) -> None:
        if self.try_open():
            return
        self._stats.waits += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._waiting += 1
        self._starved()
        try:
            await future
        except asyncio.CancelledError:
            if future.cancelled():
                self._waiting -= 1
            else:
                self.close()  # the place was handed over as we were cancelled: give it back
            raise

    def close(self) -> None:
        if self.in_flight > 0:  # a stray close must not mint a place
            self.in_flight -= 1
        self.pump()

    def pump(self) -> None:
        """Hand free places to the waiters in order."""
        waiters = self._waiters
        while waiters:
            if waiters[0].done():  # cancelled while waiting
                waiters.popleft()
            elif self._take():
                waiters.popleft().set_result(None)
                self._waiting -= 1
            else:
                self._starved()
                break

    def cancel_waiters(self) -> None:
        while self._waiters:
            self._waiters.popleft().cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _take(self) -> bool:
        limit = self.limit()
        if limit is not None and self.in_flight >= limit:
            return False
        self.in_flight += 1
        return True

    def _starved(self) -> None:
        if self._on_starved is not None:
            self._on_starved()
        # Waiters held back by our own ceiling: come back when it grows by a place.
        if self._timer is None and self.ceiling is not None and self.ceiling.next_at < math.inf:
            loop = asyncio.get_running_loop()
            delay = max(0.0, self.ceiling.next_at - time.monotonic())
            self._timer = loop.call_later(delay + 0.001, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.pump()


class _Limits:
    """What both backends share: one gate per provider (unknown providers are unlimited)."""

    def __init__(self, caps: Mapping[str, int | None], recover_step_s: float) -> None:
        self._caps = dict(caps)
        self._recover_step_s = recover_step_s
        self.stats = InFlightStats()
        self._gates: dict[str, _Gate] = {}

    def _gate(self, provider: str) -> _Gate:
        gate = self._gates.get(provider)
        if gate is None:
            gate = self._gates[provider] = _Gate(None, _unlimited, self.stats, 1.0)
        return gate

    def try_open(self, provider: str) -> bool:
        return self._gate(provider).try_open()

    async def open(self, provider: str) -> None:
        await self._gate(provider).open()

    def close(self, provider: str) -> None:
        self._gate(provider).close()

    def in_flight(self, provider: str) -> int:
        return self._gate(provider).in_flight

    def limit(self, provider: str) -> int | None:
        return self._gate(provider).limit()

    def cap(self, provider: str) -> int | None:
        return self._caps.get(provider)

    def refused(self, provider: str, retry_after_s: float | None) -> None:
        self.stats.refusals += 1
        gate = self._gate(provider)
        if gate.ceiling is None:
            return
        gate.ceiling.lower(gate.in_flight, retry_after_s, time.monotonic())
        limit = gate.limit()
        _log.info("in_flight_refused", provider=provider, in_flight=gate.in_flight, limit=limit)

    async def start(self) -> None:
        return None

    async def close_all(self) -> None:
        for gate in self._gates.values():
            gate.cancel_waiters()


def _unlimited() -> int | None:
    return None


def _fixed(cap: int | None) -> Callable[[], int | None]:
    return lambda: cap


class MemoryInFlight(_Limits):
    """InFlightLimits for one process: the cap is this replica's alone."""

    def __init__(
        self, caps: Mapping[str, int | None], *, recover_step_s: float = RECOVER_STEP_S
    ) -> None:
        super().__init__(caps, recover_step_s)
        for name, cap in caps.items():
            self._gates[name] = _Gate(cap, _fixed(cap), self.stats, recover_step_s)


class RedisInFlight(_Limits):
    """InFlightLimits shared by every replica through Redis; see the module docstring.

    start() begins renewing each capped provider's grant (until then nothing opens for it);
    close_all() stops, and hands back the grants of providers with nothing open. The Redis
    client stays the caller's.
    """

    def __init__(
        self,
        redis: Redis,
        caps: Mapping[str, int | None],
        keys: RedisKeys,
        replica_id: str,
        *,
        lease_s: float = LEASE_S,
        renew_s: float = RENEW_S,
        recover_step_s: float = RECOVER_STEP_S,
    ) -> None:
        super().__init__(caps, recover_step_s)
        self._redis = redis
        self.watch = primary_watch(redis)
        self.script = load_script(redis, "smsgw.limiter", "in_flight.lua")
        self.replica_id = replica_id
        self.lease_s = lease_s
        self.renew_s = renew_s
        self._renewers: dict[str, _Renewer] = {}
        for name, cap in caps.items():
            if cap is None:
                self._gates[name] = _Gate(None, _unlimited, self.stats, recover_step_s)
            else:
                renewer = _Renewer(self, name, cap, keys.in_flight(name))
                self._renewers[name] = renewer
                self._gates[name] = renewer.gate

    async def start(self) -> None:
        for renewer in self._renewers.values():
            renewer.start()

    async def close_all(self) -> None:
        await cancel_and_wait([renewer.task for renewer in self._renewers.values()])
        await super().close_all()
        for renewer in self._renewers.values():
            await renewer.hand_back()


class _Renewer:
    """One capped provider of a RedisInFlight: its grant and the task that renews it."""

    def __init__(self, owner: RedisInFlight, provider: str, cap: int, key: str) -> None:
        self._owner = owner
        self._provider = provider
        self._cap = cap
        self._key = key
        self.gate = _Gate(cap, self.usable, owner.stats, owner._recover_step_s, self._starved)
        self.task: asyncio.Task[None] | None = None
        self._grant = 0
        self._target = 0
        self._valid_until = -math.inf  # nothing until the first renewal answers
        self._pinned: int | None = None  # bound while a call's outcome is unknown
        self._lapsed = False
        self._reported = 0  # demand sent with the last successful call
        self._last_call = -math.inf
        self._kick = asyncio.Event()
        self._outage = Outage(
            _log, "in_flight_redis_unavailable", "in_flight_redis_recovered", duration_key="down_s"
        )

    def usable(self) -> int:
        if time.monotonic() >= self._valid_until:
            if self._valid_until > -math.inf and not self._lapsed:
                # Redis has dropped (or is about to drop) our entry: others may take it.
                self._lapsed = True
                self._owner.stats.fail_closed += 1
                _log.warning("in_flight_grant_lapsed", provider=self._provider)
            return 0
        bound = min(self._grant, self._target)
        return bound if self._pinned is None else min(bound, self._pinned)

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self._run(), name=f"smsgw-inflight-{self._provider}")

    async def hand_back(self) -> None:
        # With sends still open the entry must stay until it expires: others would take
        # the places while the provider still counts them.
        if self.gate.in_flight or self._valid_until == -math.inf:
            return
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                await self._owner._redis.hdel(self._key, self._owner.replica_id)
        except (*REDIS_FAILURES, TimeoutError) as exc:
            _log.info("in_flight_hand_back_failed", provider=self._provider, error=repr(exc))

    def _demand(self) -> int:
        demand = self.gate.in_flight + self.gate.waiting()
        own = self.gate.ceiling.value(time.monotonic()) if self.gate.ceiling else None
        return min(demand, self._cap if own is None else own)

    def _starved(self) -> None:
        # Renew early only with news for Redis: more demand than it was last told.
        if self._demand() > self._reported:
            self._kick.set()

    async def _run(self) -> None:
        while True:
            await self._wait_due()
            try:
                await self._renew()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug must not end the renewals (the grant would lapse for good).
                _log.exception("in_flight_bug", provider=self._provider)

    async def _wait_due(self) -> None:
        while True:
            gap = MIN_RENEW_GAP_S if self._kick.is_set() else self._owner.renew_s
            wait = self._last_call + gap - time.monotonic()
            if wait <= 0:
                return
            if self._kick.is_set():
                await asyncio.sleep(wait)
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._kick.wait()

    async def _renew(self) -> None:
        owner, gate = self._owner, self.gate
        in_use, demand = gate.in_flight, self._demand()
        self._kick.clear()
        # From here until an answer, Redis may already hold a grant of just `in_use`.
        self._pinned = in_use
        sent_at = self._last_call = time.monotonic()
        owner.stats.renewals += 1
        lease_ms = math.ceil(owner.lease_s * 1000)
        args: list[str | int] = [owner.replica_id, self._cap, demand, in_use, lease_ms]
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                reply = await owner.script(keys=[self._key], args=args)
            grant, target, _live = (int(value) for value in reply)
        except (*REDIS_FAILURES, TimeoutError, ValueError) as exc:
            self._failed(exc, sent_at, in_use)
            return
        watch = owner.watch
        if watch is not None and watch.hold_left(owner.lease_s, time.monotonic()) > 0:
            grant = min(grant, max(self._grant, in_use))
        self._grant, self._target = grant, target
        self._valid_until = sent_at + owner.lease_s - LEASE_MARGIN_S
        self._pinned = None
        self._lapsed = False
        self._reported = demand
        self._outage.ok(provider=self._provider)
        gate.pump()

    def _failed(self, exc: BaseException, sent_at: float, in_use: int) -> None:
        self._owner.stats.redis_failures += 1
        self._outage.failed(
            provider=self._provider,
            error=f"{type(exc).__name__}: {exc}",
            in_flight=in_use,
            fail_closed_in_s=round(max(0.0, self._valid_until - sent_at), 3),
        )
        self.gate.limit()  # note the share change for the stats
