"""In-process provider limiter: exact for one process, smooth under load.

A grant is worth `units` of the rate (a long SMS's segments: providers pace and bill
those). Two rules together, per provider:
- a sliding log of the last floor(`pace` x rate) units granted, one entry per unit: no
  1-second window ever holds more units than that, whatever the event loop's lateness (the
  hard guarantee), and the rest of the rate absorbs jitter between our grants and the
  provider's arrival clock;
- GCRA pacing at `pace` x rate with a few milliseconds of burst, a k-unit grant moving the
  schedule k intervals on: grants are spread evenly instead of `rate` at once followed by a
  second of silence, so jitter between us and the provider cannot push two bursts into one
  of its windows.

Waiters are served in arrival order: a big grant at the head waits for room and nothing
passes it, so long messages are never starved by a stream of short ones.

The provider counts arrivals, not grants. After an idle second the first sends also open
new connections, so they arrive late and bunch with the next ones (measured: ~20 ms, which
put 5105 arrivals into one second at rate 5000). A cold pacer therefore paces at
`COLD_PACE` for its first second, leaving room for that delay.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Mapping
from itertools import repeat
from types import MappingProxyType

__all__ = ["MemoryLimiter"]

# Pace a little under the rate: the sliding log then rarely binds, and the provider's view
# of our arrivals has room for network jitter.
DEFAULT_PACE = 0.985  # as LimiterSettings.pace, which says why
DEFAULT_BURST_S = 0.005
COLD_PACE = 0.95
_WINDOW_S = 1.0
_NO_COUNTERS: Mapping[str, int] = MappingProxyType({})


class _Pacer:
    def __init__(self, rate: float | None, pace: float, burst_s: float) -> None:
        # rate None: no pacing, but a provider's throttle answer still pauses it.
        self._interval = 0.0 if rate is None else 1.0 / (rate * pace)
        self._cold_interval = 0.0 if rate is None else 1.0 / (rate * min(pace, COLD_PACE))
        self._cold_until = 0.0
        self._last_grant = float("-inf")
        self._tolerance = burst_s
        # The hard cap is also at `pace`: what is left of the rate absorbs the jitter between
        # our grants and the provider's clock. One entry per unit, so the full log is exactly
        # what the check needs (the newest `maxlen` units), and a 1-unit grant stays one
        # comparison and one append.
        self._log: deque[float] = deque(
            maxlen=None if rate is None else max(1, math.floor(rate * min(pace, 1.0)))
        )
        self._tat = 0.0  # GCRA theoretical arrival time
        self._paused_until = 0.0
        self._waiters: deque[tuple[asyncio.Future[float], int]] = deque()
        self._task: asyncio.Task[None] | None = None

    def try_grant(self, now: float, units: int = 1) -> bool:
        if now < self._paused_until or self._tat - now > self._tolerance:
            return False
        log = self._log
        capacity = log.maxlen
        if capacity is not None:
            # More units than a whole window holds could never pass the check, and the
            # waiters behind it (served in order) would stall for good. Such a message
            # cannot be sent within the rate at all; the closest we can come is a whole
            # window to itself. The GCRA below still charges every unit, so the pacing
            # that follows it keeps the long-run rate.
            charge = min(units, capacity)
            # Room for `charge` more units: at most capacity - charge of the newest entries
            # may lie in the window, i.e. the one just before them must be outside it.
            before = len(log) - (capacity - charge) - 1
            if before >= 0 and log[before] > now - _WINDOW_S:
                return False
            if charge == 1:
                log.append(now)
            else:
                log.extend(repeat(now, charge))
        if now - self._last_grant > _WINDOW_S:
            self._cold_until = now + _WINDOW_S
        self._last_grant = now
        interval = self._cold_interval if now < self._cold_until else self._interval
        self._tat = max(self._tat, now) + interval * units
        return True

    def next_chance(self, now: float, units: int = 1) -> float:
        """Seconds until try_grant(units) can succeed again."""
        wait = max(self._paused_until - now, self._tat - self._tolerance - now)
        log = self._log
        capacity = log.maxlen
        if capacity is not None:
            before = len(log) - (capacity - min(units, capacity)) - 1
            if before >= 0:
                wait = max(wait, log[before] + _WINDOW_S - now)
        return max(wait, 0.0)

    async def acquire(self, units: int = 1) -> float:
        now = time.monotonic()
        if not self._waiters and self.try_grant(now, units):
            return now
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.append((future, units))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._release_loop())
        return await future

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    async def _release_loop(self) -> None:
        waiters = self._waiters
        while waiters:
            now = time.monotonic()
            while waiters:
                future, units = waiters[0]
                if future.done():  # cancelled while waiting
                    waiters.popleft()
                    continue
                # In order: a head that does not fit yet waits, and nothing passes it.
                if not self.try_grant(now, units):
                    break
                waiters.popleft()
                future.set_result(now)
            if waiters:  # the head is live: sleep until it can fit
                await asyncio.sleep(self.next_chance(time.monotonic(), waiters[0][1]))

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        while self._waiters:
            self._waiters.popleft()[0].cancel()


class MemoryLimiter:
    """Paces each provider to its configured rate; rate None means only pauses apply."""

    def __init__(
        self,
        rates: Mapping[str, float | None],
        *,
        pace: float = DEFAULT_PACE,
        burst_s: float = DEFAULT_BURST_S,
    ) -> None:
        self._pacers = {name: _Pacer(rate, pace, burst_s) for name, rate in rates.items()}

    @property
    def stats(self) -> Mapping[str, int]:
        return _NO_COUNTERS  # nothing shared to count: no calls to make, no leases

    async def acquire(self, provider: str, units: int = 1) -> float:
        pacer = self._pacers.get(provider)
        if pacer is None:
            return time.monotonic()
        # Every send is at least one request: a count below 1 (a caller's bug) must not
        # send for free.
        return await pacer.acquire(max(1, units))

    async def pause(self, provider: str, seconds: float) -> None:
        pacer = self._pacers.get(provider)
        if pacer is not None:
            pacer.pause(seconds)

    async def close(self) -> None:
        for pacer in self._pacers.values():
            pacer.close()
