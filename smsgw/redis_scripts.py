"""Lua scripts kept as .lua files beside the code that calls them, loaded in one way."""

from __future__ import annotations

import functools
from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

__all__ = ["REDIS_FAILURES", "load_script"]

# What a call to an unreachable or failing Redis raises (timeouts and resets are OSErrors).
REDIS_FAILURES = (RedisError, OSError)


def load_script(redis: Redis, package: str, path: str) -> AsyncScript:
    """The script `path` (e.g. "lua/claim.lua") of `package`, registered on `redis`.

    register_script runs EVALSHA and re-sends the source after NOSCRIPT (a Redis restart, a
    failover or SCRIPT FLUSH): never cache a SHA ourselves.
    """
    return redis.register_script(_source(package, path))


@functools.cache
def _source(package: str, path: str) -> str:
    return resources.files(package).joinpath(path).read_text(encoding="utf-8")
