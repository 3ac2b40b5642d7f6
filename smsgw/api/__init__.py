"""HTTP API v1: handlers, problem details, authentication, idempotency."""

from smsgw.api.middleware import error_middleware, quiet_bad_requests
from smsgw.api.routes import MAX_BATCH_BODY, add_routes

__all__ = [
    "MAX_BATCH_BODY",
    "add_routes",
    "error_middleware",
    "quiet_bad_requests",
]
