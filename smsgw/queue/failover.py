"""What one consumer of the Redis queue does about a primary change (a Sentinel failover).

Replication is asynchronous: the promoted replica may lack the last reads, acknowledgements
and done markers of the old primary, so an entry already sent, or being sent, by one
consumer can be handed out again, to it or to another. So each consumer

- remembers the done markers of what it finished in the last MEMORY_S;
- when it sees the primary change, writes those again on the new primary, and a "held"
  marker (its name) for each entry it holds;
- for SUSPECT_S after, checks every entry it is handed against both markers: done, the copy
  is skipped and acknowledged; held by another consumer, it is only dropped here (left
  pending, so if that consumer dies unsent the entry is claimed after the visibility
  timeout, and if it sent it, its done marker makes that claim skip it);
- and hands nothing out for GRACE_S after the change, so the other consumers have seen it
  too and written their markers (their probes ask Sentinel every second; sends are held
  for about as long anyway by the limiter, which keeps clear of the old primary's slots).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Literal

import structlog
from redis.asyncio import Redis

from smsgw.queue._redis_support import PRIORITIES, Held, text
from smsgw.redis_connect import PROBE_INTERVAL_S, PrimaryWatch, primary_watch
from smsgw.redis_keys import DEDUPE_TTL_S, RedisKeys
from smsgw.redis_scripts import REDIS_FAILURES
from smsgw.retry import Backoff

__all__ = ["FailoverGuard"]

_log = structlog.get_logger("smsgw.queue")

# Finished entries remembered, by when they were settled: far more than any replication lag.
MEMORY_S = 10.0
# Entries handed out this long after a change are checked against the markers. Copies come
# back at once (reads the new primary never saw are read again first) or after a visibility
# timeout through a claim, which checks done markers anyway.
SUSPECT_S = 10.0
GRACE_S = PROBE_INTERVAL_S + 0.5
# Markers written per round trip.
_CHUNK = 1000

Verdict = Literal["done", "elsewhere", "ours"]


class FailoverGuard:
    """See the module docstring. None of it runs without Sentinel (`for_client` is None)."""

    def __init__(
        self, redis: Redis, watch: PrimaryWatch, keys: RedisKeys, consumer: str, held_ttl_s: float
    ) -> None:
        self._redis = redis
        self._watch = watch
        self._keys = keys
        self._consumer = consumer
        self._held_ttl_s = max(1, round(held_ttl_s))
        self._finished: deque[tuple[float, str]] = deque()
        self._changed = asyncio.Event()
        self._current = asyncio.Event()  # our markers are on the latest primary
        self._current.set()
        watch.listeners.append(self._on_change)
        self.republished = 0  # markers written again after changes

    @classmethod
    def for_client(
        cls, redis: Redis, keys: RedisKeys, consumer: str, held_ttl_s: float
    ) -> FailoverGuard | None:
        watch = primary_watch(redis)
        return None if watch is None else cls(redis, watch, keys, consumer, held_ttl_s)

    def finished(self, markers: Iterable[str]) -> None:
        """Done markers of entries just settled (acknowledged, or sent)."""
        now = time.monotonic()
        remembered = self._finished
        remembered.extend((now, marker) for marker in markers)
        while remembered and remembered[0][0] < now - MEMORY_S:
            remembered.popleft()

    def close(self) -> None:
        if self._on_change in self._watch.listeners:
            self._watch.listeners.remove(self._on_change)

    async def run(self, holding: Callable[[], Iterable[Held]]) -> None:
        """At each primary change, write our markers on the new primary (until it works)."""
        backoff = Backoff(0.05, 0.5)
        while True:
            await self._changed.wait()
            self._changed.clear()
            while True:
                try:
                    await self._republish(holding())
                    break
                except REDIS_FAILURES as exc:
                    _log.warning("queue_markers_not_republished", error=repr(exc))
                except Exception:
                    _log.exception("queue_failover_bug")  # never end the task: log, retry
                await asyncio.sleep(backoff.next())
            backoff.reset()
            if not self._changed.is_set():  # else another change came: write them again
                self._current.set()

    def suspect(self, now: float) -> bool:
        return now < self._watch.changed_at + SUSPECT_S

    def hand_out_wait(self, now: float) -> float:
        return max(0.0, self._watch.changed_at + GRACE_S - now)

    async def verdict(self, entry: Held) -> Verdict:
        """Whether another copy of `entry` was finished, is held elsewhere, or neither.

        Our own markers first (a copy we finished before the change would read as "ours"),
        for at most GRACE_S: Redis that cannot take them cannot answer this either."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(GRACE_S):
                await self._current.wait()
        done_key = self._keys.done_marker(PRIORITIES[entry.index - 1], entry.entry_id)
        done, holder = await self._redis.mget(done_key, self._held_marker(entry))
        if done is not None:
            return "done"
        if holder is not None and text(holder) != self._consumer:
            return "elsewhere"
        return "ours"

    async def _republish(self, holding: Iterable[Held]) -> None:
        done = [marker for _, marker in self._finished]
        held = [self._held_marker(entry) for entry in holding if not entry.lost]
        for start in range(0, max(len(done), len(held)), _CHUNK):
            async with self._redis.pipeline(transaction=False) as pipe:
                for marker in done[start : start + _CHUNK]:
                    pipe.set(marker, b"1", ex=DEDUPE_TTL_S)
                for marker in held[start : start + _CHUNK]:
                    pipe.set(marker, self._consumer, ex=self._held_ttl_s)
                await pipe.execute()
        self.republished += len(done) + len(held)
        _log.info("queue_markers_republished", done=len(done), held=len(held))

    def _on_change(self) -> None:
        self._current.clear()
        self._changed.set()

    def _held_marker(self, entry: Held) -> str:
        return self._keys.held_marker(PRIORITIES[entry.index - 1], entry.entry_id)
