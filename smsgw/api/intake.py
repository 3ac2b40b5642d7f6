"""What every POST endpoint does before its own work: auth, intake state, body, idempotency."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
from aiohttp import web

from smsgw.api.keys import AUTH, IDEMPOTENCY, QUOTAS, STATE
from smsgw.api.problems import Problem

__all__ = ["DEFAULT_MAX_BODY", "JsonHandler", "authorized_client", "decode_body", "json_endpoint"]

DEFAULT_MAX_BODY = 64 * 1024
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")

JsonHandler = Callable[[web.Request, str, bytes], Awaitable[web.Response]]
T = TypeVar("T")


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
        body = await _read_body(request, max_body)
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return await handler(request, client, body)
        if not _IDEMPOTENCY_KEY.fullmatch(key):
            raise Problem(
                400,
                "invalid-idempotency-key",
                "Invalid Idempotency-Key",
                "use 1-255 visible ASCII characters",
            )
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


def decode_body(body: bytes, body_type: type[T]) -> T:
    """Parse and validate in one pass; 400 problems name the offending field."""
    try:
        return msgspec.json.decode(body, type=body_type)
    except msgspec.ValidationError as exc:
        # msgspec validates while it parses, so a field error can come before a syntax error
        # later in the body: broken JSON must be reported as such.
        _raise_if_malformed(body)
        message, _, path = str(exc).partition(" - at `")
        pointer = _json_pointer(path.rstrip("`"))
        field = re.search(r"field `([^`]+)`", message)
        if field:  # missing or unknown field: point at the field, not at its parent object
            pointer = f"{pointer}/{field.group(1)}"
        raise Problem(
            400,
            "invalid-request",
            "Invalid request",
            message,
            errors=[{"pointer": pointer, "detail": message}],
        ) from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _malformed() from exc


def _raise_if_malformed(body: bytes) -> None:
    try:
        msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _malformed() from exc


def _malformed() -> Problem:
    return Problem(400, "malformed-json", "Malformed JSON", "the body is not valid UTF-8 JSON")


def _json_pointer(path: str) -> str:
    # msgspec's "$.messages[3].to" -> RFC 6901 fragment "#/messages/3/to"; "$" -> "#"
    parts = re.findall(r"\.([^.\[]+)|\[(\d+)\]", path.removeprefix("$"))
    return "#" + "".join("/" + (name or index) for name, index in parts)


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def _read_body(request: web.Request, limit: int) -> bytes:
    too_large = Problem(
        413, "body-too-large", "Request body too large", f"the limit is {limit} bytes"
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    # A chunked body has no Content-Length: aiohttp stops it at the app's client_max_size
    # (the batch limit, raising 413), and the per-route limit is checked once it is read.
    body = await request.read()
    if len(body) > limit:
        raise too_large
    return body
