"""The one middleware: every error becomes a problem response, nothing internal leaks."""

from __future__ import annotations

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError

from smsgw.api.problems import Problem, problem_response

__all__ = ["error_middleware"]

_log = structlog.get_logger("smsgw.api")

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
    except RedisError:
        # Shared state is unreachable: a client should retry (soon, or on another replica).
        _log.warning("redis_error", method=request.method, path=request.path, exc_info=True)
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
    except Exception:
        # The traceback goes to the log only; the client learns nothing about internals.
        _log.exception("unhandled_error", method=request.method, path=request.path)
        response = problem_response(Problem(500, None, "Internal Server Error"))
    response.headers.update(_SECURITY_HEADERS)
    return response
