"""Per-client API request quotas (requests per second and per minute).

With Redis, every replica counts together through asyncio-redis-rate-limit: its fixed
windows suit request quotas (a client may see up to twice its quota across a window
boundary, which is fine for fairness between internal apps; it is not fine for provider
limits, which have their own limiter). Without Redis, the same fixed windows per process.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from asyncio_redis_rate_limit import RateLimiter, RateLimitError, RateSpec
from redis.asyncio import Redis

from smsgw.api.problems import Problem
from smsgw.redis_keys import RedisKeys
from smsgw.settings import ClientSettings

__all__ = ["MemoryQuotaCounter", "Quotas", "RedisQuotaCounter"]


class QuotaCounter(Protocol):
    async def hit(self, client: str, spec: RateSpec) -> bool:
        """Count one request; False when it goes over the quota."""


class Quotas:
    def __init__(self, clients: Sequence[ClientSettings], counter: QuotaCounter) -> None:
        self._counter = counter
        self._specs: dict[str, tuple[RateSpec, ...]] = {}
        for client in clients:
            specs = []
            if client.requests_per_second is not None:
                specs.append(RateSpec(client.requests_per_second, 1))
            if client.requests_per_minute is not None:
                specs.append(RateSpec(client.requests_per_minute, 60))
            if specs:
                self._specs[client.name] = tuple(specs)

    async def check(self, client: str) -> None:
        """Count a request of `client`; raise a 429 problem when a quota is exceeded."""
        for spec in self._specs.get(client, ()):
            if not await self._counter.hit(client, spec):
                raise Problem(
                    429,
                    "quota-exceeded",
                    "Quota exceeded",
                    f"this client may send {spec.requests} requests per {spec.seconds} s",
                    headers={"Retry-After": str(spec.seconds)},
                )


class MemoryQuotaCounter:
    def __init__(self) -> None:
        self._windows: dict[tuple[str, int], tuple[int, int]] = {}  # -> (window start, count)

    async def hit(self, client: str, spec: RateSpec) -> bool:
        window = int(time.time()) // spec.seconds
        slot = (client, spec.seconds)
        start, count = self._windows.get(slot, (window, 0))
        count = count + 1 if start == window else 1
        self._windows[slot] = (window, count)
        return count <= spec.requests


class RedisQuotaCounter:
    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self._redis = redis
        self._prefix = keys.quota_prefix
        self._limiters: dict[tuple[str, RateSpec], RateLimiter] = {}

    async def hit(self, client: str, spec: RateSpec) -> bool:
        limiter = self._limiters.get((client, spec))
        if limiter is None:
            limiter = RateLimiter(client, spec, self._redis, cache_prefix=self._prefix)
            self._limiters[(client, spec)] = limiter
        try:
            async with limiter:
                return True
        except RateLimitError:
            return False
