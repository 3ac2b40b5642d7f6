"""How every part reaches Redis: one server by URL, or the primary that Sentinel names.

With Sentinel the pool asks the sentinels for the primary before each new connection (so a
retry after a lost connection goes to whoever is primary now), closes idle connections to
a primary that stepped down, and a probe asks again every PROBE_INTERVAL_S, so even a client
whose connections never failed moves over. Each change is counted in the client's
`PrimaryWatch`: the limiters read it to hold new slots after a failover (a promoted replica
may not know the slots the old primary leased).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.connection import parse_url
from redis.exceptions import RedisError

from smsgw.settings import RedisSettings

__all__ = [
    "PROBE_INTERVAL_S",
    "REDIS_MAX_CONNECTIONS",
    "PrimaryWatch",
    "connect_redis",
    "primary_watch",
    "probe_primary",
]

_log = structlog.get_logger("smsgw.redis")

# A bounded pool that makes callers wait for a free connection: under a burst (dozens of
# 1000-message batches at once) an unbounded pool opens a connection per caller, and with
# the event loop busy those connects time out (measured: 503s at 60 batches).
REDIS_MAX_CONNECTIONS = 64
REDIS_POOL_WAIT_S = 10.0
# Sentinels answer from memory: a slow one is skipped for the next.
SENTINEL_TIMEOUT_S = 1.0
PROBE_INTERVAL_S = 1.0


@dataclass(slots=True)
class PrimaryWatch:
    """What this process has seen of the primary (with Sentinel)."""

    primary_changes: int = 0  # failovers seen: the primary's address changed
    connects: int = 0  # connections opened to a primary (past the first: reconnects)
    changed_at: float = -math.inf  # time.monotonic() of the last change
    address: str = ""
    # Replicas the sentinels could promote (not down) at the last probe; None: not known yet.
    replicas: int | None = None
    # Called at each change (from the coroutine that found it): what must react at once.
    listeners: list[Callable[[], None]] = field(default_factory=list, compare=False)

    def seen(self, host: str, port: int) -> None:
        address = f"{host}:{port}"
        if address == self.address:
            return
        previous, self.address = self.address, address
        if previous:
            self.primary_changes += 1
            self.changed_at = time.monotonic()
            _log.warning("redis_primary_changed", previous=previous, primary=address)
            for listener in self.listeners:
                listener()

    def hold_left(self, hold_s: float, now: float) -> float:
        """How much of `hold_s` after the last change is still to run at `now`."""
        return max(0.0, self.changed_at + hold_s - now)


class _SentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's primary lookup with the bounded, waiting pool every other client has."""

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        self.watch = PrimaryWatch()

    async def get_master_address(self) -> tuple[str, int]:
        # Called by each connection as it connects (a retry included).
        self.watch.connects += 1
        return await self.ask_primary()

    async def release(self, connection: AbstractConnection) -> None:
        # A connection busy when the primary changed goes back to the pool still connected
        # to the old one (redis-py's asyncio pool does not check, its sync one does). Reused,
        # it would keep writing there — in a coordinated failover the old primary takes
        # writes until it is demoted: a second limiter schedule. Closed instead; it
        # reconnects to the new primary when next used.
        current = self.master_address
        address = (getattr(connection, "host", None), getattr(connection, "port", None))
        if current is not None and address != tuple(current):
            await connection.disconnect()
        await super().release(connection)

    async def disconnect(self, inuse_connections: bool = True) -> None:
        try:
            await super().disconnect(inuse_connections)
        finally:
            if inuse_connections:
                # Closing the whole pool (the client's aclose): the sentinels' clients too,
                # which redis-py leaves open. A new primary closes only idle connections.
                for sentinel in self.sentinel_manager.sentinels:
                    with contextlib.suppress(RedisError, OSError):
                        await sentinel.aclose()

    async def count_replicas(self) -> None:
        # The first sentinel that answers; none answering leaves the count as it was (an
        # empty answer would read as "no replica to wait for").
        for sentinel in self.sentinel_manager.sentinels:
            try:
                replicas = await sentinel.sentinel_slaves(self.service_name)
            except (RedisError, OSError):
                continue
            self.watch.replicas = sum(1 for replica in replicas if _promotable(replica))
            return

    async def ask_primary(self) -> tuple[str, int]:
        host, port = await SentinelConnectionPool.get_master_address(self)  # type: ignore[no-untyped-call]
        self.watch.seen(host, port)
        return host, port


def connect_redis(settings: RedisSettings, **options: Any) -> Redis:
    """A client for the primary; `options` override the connection defaults (timeouts)."""
    connection: dict[str, Any] = {
        "socket_connect_timeout": 5,
        "socket_timeout": 5,
        "health_check_interval": 30,
        **options,
    }
    if not settings.sentinels:
        if settings.url is None:
            raise ValueError("no Redis configured: set redis.url or redis.sentinels")
        pool = BlockingConnectionPool.from_url(
            settings.url,
            max_connections=REDIS_MAX_CONNECTIONS,
            timeout=REDIS_POOL_WAIT_S,
            **connection,
        )
        return Redis(connection_pool=pool)
    if settings.url is not None:
        # Credentials, database and TLS from the URL; the host is Sentinel's answer.
        parsed = parse_url(settings.url)  # type: ignore[no-untyped-call]
        for name in ("username", "password", "db"):
            if parsed.get(name) is not None:
                connection[name] = parsed[name]
        if settings.url.startswith("rediss://"):
            connection["ssl"] = True
    sentinel_options: dict[str, Any] = {
        "socket_connect_timeout": SENTINEL_TIMEOUT_S,
        "socket_timeout": SENTINEL_TIMEOUT_S,
    }
    if settings.sentinel_password is not None:
        sentinel_options["password"] = settings.sentinel_password
    sentinel = Sentinel(
        [_address(entry) for entry in settings.sentinels], sentinel_kwargs=sentinel_options
    )
    client: Redis = sentinel.master_for(
        settings.sentinel_master,
        redis_class=Redis,
        connection_pool_class=_SentinelPool,
        max_connections=REDIS_MAX_CONNECTIONS,
        timeout=REDIS_POOL_WAIT_S,
        **connection,
    )
    return client


def primary_watch(redis: Redis) -> PrimaryWatch | None:
    """The client's record of primary changes; None where nothing names the primary (one
    server by URL: a failover there is the operator's DNS or proxy, unseen by us)."""
    pool = redis.connection_pool
    return pool.watch if isinstance(pool, _SentinelPool) else None


async def probe_primary(redis: Redis) -> None:
    """Ask the sentinels who is primary now (a change closes idle connections to the old
    one at once, instead of whenever a connection next fails) and how many replicas they
    could promote."""
    pool = redis.connection_pool
    if isinstance(pool, _SentinelPool):
        await pool.ask_primary()
        await pool.count_replicas()


def _promotable(replica: dict[str, Any]) -> bool:
    # What Sentinel's own election skips: down, or not reachable from the sentinel (a dead
    # old primary is listed as a disconnected replica of the new one at once).
    flags = set(str(replica.get("flags", "")).split(","))
    # Priority 0: never promoted, so its copy of a message saves nothing in a failover.
    never = str(replica.get("slave-priority", replica.get("replica-priority", 1))) == "0"
    return not flags & {"s_down", "o_down", "disconnected"} and not never


def _address(entry: str) -> tuple[str, int]:
    host, _, port = entry.rpartition(":")
    return host.strip("[]"), int(port)
