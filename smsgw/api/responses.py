"""Success responses: orjson bodies, RFC 3339 UTC times."""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

__all__ = ["json_response", "rfc3339", "rfc3339_ms"]

_JSON_HEADERS = {"Content-Type": "application/json"}


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), headers=_JSON_HEADERS)


@functools.lru_cache(maxsize=64)
def _rfc3339_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).isoformat().replace("+00:00", "Z")


def rfc3339(epoch_s: float, *, round_up: bool = False) -> str:
    """Whole seconds (cached: under load most responses in a second share their times).

    Round down for deadlines (an expiry shown early is safe), up for earliest-allowed times
    (a client waiting until `resend_after` must not be refused).
    """
    second = math.ceil(epoch_s) if round_up else math.floor(epoch_s)
    return _rfc3339_second(second)


def rfc3339_ms(epoch_s: float) -> str:
    """Millisecond precision, for event times: an audit trail must show their order."""
    stamp = datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")
