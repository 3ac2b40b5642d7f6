"""Reading what a client sends: every handler takes its bodies, headers and numeric query
parameters through here, so malformed input is a 400 problem and never an exception of a
parser's own (a 500 with a traceback in the log, a way to flood it).

- JSON: msgspec raises DecodeError, ValidationError, and RecursionError for documents nested
  deeper than the interpreter's stack (~1000 levels, less inside a handler).
- Headers: aiohttp decodes them as UTF-8 with surrogateescape, so bytes that are not UTF-8
  become lone surrogates that `.encode()` refuses; `header_bytes` gives back the exact bytes.
- Numbers: `str.isdigit()` takes "²" (which int() refuses) and "٣" (which int() reads as 3),
  and int() refuses more than 4300 digits; `ascii_int` takes ASCII digits of bounded length.
- Forms: aiohttp's `post()` raises on bytes that are not UTF-8, an unknown charset or a broken
  multipart body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar
from urllib.parse import parse_qsl

import msgspec
from aiohttp import web
from multidict import MultiDict

from smsgw.api.problems import Problem
from smsgw.validation import MESSAGE_ID, ascii_int, field_error

__all__ = [
    "DEFAULT_MAX_BODY",
    "MESSAGE_ID",
    "ascii_int",
    "decode_json",
    "form_body",
    "header_bytes",
    "int_query",
    "query_problem",
    "read_body",
]

T = TypeVar("T")

DEFAULT_MAX_BODY = 64 * 1024
# Twilio and Vonage receipts have a dozen fields; a form with far more is not one of theirs.
_MAX_FORM_FIELDS = 200


def decode_json(body: bytes, body_type: type[T]) -> T:
    """Parse and validate in one pass; 400 problems name the offending field."""
    try:
        return msgspec.json.decode(body, type=body_type)
    except msgspec.ValidationError as exc:
        # msgspec validates while it parses, so a field error can come before a syntax error
        # later in the body: broken JSON must be reported as such.
        _raise_if_malformed(body)
        # A missing or unknown field is pointed at, not its parent object.
        error = field_error(exc)
        raise Problem(
            400,
            "invalid-request",
            "Invalid request",
            error.message,
            errors=[{"pointer": error.json_pointer, "detail": error.message}],
        ) from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _malformed() from exc
    except RecursionError as exc:
        # Only where the type takes any JSON (dict[str, Any]): our request schemas refuse a
        # nested value at its first bracket, long before the stack runs out.
        detail = "the body is nested too deeply"
        raise Problem(
            400,
            "invalid-request",
            "Invalid request",
            detail,
            errors=[{"pointer": "#", "detail": detail}],
        ) from exc


def _raise_if_malformed(body: bytes) -> None:
    try:
        msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _malformed() from exc
    except RecursionError:
        # Too deep to check the syntax: the validation error already found stands.
        return


def _malformed() -> Problem:
    return Problem(400, "malformed-json", "Malformed JSON", "the body is not valid UTF-8 JSON")


async def read_body(request: web.Request, limit: int = DEFAULT_MAX_BODY) -> bytes:
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


async def form_body(request: web.Request) -> MultiDict[str] | None:
    """An application/x-www-form-urlencoded body, read within the body limit (an empty body
    is an empty form); None when it is another type or not a valid UTF-8 form."""
    body = await read_body(request)
    if not body:
        return MultiDict()
    if request.content_type != "application/x-www-form-urlencoded":
        return None
    try:
        # The charset parameter is not trusted: forms are UTF-8 (an unknown name would raise).
        pairs = parse_qsl(
            body.decode(),
            keep_blank_values=True,
            errors="strict",
            max_num_fields=_MAX_FORM_FIELDS,
        )
    except ValueError:  # UnicodeDecodeError too, in the bytes or a %-escape
        return None
    return MultiDict(pairs)


def header_bytes(request: web.Request, name: str) -> bytes | None:
    """The header's value exactly as the client sent it, whatever its bytes."""
    value = request.headers.get(name)
    return None if value is None else value.encode("utf-8", "surrogateescape")


def int_query(params: Mapping[str, str], name: str, *, low: int, high: int, default: int) -> int:
    """A query parameter that must be an integer from `low` to `high` (400 otherwise)."""
    if name not in params:
        return default
    value = ascii_int(params[name])
    if value is None or not low <= value <= high:
        raise query_problem(name, f"an integer from {low} to {high}")
    return value


def query_problem(name: str, detail: str) -> Problem:
    return Problem(
        400,
        "invalid-query",
        "Invalid query parameter",
        f"{name}: {detail}",
        errors=[{"pointer": f"?{name}", "detail": detail}],
    )
