"""A circuit breaker per provider: pure state, an injectable clock, no I/O.

closed ──(N consecutive failures, or error rate > R over the window with >= M calls)──▶ open
open ──(cooldown elapsed, next allow())──▶ half_open: one probe at a time
half_open ──probe succeeds──▶ closed      half_open ──probe fails──▶ open (cooldown again)

The caller reports each call it was allowed to make: record_success(), record_failure(), or
release() for a call that ended with no verdict. Throttling is such a call: the provider is
healthy and only asked us to slow down, so it must never open the breaker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["BreakerState", "CircuitBreaker", "Transition"]

BreakerState = Literal["closed", "open", "half_open"]

# The error-rate window slides in steps of window_s / _BUCKETS: counting per call would keep
# every call of the window in memory (300 000 at 5000 SMS/s over 60 s).
_BUCKETS: Final = 20


@dataclass(frozen=True, slots=True)
class Transition:
    """A state change, for the caller to log and count."""

    old: BreakerState
    new: BreakerState
    reason: str  # consecutive_failures | error_rate | cooldown_elapsed | probe_ok | probe_failed


class CircuitBreaker:
    """Decides whether a provider gets traffic. Not thread-safe; one event loop owns it."""

    def __init__(
        self,
        failure_threshold: int,
        error_rate: float,
        window_s: float,
        min_calls: int,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        on_transition: Callable[[Transition], None] | None = None,
        probe_timeout_s: float | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if not 0 < error_rate <= 1:
            raise ValueError("error_rate must be in (0, 1]")
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        if min_calls < 1:
            raise ValueError("min_calls must be >= 1")
        if cooldown_s < 0:
            raise ValueError("cooldown_s must be >= 0")
        self.failure_threshold = failure_threshold
        self.error_rate = error_rate
        self.window_s = window_s
        self.min_calls = min_calls
        self.cooldown_s = cooldown_s
        # A probe that never reports (its task was cancelled, or the caller forgot) must not
        # keep the provider out of rotation for good: after this long another probe may go.
        self.probe_timeout_s = cooldown_s if probe_timeout_s is None else probe_timeout_s
        self._clock = clock
        self._on_transition = on_transition
        self._state: BreakerState = "closed"
        self._consecutive = 0
        self._opened_at = 0.0
        self._probe_started: float | None = None
        self._bucket_s = window_s / _BUCKETS
        # Ring of [bucket number, calls, failures]; a slot is stale when its number is old.
        self._buckets = [[-1, 0, 0] for _ in range(_BUCKETS)]

    @property
    def state(self) -> BreakerState:
        return self._state

    def would_allow(self) -> bool:
        """What allow() would answer, without taking the probe slot.

        For routing: filter candidates with this, then call allow() on the one chosen, so a
        provider not picked does not use up its half-open probe.
        """
        if self._state == "closed":
            return True
        now = self._clock()
        if self._state == "open":
            return now - self._opened_at >= self.cooldown_s
        return self._probe_free(now)

    def allow(self) -> bool:
        """Whether a call may go to the provider now; a True in half-open is the probe."""
        if self._state == "closed":
            return True
        now = self._clock()
        if self._state == "open":
            if now - self._opened_at < self.cooldown_s:
                return False
            self._move("half_open", "cooldown_elapsed")
        if not self._probe_free(now):
            return False
        self._probe_started = now
        return True

    def record_success(self) -> Transition | None:
        if self._state == "half_open":
            return self._close()
        if self._state == "closed":
            self._consecutive = 0
            self._add(failed=False)
        # Open: a late answer to a call made before opening proves little either way.
        return None

    def record_failure(self) -> Transition | None:
        if self._state == "half_open":
            return self._open("probe_failed")
        if self._state == "open":
            return None
        self._consecutive += 1
        newest = self._add(failed=True)
        if self._consecutive >= self.failure_threshold:
            return self._open("consecutive_failures")
        # Summed on failures only: successes cannot raise the rate.
        calls, failures = self._totals(newest)
        if calls >= self.min_calls and failures / calls > self.error_rate:
            return self._open("error_rate")
        return None

    def release(self) -> None:
        """An allowed call ended with no verdict (throttled, cancelled): free the probe."""
        if self._state == "half_open":
            self._probe_started = None

    # -- internals ---------------------------------------------------------------------

    def _probe_free(self, now: float) -> bool:
        started = self._probe_started
        return started is None or now - started >= self.probe_timeout_s

    def _add(self, *, failed: bool) -> int:
        """Count one call in the current bucket; return the bucket's number."""
        number = int(self._clock() // self._bucket_s)
        bucket = self._buckets[number % _BUCKETS]
        if bucket[0] != number:
            bucket[0], bucket[1], bucket[2] = number, 0, 0
        bucket[1] += 1
        if failed:
            bucket[2] += 1
        return number

    def _totals(self, newest: int) -> tuple[int, int]:
        """(calls, failures) over the buckets of the window ending with `newest`."""
        oldest = newest - _BUCKETS + 1
        calls = failures = 0
        for number, bucket_calls, bucket_failures in self._buckets:
            if number >= oldest:
                calls += bucket_calls
                failures += bucket_failures
        return calls, failures

    def _open(self, reason: str) -> Transition:
        self._opened_at = self._clock()
        self._probe_started = None
        return self._move("open", reason)

    def _close(self) -> Transition:
        # A fresh start: failures from before the outage must not reopen it at the next error.
        self._consecutive = 0
        self._probe_started = None
        for bucket in self._buckets:
            bucket[0], bucket[1], bucket[2] = -1, 0, 0
        return self._move("closed", "probe_ok")

    def _move(self, new: BreakerState, reason: str) -> Transition:
        transition = Transition(self._state, new, reason)
        self._state = new
        if self._on_transition is not None:
            self._on_transition(transition)
        return transition
