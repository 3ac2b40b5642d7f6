"""Lua scripts kept as .lua files beside the code that calls them, loaded in one way."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

__all__ = ["REDIS_FAILURES", "load_script"]

# What a call to an unreachable or failing Redis raises (timeouts and resets are OSErrors).
REDIS_FAILURES = (RedisError, OSError)


def load_script(
    redis: Redis, package: str, path: str, *, helpers: Sequence[str] = ()
) -> AsyncScript:
    """The script `path` (e.g. "lua/claim.lua") of `package`, registered on `redis`.

    `helpers`: files of the same package defining `local function`s that several scripts
    share, put before the script's own source (a Redis script cannot load another file).

    register_script runs EVALSHA and re-sends the source after NOSCRIPT (a Redis restart, a
    failover or SCRIPT FLUSH): never cache a SHA ourselves.
    """
    parts = [_source(package, helper) for helper in (*helpers, path)]
    return redis.register_script("\n".join(parts))


@functools.cache
def _source(package: str, path: str) -> str:
    return resources.files(package).joinpath(path).read_text(encoding="utf-8")
