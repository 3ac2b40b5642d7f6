"""The one middleware: every error becomes a problem response, nothing internal leaks.

Logging is bounded too: whatever a client can trigger once it can trigger a million times,
so a failure is one short line (what, where), never a traceback per request. A bug must stay
findable: the first time each (exception type, raising line) is seen, and again at most every
TRACEBACK_EVERY_S, its line carries the traceback; at debug level every one does.
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError

from smsgw.api.problems import Problem, problem_response
from smsgw.api.queueing import AcceptedUnconfirmed
from smsgw.queue.redis import NotReplicated

__all__ = ["TRACEBACK_EVERY_S", "error_middleware", "quiet_bad_requests"]

_log = structlog.get_logger("smsgw.api")

TRACEBACK_EVERY_S = 600.0
# Distinct raising sites remembered; beyond, the oldest is forgotten (its next one logs again).
_MAX_SITES = 256

# An API of JSON: nothing is to be sniffed, framed, cached, or given a referrer.
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except Problem as problem:
        response = problem_response(problem)
    except (NotReplicated, AcceptedUnconfirmed) as exc:
        # Counted by the queue (replica_ack_timeouts); the client is told what happened.
        retry = {"Retry-After": str(exc.retry_after_s)}
        response = problem_response(
            Problem(503, "not-replicated", "Service Unavailable", exc.detail, headers=retry)
        )
    except RedisError as exc:
        # Shared state is unreachable: a client should retry (soon, or on another replica).
        # One line per request while Redis is down: no traceback, it says nothing more.
        _log.warning(
            "redis_error",
            method=request.method,
            route=_route(request),
            error=type(exc).__name__,
            detail=str(exc)[:200],
        )
        response = problem_response(
            Problem(
                503,
                "dependency-unavailable",
                "Service Unavailable",
                "shared state is unreachable; retry shortly",
                headers={"Retry-After": "1"},
            )
        )
    except web.HTTPException as exc:
        # aiohttp's own 404/405/413: same shape as ours.
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        response = problem_response(Problem(exc.status, None, exc.reason, headers=headers))
    except Exception as exc:
        # The client learns nothing about internals; the log gets one line (see above).
        site = _raising_site(exc)
        fields = {
            "method": request.method,
            "route": _route(request),
            "error": type(exc).__name__,
            "site": site,
        }
        if _TRACEBACKS.due((type(exc).__name__, site)):
            _log.error("unhandled_error", **fields, exc_info=exc)
        else:
            _log.error("unhandled_error", **fields)
            _log.debug("unhandled_error_traceback", **fields, exc_info=exc)
        response = problem_response(Problem(500, None, "Internal Server Error"))
    response.headers.update(_SECURITY_HEADERS)
    return response


def _route(request: web.Request) -> str:
    # The route's template, not the path: bounded, and no ids or numbers from the client.
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _raising_site(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "unknown"
    frame = frames[-1]
    return f"{Path(frame.filename).name}:{frame.lineno}:{frame.name}"


class _TracebackBudget:
    """When a traceback is due again for one raising site."""

    def __init__(self, every_s: float, max_sites: int) -> None:
        self._every_s = every_s
        self._max_sites = max_sites
        self._last: dict[tuple[str, str], float] = {}

    def due(self, site: tuple[str, str]) -> bool:
        now = time.monotonic()
        last = self._last.get(site)
        if last is not None and now - last < self._every_s:
            return False
        self._last.pop(site, None)
        self._last[site] = now
        while len(self._last) > self._max_sites:
            del self._last[next(iter(self._last))]
        return True


_TRACEBACKS = _TracebackBudget(TRACEBACK_EVERY_S, _MAX_SITES)


class _BadRequestLine(logging.Filter):
    """aiohttp answers 400 to a request its parser refuses (raw bytes in the URL, a broken
    header, an overlong line) before any middleware runs, and logs it with a traceback at
    error level: turned into one short info line, without the request's bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "bad HTTP request from %s: %s"
            record.args = (remote, type(exc).__name__)
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_bad_requests() -> None:
    """Install the filter on aiohttp's server logger (once per process)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _BadRequestLine) for f in logger.filters):
        logger.addFilter(_BadRequestLine())
