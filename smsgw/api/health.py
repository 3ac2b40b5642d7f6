"""GET /healthz, /readyz and /openapi.json."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from smsgw.api.keys import DISPATCHER, QUEUE, STATE
from smsgw.api.problems import Problem
from smsgw.api.responses import json_response

__all__ = ["healthz", "load_openapi", "openapi", "openapi_document", "readyz"]


def openapi_document() -> bytes:
    return resources.files("smsgw.api").joinpath("openapi.json").read_bytes()


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready unless stopping or saturated: a load balancer should then send work elsewhere."""
    queue = request.app[QUEUE]
    if request.app[STATE].draining:
        raise Problem(503, "not-ready", "Not ready", "draining")
    if queue.waiting() >= queue.max_size:
        raise Problem(503, "not-ready", "Not ready", "queue full", headers={"Retry-After": "1"})
    stats = request.app[DISPATCHER].stats.as_dict()
    return json_response({"status": "ready", "queue_depth": queue.depth(), "dispatch": stats})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[_OPENAPI], content_type="application/json")


_OPENAPI = web.AppKey("openapi", bytes)


def load_openapi(app: web.Application) -> None:
    app[_OPENAPI] = openapi_document()
