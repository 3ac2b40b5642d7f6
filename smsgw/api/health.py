"""GET /healthz, /readyz and /openapi.json."""

from __future__ import annotations

import asyncio
from importlib import resources

from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from smsgw.api.problems import Problem
from smsgw.api.responses import json_response
from smsgw.app_keys import DISPATCHER, QUEUE, REDIS, SETTINGS, STATE
from smsgw.redis_connect import primary_watch

__all__ = ["healthz", "load_openapi", "openapi", "openapi_document", "readyz"]


def openapi_document() -> bytes:
    return resources.files("smsgw.api").joinpath("openapi.json").read_bytes()


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready unless stopping or saturated: a load balancer should then send work elsewhere."""
    app = request.app
    queue = app[QUEUE]
    if app[STATE].draining:
        raise Problem(503, "not-ready", "Not ready", "draining")
    settings = app[SETTINGS]
    role = settings.server.role
    # Full is a reason to send work to another replica only if that one has its own queue:
    # a shared (Redis) queue is full for every replica at once, and an API that answers 503
    # with Retry-After itself serves clients better than a load balancer with no endpoints.
    local_queue = not settings.uses_redis(settings.queue.backend)
    if role != "worker" and local_queue and queue.waiting() >= queue.max_size:
        raise Problem(503, "not-ready", "Not ready", "queue full", headers={"Retry-After": "1"})
    if REDIS in app and primary_watch(app[REDIS]) is not None:
        await _check_redis(app[REDIS])
    body: dict[str, object] = {"status": "ready", "role": role, "queue_depth": queue.depth()}
    if DISPATCHER in app:
        body["dispatch"] = app[DISPATCHER].stats.as_dict()
    return json_response(body)


async def _check_redis(redis: Redis) -> None:
    # With Sentinel: without a primary nothing can be accepted or sent, so not ready (while
    # the sentinels elect one). The ping goes to whoever is primary now. One Redis by URL
    # is not checked: down, it is down for every replica at once, and an API answering 503
    # with Retry-After itself serves clients better than a load balancer with no endpoints.
    try:
        async with asyncio.timeout(READY_REDIS_TIMEOUT_S):
            await redis.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        detail = f"no Redis primary reachable ({type(exc).__name__})"
        raise Problem(503, "not-ready", "Not ready", detail, headers={"Retry-After": "1"}) from exc


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[_OPENAPI], content_type="application/json")


_OPENAPI = web.AppKey("openapi", bytes)
READY_REDIS_TIMEOUT_S = 0.5


def load_openapi(app: web.Application) -> None:
    app[_OPENAPI] = openapi_document()
