"""What every POST endpoint does before its own work: auth, intake state, body, idempotency."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from smsgw.api.inputs import DEFAULT_MAX_BODY, header_bytes, read_body
from smsgw.api.keys import AUTH, IDEMPOTENCY, QUOTAS
from smsgw.api.problems import Problem
from smsgw.app_keys import STATE

__all__ = ["DEFAULT_MAX_BODY", "JsonHandler", "authorized_client", "json_endpoint"]

_IDEMPOTENCY_KEY = re.compile(rb"[\x21-\x7e]{1,255}")

JsonHandler = Callable[[web.Request, str, bytes], Awaitable[web.Response]]


def json_endpoint(
    handler: JsonHandler, *, max_body: int = DEFAULT_MAX_BODY, takes_new_work: bool = True
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Wrap `handler(request, client, body)` with the checks every POST shares.

    `takes_new_work` endpoints (those that queue messages) are refused while draining;
    the others (checking a code) keep answering until the process stops, so a user whose
    code is already on its way can still use it during a deploy.
    """

    async def endpoint(request: web.Request) -> web.Response:
        client = await authorized_client(request)
        if takes_new_work and request.app[STATE].draining:
            raise Problem(
                503,
                "draining",
                "Shutting down",
                "this replica is stopping; retry on another",
                headers={"Retry-After": "1"},
            )
        if not _is_json(request.content_type):
            raise Problem(
                415, "unsupported-media-type", "Unsupported Media Type", "send application/json"
            )
        body = await read_body(request, max_body)
        raw_key = header_bytes(request, "Idempotency-Key")
        if raw_key is None:
            return await handler(request, client, body)
        if not _IDEMPOTENCY_KEY.fullmatch(raw_key):
            raise Problem(
                400,
                "invalid-idempotency-key",
                "Invalid Idempotency-Key",
                "use 1-255 visible ASCII characters",
            )
        key = raw_key.decode("ascii")
        fingerprint = hashlib.sha256(
            request.method.encode() + b" " + request.path.encode() + b"\n" + body
        ).digest()
        return await request.app[IDEMPOTENCY].run(
            client, key, fingerprint, lambda: handler(request, client, body)
        )

    return endpoint


async def authorized_client(request: web.Request) -> str:
    """The calling client's name once its key and request quota allow the call."""
    client = request.app[AUTH].authenticate(request)
    await request.app[QUOTAS].check(client)
    return client


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )
