"""Which delivery receipts were recorded already: a repeated one must change nothing.

In Redis when configured (every replica sees every receipt), else in this process.
"""

from __future__ import annotations

import time
from typing import Protocol

from redis.asyncio import Redis

from smsgw.redis_keys import RECEIPT_TTL_S, RedisKeys

__all__ = ["MemorySeenReceipts", "RedisSeenReceipts", "SeenReceipts"]


class SeenReceipts(Protocol):
    async def first_time(self, message_id: str, status: str) -> bool:
        """True once per (message, status) within RECEIPT_TTL_S; False for repeats."""


class MemorySeenReceipts:
    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], float] = {}
        self._next_sweep = 0.0

    async def first_time(self, message_id: str, status: str) -> bool:
        now = time.monotonic()
        if now >= self._next_sweep:
            # Receipts come at most a few per message: an occasional sweep bounds memory.
            self._seen = {k: t for k, t in self._seen.items() if t > now}
            self._next_sweep = now + 60.0
        key = (message_id, status)
        expires = self._seen.get(key)
        if expires is not None and expires > now:
            return False
        self._seen[key] = now + RECEIPT_TTL_S
        return True


class RedisSeenReceipts:
    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self._redis = redis
        self._keys = keys

    async def first_time(self, message_id: str, status: str) -> bool:
        key = self._keys.receipt(message_id, status)
        return bool(await self._redis.set(key, b"1", nx=True, ex=RECEIPT_TTL_S))
