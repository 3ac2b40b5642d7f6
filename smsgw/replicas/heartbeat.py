"""Replica heartbeats in Redis: one sorted set per role, scored by each replica's last beat.

A replica beats every BEAT_INTERVAL_S and counts as alive for BEAT_TTL_S after a beat, on
Redis' clock. `smsgw supervise` restarts a worker whose beat stopped; /metrics shows how
many replicas of each role are alive.
"""

from __future__ import annotations

import asyncio
import contextlib
from importlib import resources

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from smsgw.redis_keys import RedisKeys

__all__ = ["BEAT_INTERVAL_S", "BEAT_TTL_S", "Heartbeat", "beats"]

_log = structlog.get_logger("smsgw")

BEAT_INTERVAL_S = 2.0
BEAT_TTL_S = 10.0
_BEAT_LUA = resources.files(__package__).joinpath("beat.lua").read_text(encoding="utf-8")


class Heartbeat:
    def __init__(self, redis: Redis, keys: RedisKeys, role: str, replica: str) -> None:
        self._redis = redis
        self._key = keys.replicas(role)
        self._script = redis.register_script(_BEAT_LUA)
        self.replica = replica
        # Replicas of this role alive at the last beat (this one included).
        self.alive = 1
        self._task: asyncio.Task[None] | None = None

    async def beat(self) -> None:
        self.alive = int(await self._script(keys=[self._key], args=[self.replica, BEAT_TTL_S]))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="smsgw-heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # Leave the roll at once: a stopped replica is not alive for another BEAT_TTL_S.
        with contextlib.suppress(RedisError, OSError):
            await self._redis.zrem(self._key, self.replica)

    async def _run(self) -> None:
        while True:
            try:
                await self.beat()
            except (RedisError, OSError) as exc:
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
