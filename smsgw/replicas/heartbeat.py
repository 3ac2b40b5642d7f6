"""Replica heartbeats in Redis: one sorted set per role, scored by each replica's last beat.

A replica beats every BEAT_INTERVAL_S and counts as alive for BEAT_TTL_S after a beat, on
Redis' clock. `smsgw supervise` restarts a worker whose beat stopped; /metrics shows how
many replicas of each role are alive.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from redis.asyncio import Redis

from smsgw._aio import cancel_and_wait
from smsgw.redis_keys import RedisKeys
from smsgw.redis_scripts import REDIS_FAILURES, load_script

__all__ = ["BEAT_INTERVAL_S", "BEAT_TTL_S", "Heartbeat", "alive", "beats"]

_log = structlog.get_logger("smsgw")

BEAT_INTERVAL_S = 2.0
BEAT_TTL_S = 10.0


class Heartbeat:
    def __init__(self, redis: Redis, keys: RedisKeys, role: str, replica: str) -> None:
        self._redis = redis
        self._key = keys.replicas(role)
        self._script = load_script(redis, "smsgw.replicas", "beat.lua")
        self.replica = replica
        # Replicas of this role alive at the last beat (this one included).
        self.alive = 1
        self._task: asyncio.Task[None] | None = None

    async def beat(self) -> None:
        self.alive = int(await self._script(keys=[self._key], args=[self.replica, BEAT_TTL_S]))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="smsgw-heartbeat")

    async def stop(self) -> None:
        await cancel_and_wait([self._task])
        # Leave the roll at once: a stopped replica is not alive for another BEAT_TTL_S.
        with contextlib.suppress(*REDIS_FAILURES):
            await self._redis.zrem(self._key, self.replica)

    async def _run(self) -> None:
        while True:
            try:
                await self.beat()
            except REDIS_FAILURES as exc:
                _log.warning("heartbeat_failed", detail=str(exc))
            await asyncio.sleep(BEAT_INTERVAL_S)


async def beats(redis: Redis, keys: RedisKeys, role: str) -> dict[str, float]:
    """Each replica of `role` on the roll and its last beat (epoch seconds, Redis' clock)."""
    members = await redis.zrange(keys.replicas(role), 0, -1, withscores=True)
    roll: dict[str, float] = {}
    for member in members:
        name, score = member[0], member[1]
        roll[name.decode() if isinstance(name, bytes) else str(name)] = float(score)
    return roll


async def alive(redis: Redis, keys: RedisKeys, role: str) -> int:
    """Replicas of `role` that beat within BEAT_TTL_S, judged on Redis' clock like the beats
    themselves: a reader whose own clock is off counts the same as every other."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.time()
        pipe.zrange(keys.replicas(role), 0, -1, withscores=True)
        (seconds, micros), members = await pipe.execute()
    fresh = int(seconds) + int(micros) / 1_000_000 - BEAT_TTL_S
    return sum(1 for member in members if float(member[1]) >= fresh)
