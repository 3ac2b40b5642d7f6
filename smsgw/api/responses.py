"""Success responses: orjson bodies, RFC 3339 UTC times."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

__all__ = ["json_response", "rfc3339"]

_JSON_HEADERS = {"Content-Type": "application/json"}


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), headers=_JSON_HEADERS)


@functools.lru_cache(maxsize=64)
def _rfc3339_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).isoformat().replace("+00:00", "Z")


def rfc3339(epoch_s: float) -> str:
    # Whole seconds, cached: under load most responses in one second share their timestamps.
    return _rfc3339_second(int(epoch_s))
