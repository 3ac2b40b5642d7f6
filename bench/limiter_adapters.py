"""Other libraries' Redis rate limiters wrapped as ProviderLimiters, for bench/throttle.py.

Neither library waits for a permit: both answer "no" and leave the waiting to the caller.
The adapters retry after RETRY_SLEEP_S, the simplest loop a user of either would write.
A permit is granted "now", so the dispatcher never finds it late.

- asyncio-redis-rate-limit: fixed 1 s window (INCR + EXPIRE NX in a MULTI/EXEC pipeline),
  one permit per call; rejected calls still count.
- limits: moving window (a Lua script over a Redis LIST of timestamps, stamped with each
  client's own clock), one permit per `hit()`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from asyncio_redis_rate_limit import RateLimiter, RateLimitError, RateSpec
from limits import RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import Redis

__all__ = ["FixedWindowLimiter", "MovingWindowLimiter"]

# Pause after a refusal before asking again.
RETRY_SLEEP_S = 0.01


class _LocalPauses:
    """pause() for limiters without a shared pause: this process backs off alone."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    async def wait(self, provider: str) -> None:
        while True:
            wait = self._until.get(provider, 0.0) - time.monotonic()
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    async def pause(self, provider: str, seconds: float) -> None:
        until = time.monotonic() + seconds
        self._until[provider] = max(self._until.get(provider, 0.0), until)


class FixedWindowLimiter(_LocalPauses):
    """asyncio-redis-rate-limit's `RateLimiter` with `RateSpec(rate, 1)`."""

    def __init__(self, redis: Redis, rates: Mapping[str, float | None]) -> None:
        super().__init__()
        self._redis = redis
        self._specs = {
            name: RateSpec(requests=int(rate), seconds=1)
            for name, rate in rates.items()
            if rate is not None
        }

    async def acquire(self, provider: str) -> float:
        spec = self._specs.get(provider)
        while True:
            await self.wait(provider)
            if spec is None:
                return time.monotonic()
            try:
                # A new RateLimiter per call, as the library's own decorator does: one
                # instance serialises its calls behind an asyncio.Lock.
                async with RateLimiter(provider, spec, self._redis, cache_prefix="bench:arrl:"):
                    return time.monotonic()
            except RateLimitError:
                await asyncio.sleep(RETRY_SLEEP_S)

    async def close(self) -> None:
        pass


class MovingWindowLimiter(_LocalPauses):
    """The `limits` package's moving window on its async Redis storage (redis-py client)."""

    def __init__(
        self, url: str, rates: Mapping[str, float | None], *, max_connections: int
    ) -> None:
        super().__init__()
        self._storage = RedisStorage(
            url.replace("redis://", "async+redis://", 1),
            implementation="redispy",
            key_prefix="bench:limits",
            max_connections=max_connections,
        )
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._items = {
            name: RateLimitItemPerSecond(int(rate), 1)
            for name, rate in rates.items()
            if rate is not None
        }

    async def acquire(self, provider: str) -> float:
        item = self._items.get(provider)
        while True:
            await self.wait(provider)
            if item is None or await self._limiter.hit(item, provider):
                return time.monotonic()
            await asyncio.sleep(RETRY_SLEEP_S)

    async def close(self) -> None:
        pass
