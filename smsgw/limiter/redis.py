"""Provider limiter shared by every replica through Redis: leased send slots on one grid.

- The provider's schedule is a grid of slots 1 / (pace x rate) apart on Redis's clock; each
  slot is leased to at most one replica, so no 1-second window of all replicas together
  holds more than pace x rate of them. One Lua script call (lease.lua) leases this replica
  up to `lease_size` slots, none further ahead than `lookahead_s`.
- The grid is dealt out in interleaved lanes: a lease is every n-th slot for a while, not a
  block of consecutive ones, so each replica sends at about its share of the rate instead
  of at the full rate in bursts, which a busy replica could not keep up with.
- A slot comes back as an offset from Redis's `now`. We map that `now` to the local
  monotonic time the reply arrived, which is never before the script ran: a slot can only
  be used late, never early.
- Each replica hands its slots to waiting acquire() calls in order. A slot nobody could take
  within LATE_SLOT_S is dropped: sent late, it would bunch with the next slots.
- Slots are worth one unit (a segment). A k-unit acquire takes k slots and is sent at its
  LAST slot's time, which is what it returns. The head waiter claims slots as they come
  due (the same staleness rule applies to each), and a claimed slot is never dropped as
  stale while the group waits for the rest, however far apart they are. Claims happen at
  slot time in time order, and leased slots always lie after the moment they arrive, so
  one replica's groups follow one another on the grid: at most one of them straddles any
  instant. A 1 s window [t, t+1) therefore holds the units of sends whose last slot is in
  it: grid slots in the window (at most floor(pace x rate), across all replicas) plus, per
  replica, at most k_max - 1 earlier slots of the one group straddling t. For R replicas:
      units in any 1 s window <= floor(pace x rate) + R x (k_max - 1)
  e.g. pace 0.99 at rate 1000 with messages of at most 3 segments on 3 replicas:
  990 + 6 = 996 < 1000. Where single-unit sends dominate the bound is rarely approached
  (a straddling group's earlier slots were used by nobody else in the window before).
- Redis unreachable: leased slots are still used, then acquire() waits (fail closed) while
  the lease is retried with backoff; with `degraded_replicas = N`, a local MemoryLimiter
  paces at rate / N instead until Redis answers again.
- A new primary (Sentinel failover): its copy of the schedule may miss the last slots the
  old one leased (replication is asynchronous), and one demoted while it runs serves the
  replicas that have not seen the change yet; so for the look-ahead plus
  FAILOVER_HOLD_S after this replica saw the change its leases ask for slots after that
  (lease.lua's hold, shared with every replica through the schedule). Slots leased by the
  very call that found the new primary are dropped: they were leased without the hold.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from smsgw._aio import cancel_and_wait
from smsgw.counters import Counters
from smsgw.limiter.base import LATE_SLOT_S
from smsgw.limiter.memory import COLD_PACE, MemoryLimiter
from smsgw.log import Outage
from smsgw.redis_connect import PROBE_INTERVAL_S, primary_watch
from smsgw.redis_keys import LIMITER_IDLE_TTL_S, RedisKeys
from smsgw.redis_scripts import load_script
from smsgw.retry import Backoff
from smsgw.settings import LimiterSettings

__all__ = ["RedisLimiter", "RedisLimiterStats"]

_log = structlog.get_logger("smsgw.limiter")

# Bound on one Redis call: an unanswered call must not hold the lane (or a pause) forever.
CALL_TIMEOUT_S = 0.5
# Retry backoff while Redis is unreachable: short, so service resumes soon after it returns.
RETRY_BASE_S = 0.05
RETRY_MAX_S = 0.5
# Degraded mode starts this long (plus the look-ahead) after Redis failed, and Redis slots
# this long after the last local grant when it returns: the two never share one window.
DEGRADED_HOLD_S = 1.0
# After a primary change, new slots keep this long (plus the look-ahead) clear of the moment
# this replica saw it. A dead old primary leased nothing after it; one demoted while it runs
# (a coordinated failover, a partition) serves the replicas that have not seen the change
# yet, which they do within a probe interval: a second for the window, one for that.
FAILOVER_HOLD_S = 1.0 + PROBE_INTERVAL_S
# At most this many interleaved lanes in a provider's schedule (lease.lua).
MAX_LANES = 8
# Throttle answers arriving together pause the shared key once, not once each.
PAUSE_COALESCE_S = 0.1
# After this long without sends a replica's connections to the provider are cold: the
# first sends open new ones and arrive late, bunching with the next (memory.py measured it).
# For its first second it then uses only COLD_PACE of the slots it leases.
COLD_AFTER_S = 1.0
_COLD_SKIP_EVERY = round(1 / (1 - COLD_PACE))
# Demand is measured over this long to size leases when few calls are waiting.
_DEMAND_WINDOW_S = 0.1
_EXPECTED_ERRORS = (RedisError, OSError, TimeoutError)


def slot_interval(rate: float, pace: float) -> tuple[int, int]:
    """Slot spacing as a fraction num/den of µs, so that no 1 s window holds more than
    floor(pace x rate) slots (at least one slot per 1 / (pace x rate) s below that)."""
    per_second = rate * pace
    whole = math.floor(per_second + 1e-9)
    if whole >= 1:
        return 1_000_000, whole
    return math.ceil(1_000_000 / per_second), 1


@dataclass(slots=True)
class RedisLimiterStats(Counters):
    """Counters since start, for benchmarks and metrics."""

    lease_calls: int = 0  # Redis calls that leased slots
    slots_leased: int = 0
    # Slots not used: reached too late (LATE_SLOT_S), paused over, or skipped while cold.
    slots_dropped: int = 0


class RedisLimiter:
    """ProviderLimiter shared through Redis; see the module docstring.

    The Redis client stays the caller's: close() does not close it.
    """

    def __init__(
        self,
        redis: Redis,
        rates: Mapping[str, float | None],
        keys: RedisKeys,
        settings: LimiterSettings,
        *,
        idle_ttl_s: float = LIMITER_IDLE_TTL_S,
    ) -> None:
        self._script = load_script(redis, "smsgw.limiter", "lease.lua")
        self._watch = primary_watch(redis)
        self._keys = keys
        self.settings = settings
        self.idle_ttl_ms = math.ceil(idle_ttl_s * 1000)
        self.lookahead_us = math.ceil(settings.lookahead_s * 1_000_000)
        limited = {name: rate for name, rate in rates.items() if rate is not None}
        replicas = settings.degraded_replicas
        self.degraded: MemoryLimiter | None = None
        if replicas > 0 and limited:
            self.degraded = MemoryLimiter(
                {name: rate / replicas for name, rate in limited.items()}, pace=settings.pace
            )
        self._queues = {name: _SlotQueue(self, name, rate) for name, rate in limited.items()}
        # Providers without a rate never touch Redis; a throttle answer pauses them locally.
        self._local_pauses = {name: 0.0 for name, rate in rates.items() if rate is None}
        self.closed = False
        self.stats = RedisLimiterStats()

    async def acquire(self, provider: str, units: int = 1) -> float:
        queue = self._queues.get(provider)
        if queue is not None:
            # Every send is at least one request: a count below 1 must not send for free.
            return await queue.acquire(max(1, units))
        while True:  # a pause may be extended while we sleep
            now = time.monotonic()
            wait = self._local_pauses.get(provider, 0.0) - now
            if wait <= 0:
                return now
            await asyncio.sleep(wait)

    async def pause(self, provider: str, seconds: float) -> None:
        queue = self._queues.get(provider)
        if queue is not None:
            await queue.pause(seconds)
        elif provider in self._local_pauses:
            until = time.monotonic() + seconds
            self._local_pauses[provider] = max(self._local_pauses[provider], until)

    async def close(self) -> None:
        self.closed = True
        for queue in self._queues.values():
            await queue.close()
        if self.degraded is not None:
            await self.degraded.close()

    async def call_script(self, key: str, args: list[Any]) -> tuple[int, int, int]:
        """Run lease.lua; (count, first slot - now, next free slot - now), µs of Redis time."""
        async with asyncio.timeout(CALL_TIMEOUT_S):
            reply = await self._script(keys=[key], args=args)
        count, first_us, next_us = (int(value) for value in reply)
        return count, first_us, next_us

    def key(self, provider: str) -> str:
        return self._keys.limiter(provider)

    def primary_changes(self) -> int:
        return 0 if self._watch is None else self._watch.primary_changes

    def failover_hold_s(self, now: float) -> float:
        """How long new slots must still keep clear of now, after a primary change."""
        if self._watch is None:
            return 0.0
        return self._watch.hold_left(FAILOVER_HOLD_S + self.settings.lookahead_s, now)


class _SlotQueue:
    """One limited provider in this replica: its leased slots and its waiting acquirers."""

    def __init__(self, owner: RedisLimiter, provider: str, rate: float) -> None:
        self._owner = owner
        self._provider = provider
        self._key = owner.key(provider)
        self._num, self._den = slot_interval(rate, owner.settings.pace)
        self._step_s = self._num / self._den / 1_000_000
        self._lookahead_s = owner.lookahead_us / 1_000_000
        self._lease_size = owner.settings.lease_size
        # Lanes of the shared grid (lease.lua): as many as still let one call lease a full
        # batch within the look-ahead, so interleaving costs no extra Redis calls.
        per_lookahead = self._lookahead_s / self._step_s
        self._lanes = max(1, min(MAX_LANES, math.floor(per_lookahead / self._lease_size)))
        self._slots: deque[float] = deque()  # local monotonic times, ascending
        # Acquirers in arrival order, with the units each needs; the head's slots so far.
        self._waiters: deque[tuple[asyncio.Future[float], int]] = deque()
        self._claimed: list[float] = []
        self._waiting_units = 0  # units of every waiter in the deque (cancelled ones too)
        self._paused_until = 0.0
        self._shared_pause_until = 0.0
        self._retry_at = 0.0  # no lease call before this
        self._backoff = Backoff(RETRY_BASE_S, RETRY_MAX_S)
        self._outage = Outage(
            _log, "limiter_redis_unavailable", "limiter_redis_recovered", duration_key="down_s"
        )
        self._last_local_grant: float | None = None  # degraded mode's last grant
        self._pump: asyncio.Task[None] | None = None
        self._lease: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._background: set[asyncio.Task[None]] = set()  # pauses being shared
        self._last_used = -math.inf  # when a slot was last handed out
        self._cold_until = 0.0
        self._cold_seq = 1  # spreads the slots skipped while cold evenly over leases
        self._demand_count = 0
        self._demand_since = time.monotonic()
        self._demand_rate = 0.0

    # -- acquire / pause ------------------------------------------------------------

    async def acquire(self, units: int) -> float:
        self._demand_count += units
        now = time.monotonic()
        if not self._waiters:
            self._drop_unusable(now)
            slots = self._slots
            if len(slots) >= units and slots[units - 1] <= now:  # all due (and none stale)
                self._maybe_lease(now)
                self._last_used = now
                if units == 1:
                    return slots.popleft()
                for _ in range(units - 1):
                    slots.popleft()
                return slots.popleft()
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.append((future, units))
        self._waiting_units += units
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._run(), name=f"smsgw-limiter-{self._provider}")
        else:
            self._wake()
        return await future

    async def pause(self, seconds: float) -> None:
        now = time.monotonic()
        until = now + seconds
        self._paused_until = max(self._paused_until, until)
        self._drop_unusable(now)
        if self._owner.degraded is not None:
            await self._owner.degraded.pause(self._provider, seconds)
        self._wake()
        if until <= self._shared_pause_until + PAUSE_COALESCE_S:
            return
        self._shared_pause_until = until
        _log.info("limiter_paused", provider=self._provider, seconds=round(seconds, 3))
        # In the background: the caller (a dispatcher worker) need not wait on Redis, which
        # may be the reason for the throttle in the first place.
        task = asyncio.create_task(self._share_pause(seconds))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _share_pause(self, seconds: float) -> None:
        try:
            await self._owner.call_script(self._key, self._args("pause", 0, _us(seconds)))
        except Exception as exc:
            # Other replicas will not back off, but this one does; the provider will
            # answer them with throttles too, and each pauses on its own.
            _log.warning("limiter_pause_not_shared", provider=self._provider, error=_describe(exc))

    async def close(self) -> None:
        await cancel_and_wait([self._pump, self._lease, *self._background])
        while self._waiters:
            self._pop_head().cancel()

    # -- handing out ----------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                if not await self._step():
                    return
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug here must not strand the waiters: log it and go on after a pause.
                _log.exception("limiter_bug", provider=self._provider)
                await asyncio.sleep(RETRY_MAX_S)

    async def _step(self) -> bool:
        """Hand out what is due, lease or wait once; False when nobody waits any more."""
        now = time.monotonic()
        self._drop_unusable(now)
        self._hand_out(now)
        if not self._has_waiters():
            return False
        self._maybe_lease(now)
        degraded = self._owner.degraded
        if not self._slots and self._outage.since is not None and degraded is not None:
            await self._grant_locally(degraded)
        else:
            await self._sleep_until(self._next_wake())
        return True

    def _hand_out(self, now: float) -> None:
        slots, waiters, claimed = self._slots, self._waiters, self._claimed
        if slots and waiters and slots[0] <= now:
            self._last_used = now
        while slots and waiters and slots[0] <= now:
            future, units = waiters[0]
            if future.done():  # skip acquirers cancelled while waiting
                self._pop_head()
            elif units == 1:  # the hot path: no group to collect
                self._pop_head()
                future.set_result(slots.popleft())
            else:
                # Claim only what is due: claims then stay in time order across groups
                # (the module docstring's bound rests on it).
                while len(claimed) < units and slots and slots[0] <= now:
                    claimed.append(slots.popleft())
                if len(claimed) < units:
                    return
                last = claimed[-1]
                self._pop_head()
                future.set_result(last)

    def _pop_head(self) -> asyncio.Future[float]:
        """Remove the head waiter; slots it claimed and did not get go unused."""
        future, units = self._waiters.popleft()
        self._waiting_units -= units
        if self._claimed:
            if future.done():  # cancelled with slots claimed (granted: set_result comes after)
                self._owner.stats.slots_dropped += len(self._claimed)
            self._claimed.clear()
        return future

    def _has_waiters(self) -> bool:
        while self._waiters and self._waiters[0][0].done():
            self._pop_head()
        return bool(self._waiters)

    def _drop_unusable(self, now: float) -> None:
        slots = self._slots
        oldest_usable = max(now - LATE_SLOT_S, self._paused_until)
        while slots and slots[0] < oldest_usable:
            slots.popleft()
            self._owner.stats.slots_dropped += 1

    async def _grant_locally(self, degraded: MemoryLimiter) -> None:
        units = self._waiters[0][1]  # _step checked the head is live
        if self._claimed:
            # Redis slots from before the outage: the local grant charges the whole group.
            self._owner.stats.slots_dropped += len(self._claimed)
            self._claimed.clear()
        grant = await degraded.acquire(self._provider, units)
        self._last_local_grant = self._last_used = grant
        if self._has_waiters() and self._waiters[0][1] <= units:
            # (the head may have been cancelled meanwhile: a bigger next one is not covered,
            # and waits for a grant of its own)
            self._pop_head().set_result(grant)

    def _next_wake(self) -> float:
        # The lease task wakes us when it ends; otherwise the next slot or the next retry.
        wake = self._slots[0] if self._slots else math.inf
        if self._lease is None:
            wake = min(wake, max(self._retry_at, self._paused_until - self._lookahead_s))
        return wake

    async def _sleep_until(self, when: float) -> None:
        loop = asyncio.get_running_loop()
        wakeup: asyncio.Future[None] = loop.create_future()
        self._wakeup = wakeup
        handle = None
        if when < math.inf:
            # Whole milliseconds, rounded up: uvloop rounds timers to the nearest ms, so a
            # sub-ms sleep would wake before the slot and spin. Late by < 1 ms is harmless.
            delay = math.ceil(max(when - time.monotonic(), 0.0) * 1000) / 1000
            handle = loop.call_later(delay, _resolve, wakeup)
        try:
            await wakeup
        finally:
            self._wakeup = None
            if handle is not None:
                handle.cancel()

    def _wake(self) -> None:
        if self._wakeup is not None:
            _resolve(self._wakeup)

    # -- leasing --------------------------------------------------------------------

    def _maybe_lease(self, now: float) -> None:
        if self._lease is not None or self._owner.closed:
            return
        if now < max(self._retry_at, self._paused_until - self._lookahead_s):
            return
        # Slots wanted: one per unit waiting, or the demand over the look-ahead if that is
        # more, less those held (the head's claimed slots count towards its units).
        held = len(self._slots) + len(self._claimed)
        need = max(self._waiting_units, self._expected_demand(now)) - held
        want = min(self._lease_size, need)
        # A small top-up costs a whole Redis call: wait for a bigger one unless the slots
        # held are about to run out.
        small = want < self._lease_size // 2
        lasting = bool(self._slots) and self._slots[-1] >= now + self._lookahead_s / 4
        if want > 0 and not (small and lasting):
            self._lease = asyncio.create_task(self._lease_slots(want))

    def _expected_demand(self, now: float) -> int:
        """Units expected to be acquired within the look-ahead, so a steady trickle of
        single acquires still leases in batches."""
        elapsed = now - self._demand_since
        if elapsed >= _DEMAND_WINDOW_S:
            self._demand_rate = self._demand_count / elapsed
            self._demand_count = 0
            self._demand_since = now
        return math.ceil(self._demand_rate * self._lookahead_s)

    async def _lease_slots(self, want: int) -> None:
        owner = self._owner
        try:
            sent_at = time.monotonic()
            owner.stats.lease_calls += 1
            changes = owner.primary_changes()
            try:
                reply = await owner.call_script(
                    self._key, self._args("lease", want, self._hold_us(sent_at))
                )
            except Exception as exc:  # fail closed whatever went wrong
                if self._failed(exc) and owner.degraded is not None:
                    # Every slot Redis handed out (to any replica) lies before the failure
                    # plus the look-ahead; local grants must keep 1 s clear of them too.
                    hold = DEGRADED_HOLD_S + self._lookahead_s
                    await owner.degraded.pause(self._provider, hold)
                return
            if owner.primary_changes() != changes:
                # Found the new primary on the way: these slots were leased without the
                # hold. Unused, they cost nothing; the next call (at once) has it.
                owner.stats.slots_dropped += reply[0]
                return
            self._apply_lease(time.monotonic(), want, *reply)
        finally:
            self._lease = None
            self._wake()

    def _args(self, op: str, want: int, extra_us: int) -> list[Any]:
        """lease.lua's ARGV, in its order."""
        owner = self._owner
        spacing = [self._num, self._den]
        return [op, *spacing, want, owner.lookahead_us, owner.idle_ttl_ms, extra_us, self._lanes]

    def _apply_lease(
        self, received_at: float, want: int, count: int, first_us: int, next_us: int
    ) -> None:
        self._outage.ok(provider=self._provider)
        self._backoff.reset()
        self._last_local_grant = None
        # Redis's `now` happened before `received_at`: mapping it there errs late (by far
        # more than the < 1 µs by which i * stride can differ from the grid's rounding).
        first = received_at + first_us / 1_000_000
        stride = self._step_s * self._lanes
        slots = [first + i * stride for i in range(count)]
        if received_at - self._last_used > COLD_AFTER_S:
            self._cold_until = received_at + COLD_AFTER_S
        if received_at < self._cold_until:
            kept = [t for i, t in enumerate(slots, self._cold_seq) if i % _COLD_SKIP_EVERY]
            self._cold_seq += count
            self._owner.stats.slots_dropped += count - len(kept)
            slots = kept
        held = len(self._slots)
        self._slots.extend(slots)
        if slots and held and self._slots[held - 1] > slots[0]:
            self._slots = deque(sorted(self._slots))  # slots of another lane interleave
        self._owner.stats.slots_leased += count
        if count < want:
            # Leased to the look-ahead (other replicas lease too). Ask again when a full
            # batch has entered it, so each call is worth its round trip, but while the
            # first free slot is still a quarter look-ahead away, so none passes unleased;
            # the less we got, the earlier, so the replica that lost a race wins the next
            # (otherwise whoever called first keeps calling first and the others starve).
            free = received_at + next_us / 1_000_000
            full = free - self._lookahead_s + (self._lease_size - 1) * stride
            latest = free - self._lookahead_s / 4 * (2 - count / want)
            self._retry_at = min(full, latest)
        else:
            self._retry_at = received_at

    def _hold_us(self, now: float) -> int:
        """After degraded mode: keep Redis slots 1 s clear of our last local grant; after a
        primary change, clear of every slot the old primary may have leased."""
        hold = self._owner.failover_hold_s(now)
        if self._last_local_grant is not None:
            hold = max(hold, DEGRADED_HOLD_S - (now - self._last_local_grant))
        return max(0, _us(hold))

    def _failed(self, exc: BaseException) -> bool:
        """Note a failed call; True if Redis was reachable until now."""
        self._retry_at = time.monotonic() + self._backoff.next()
        return self._outage.failed(
            provider=self._provider,
            error=_describe(exc),
            mode="degraded" if self._owner.degraded else "fail_closed",
            slots_left=len(self._slots),
            exc_info=not isinstance(exc, _EXPECTED_ERRORS),
        )


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _us(seconds: float) -> int:
    return math.ceil(seconds * 1_000_000)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
