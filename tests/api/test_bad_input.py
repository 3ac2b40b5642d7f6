"""The bad-input matrix: every POST route refuses bad requests with a problem and sends nothing."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from aiohttp.test_utils import TestClient
from redis.exceptions import ConnectionError as RedisConnectionError

from smsgw.api import middleware
from smsgw.app_keys import AUDIT
from tests.helpers import app_client, read_sms

PHONE = "+14155550100"
LANDLINE = "+442079460000"  # a London fixed line: valid, but no SMS
PROBLEM = "application/problem+json"
KIB = 1024

Client = TestClient[Any, Any]

# A valid body for each POST route; cases below break one thing at a time.
VALID: dict[str, dict[str, Any]] = {
    "/v1/otp": {"phone": PHONE},
    "/v1/otp/verify": {"id": "otp_" + "0" * 32, "code": "123456"},
    "/v1/messages": {"to": PHONE, "body": "hello"},
    "/v1/messages/batch": {"messages": [{"to": PHONE, "body": "hello"}]},
}
ROUTES = list(VALID)


def slug(payload: dict[str, Any]) -> str:
    problem_type = payload["type"]
    assert isinstance(problem_type, str)
    return problem_type.rsplit(":", 1)[-1]


async def problem(response: Any, status: int) -> dict[str, Any]:
    """Check the RFC 9457 shape shared by every error and return the payload."""
    body = await response.read()
    assert response.status == status, body
    assert response.headers["Content-Type"] == PROBLEM
    payload: dict[str, Any] = orjson.loads(body)
    assert payload["status"] == status
    assert isinstance(payload["title"], str)
    assert payload["title"]
    assert isinstance(payload["type"], str)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert response.headers["Cache-Control"] == "no-store"
    return payload


async def assert_nothing_sent(client: Client, sms_path: Path) -> None:
    """Nothing was ever queued: no SMS, no outcome, empty queue (queued messages stay counted
    in queue_depth until they have an outcome, so all zeros means nothing got in)."""
    await asyncio.sleep(0.02)
    assert read_sms(sms_path) == []
    response = await client.get("/readyz")
    assert response.status == 200
    ready = await response.json()
    assert ready["queue_depth"] == 0
    assert ready["dispatch"]["sent"] == 0
    assert ready["dispatch"]["failed"] == 0
    assert ready["dispatch"]["expired"] == 0


async def post_raw(
    client: Client, path: str, data: bytes, content_type: str = "application/json"
) -> Any:
    return await client.post(path, data=data, headers={"Content-Type": content_type})


# -- malformed JSON ------------------------------------------------------------------------


def malformed(route: str) -> list[bytes]:
    """Broken variants of the route's valid body: what reaches a server from a buggy client."""
    valid = orjson.dumps(VALID[route])
    return [
        b"",
        b"{",
        valid[: len(valid) // 2],  # truncated
        valid[:-1],  # the closing brace lost
        valid[:-1] + b",}",  # trailing comma
        valid + b" trailing",
        valid.replace(b'"', b"'"),  # single quotes
        b"nul",
        b"\x00\x01\x02",
    ]


MALFORMED_CASES = [(route, data) for route in ROUTES for data in malformed(route)]


@pytest.mark.parametrize(
    ("route", "data"),
    MALFORMED_CASES,
    ids=[f"{route}-{i % 9}" for i, (route, _) in enumerate(MALFORMED_CASES)],
)
async def test_malformed_json_is_400(
    client: Client, sms_path: Path, route: str, data: bytes
) -> None:
    payload = await problem(await post_raw(client, route, data), 400)
    assert slug(payload) == "malformed-json"
    await assert_nothing_sent(client, sms_path)


@pytest.mark.parametrize(
    ("route", "data"),
    [
        ("/v1/otp", b'{"lenght": 6, '),  # truncated after an unknown field
        ("/v1/messages", b'{"phone": "+14155550100",}'),  # unknown field, trailing comma
        ("/v1/otp/verify", b'{"id": "otp_x"} trailing'),  # missing code, then garbage
    ],
)
async def test_malformed_json_wins_over_field_errors(
    client: Client, sms_path: Path, route: str, data: bytes
) -> None:
    payload = await problem(await post_raw(client, route, data), 400)
    assert slug(payload) == "malformed-json"


@pytest.mark.parametrize("route", ROUTES)
async def test_invalid_utf8_is_400(client: Client, sms_path: Path, route: str) -> None:
    valid = orjson.dumps(VALID[route])
    # The route's own valid body with bytes that are not UTF-8 inside a string value.
    data = valid.replace(b"+14155550100", b"\xff\xfe").replace(b"otp_", b"\xff\xfe")
    assert data != valid
    response = await post_raw(client, route, data)
    payload = await problem(response, 400)
    assert slug(payload) == "malformed-json"


# -- invalid-request: wrong types, missing and unknown fields, out-of-range values ---------


def merged(route: str, **changes: Any) -> dict[str, Any]:
    body = dict(VALID[route])
    for key, value in changes.items():
        if value is ...:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def batch_item(**changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"to": PHONE, "body": "hello"}
    for key, value in changes.items():
        if value is ...:
            item.pop(key, None)
        else:
            item[key] = value
    return {"messages": [item]}


INVALID_REQUEST: list[tuple[str, Any, str]] = [
    # body is not an object
    ("/v1/otp", [], "#"),
    ("/v1/otp/verify", "code", "#"),
    ("/v1/messages", 42, "#"),
    ("/v1/messages/batch", None, "#"),
    # wrong types
    ("/v1/otp", merged("/v1/otp", phone=14155550100), "#/phone"),
    ("/v1/otp", merged("/v1/otp", phone=None), "#/phone"),
    ("/v1/otp", merged("/v1/otp", length="6"), "#/length"),
    ("/v1/otp", merged("/v1/otp", length=6.0), "#/length"),
    ("/v1/otp", merged("/v1/otp", length=True), "#/length"),
    ("/v1/otp", merged("/v1/otp", ttl_s="600"), "#/ttl_s"),
    ("/v1/otp", merged("/v1/otp", app=["shop"]), "#/app"),
    ("/v1/otp", merged("/v1/otp", locale=1), "#/locale"),
    ("/v1/otp/verify", merged("/v1/otp/verify", code=123456), "#/code"),
    ("/v1/otp/verify", merged("/v1/otp/verify", id=7), "#/id"),
    ("/v1/messages", merged("/v1/messages", to=["+14155550100"]), "#/to"),
    ("/v1/messages", merged("/v1/messages", body={"text": "hi"}), "#/body"),
    ("/v1/messages", merged("/v1/messages", priority=1), "#/priority"),
    ("/v1/messages", merged("/v1/messages", client_ref=5), "#/client_ref"),
    ("/v1/messages/batch", {"messages": {"to": PHONE, "body": "x"}}, "#/messages"),
    ("/v1/messages/batch", {"messages": ["+14155550100"]}, "#/messages/0"),
    ("/v1/messages/batch", batch_item(body=5), "#/messages/0/body"),
    # out of range / not matching
    ("/v1/otp", merged("/v1/otp", length=3), "#/length"),
    ("/v1/otp", merged("/v1/otp", length=11), "#/length"),
    ("/v1/otp", merged("/v1/otp", ttl_s=29), "#/ttl_s"),
    ("/v1/otp", merged("/v1/otp", ttl_s=3601), "#/ttl_s"),
    ("/v1/otp", merged("/v1/otp", phone=""), "#/phone"),
    ("/v1/otp", merged("/v1/otp", app="visit http://evil.example"), "#/app"),
    ("/v1/otp", merged("/v1/otp", app="shop\n"), "#/app"),
    ("/v1/otp", merged("/v1/otp", app=""), "#/app"),
    ("/v1/otp", merged("/v1/otp", locale="english"), "#/locale"),
    ("/v1/otp", merged("/v1/otp", locale="fr\n"), "#/locale"),
    ("/v1/otp/verify", merged("/v1/otp/verify", code="12ab56"), "#/code"),
    ("/v1/otp/verify", merged("/v1/otp/verify", code="123"), "#/code"),
    ("/v1/otp/verify", merged("/v1/otp/verify", code="12345678901"), "#/code"),
    ("/v1/otp/verify", merged("/v1/otp/verify", code="123456\n"), "#/code"),
    ("/v1/otp/verify", merged("/v1/otp/verify", code=" 123456"), "#/code"),
    ("/v1/messages", merged("/v1/messages", body=""), "#/body"),
    ("/v1/messages", merged("/v1/messages", body="x" * 1601), "#/body"),
    ("/v1/messages", merged("/v1/messages", priority="urgent"), "#/priority"),
    ("/v1/messages", merged("/v1/messages", client_ref="r" * 129), "#/client_ref"),
    ("/v1/messages/batch", batch_item(priority="low"), "#/messages/0/priority"),
    ("/v1/messages/batch", batch_item(body="x" * 1601), "#/messages/0/body"),
    # missing fields
    ("/v1/otp", {}, "#/phone"),
    ("/v1/otp/verify", merged("/v1/otp/verify", code=...), "#/code"),
    ("/v1/messages", merged("/v1/messages", to=...), "#/to"),
    ("/v1/messages", merged("/v1/messages", body=...), "#/body"),
    ("/v1/messages/batch", {}, "#/messages"),
    ("/v1/messages/batch", batch_item(to=...), "#/messages/0/to"),
    ("/v1/messages/batch", batch_item(body=...), "#/messages/0/body"),
    # unknown fields
    ("/v1/otp", merged("/v1/otp", lenght=6), "#/lenght"),
    ("/v1/otp", merged("/v1/otp", code="123456"), "#/code"),
    ("/v1/otp/verify", merged("/v1/otp/verify", verification_id="x"), "#/verification_id"),
    ("/v1/messages", merged("/v1/messages", from_="+15005550006"), "#/from_"),
    ("/v1/messages/batch", merged("/v1/messages/batch", priority="high"), "#/priority"),
    ("/v1/messages/batch", batch_item(sender="me"), "#/messages/0/sender"),
]


def _root(pointer: str) -> bool:
    return pointer in ("#", "#/")


@pytest.mark.parametrize(
    ("route", "body", "pointer"),
    INVALID_REQUEST,
    ids=[f"{route}-{pointer}-{i}" for i, (route, _, pointer) in enumerate(INVALID_REQUEST)],
)
async def test_invalid_request_is_400_with_a_pointer(
    client: Client, sms_path: Path, route: str, body: Any, pointer: str
) -> None:
    payload = await problem(await post_raw(client, route, orjson.dumps(body)), 400)
    assert slug(payload) == "invalid-request"
    assert payload["detail"]
    errors = payload["errors"]
    assert len(errors) == 1
    assert errors[0]["detail"]
    if _root(pointer):
        # The whole document is wrong. RFC 6901 spells its pointer "#"; "#/" would be the
        # member named "" (noted as a nit, accepted here).
        assert _root(errors[0]["pointer"])
    else:
        assert errors[0]["pointer"] == pointer
    await assert_nothing_sent(client, sms_path)


@pytest.mark.parametrize(
    "body",
    [{"code": "123456"}, {"id": "otp_x", "phone": PHONE, "code": "123456"}],
    ids=["neither", "both"],
)
async def test_verify_needs_exactly_one_of_id_and_phone(
    client: Client, sms_path: Path, body: dict[str, Any]
) -> None:
    payload = await problem(await client.post("/v1/otp/verify", json=body), 400)
    assert slug(payload) == "invalid-request"
    assert payload["errors"][0]["pointer"] in ("#/id", "#/phone")
    await assert_nothing_sent(client, sms_path)


# -- invalid and non-mobile phone numbers --------------------------------------------------

BAD_PHONES = [
    "not a phone",
    "12345",
    "4155550100",  # national form: no country
    "+1555",
    "+999123456",
    "+1415555010",  # a digit short
    "+1" + "4" * 30,
    LANDLINE,
]
PHONE_FIELDS = {
    "/v1/otp": ("phone", "#/phone"),
    "/v1/otp/verify": ("phone", "#/phone"),
    "/v1/messages": ("to", "#/to"),
    "/v1/messages/batch": ("to", "#/messages/0/to"),
}


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("phone", BAD_PHONES)
async def test_invalid_phone_is_400(client: Client, sms_path: Path, route: str, phone: str) -> None:
    field, pointer = PHONE_FIELDS[route]
    if route == "/v1/messages/batch":
        body: dict[str, Any] = batch_item(to=phone)
    elif route == "/v1/otp/verify":
        body = {"phone": phone, "code": "123456"}
    else:
        body = merged(route, **{field: phone})
    payload = await problem(await client.post(route, json=body), 400)
    assert slug(payload) == "invalid-phone"
    assert [e["pointer"] for e in payload["errors"]] == [pointer]
    await assert_nothing_sent(client, sms_path)


async def test_landline_is_refused_as_not_mobile(client: Client, sms_path: Path) -> None:
    payload = await problem(await client.post("/v1/otp", json={"phone": LANDLINE}), 400)
    assert "mobile" in payload["errors"][0]["detail"]
    await assert_nothing_sent(client, sms_path)


# -- batch size ----------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1001])
async def test_batch_size_out_of_bounds_is_400(client: Client, sms_path: Path, count: int) -> None:
    messages = [{"to": PHONE, "body": "x"} for _ in range(count)]
    response = await client.post("/v1/messages/batch", json={"messages": messages})
    payload = await problem(response, 400)
    assert slug(payload) == "invalid-request"
    assert payload["errors"][0]["pointer"] == "#/messages"
    await assert_nothing_sent(client, sms_path)


# -- body size -----------------------------------------------------------------------------


def padded(route: str, size: int) -> bytes:
    """A body of exactly `size` bytes: valid JSON with one long unknown field."""
    head = orjson.dumps({**VALID[route], "pad": ""})
    return head[:-2] + b"a" * (size - len(head)) + b'"}'


@pytest.mark.parametrize("route", ["/v1/otp", "/v1/otp/verify", "/v1/messages"])
@pytest.mark.parametrize("size", [64 * KIB + 1, 200 * KIB])
async def test_body_over_64_kib_is_413(
    client: Client, sms_path: Path, route: str, size: int
) -> None:
    data = padded(route, size)
    assert len(data) == size
    payload = await problem(await post_raw(client, route, data), 413)
    assert slug(payload) == "body-too-large"
    await assert_nothing_sent(client, sms_path)


@pytest.mark.parametrize("route", ["/v1/otp", "/v1/otp/verify", "/v1/messages"])
async def test_body_of_64_kib_is_not_413(client: Client, sms_path: Path, route: str) -> None:
    # Exactly at the limit the body is read and validated (the pad field is unknown: 400).
    payload = await problem(await post_raw(client, route, padded(route, 64 * KIB)), 400)
    assert slug(payload) == "invalid-request"
    assert payload["errors"][0]["pointer"] == "#/pad"


async def test_chunked_body_over_64_kib_is_413(client: Client, sms_path: Path) -> None:
    # No Content-Length: the limit must hold while streaming, too.
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"phone": "+14155550100", "pad": "'
        for _ in range(80):
            yield b"a" * KIB
        yield b'"}'

    response = await client.post(
        "/v1/otp", data=chunks(), headers={"Content-Type": "application/json"}
    )
    payload = await problem(response, 413)
    assert slug(payload) == "body-too-large"
    await assert_nothing_sent(client, sms_path)


def batch_of_size(size: int) -> bytes:
    """A valid batch of about `size` bytes (long bodies, at most 1000 messages)."""
    item = orjson.dumps({"to": PHONE, "body": "b" * 1500})
    count = max(1, size // (len(item) + 1))
    assert count <= 1000
    return orjson.dumps({"messages": [{"to": PHONE, "body": "b" * 1500}] * count})


async def test_batch_over_4_mib_is_413(client: Client, sms_path: Path) -> None:
    # 1000 messages of 1600 characters of 4 bytes each: valid in count and length, over 4 MiB
    # in bytes.
    data = orjson.dumps({"messages": [{"to": PHONE, "body": "\U0001f600" * 1600}] * 1000})
    assert len(data) > 4 * KIB * KIB
    response = await client.post(
        "/v1/messages/batch",
        data=io.BytesIO(data),
        headers={"Content-Type": "application/json"},
    )
    payload = await problem(response, 413)
    assert slug(payload) == "body-too-large"
    await assert_nothing_sent(client, sms_path)


async def test_batch_of_100_kib_is_accepted(client: Client, sms_path: Path) -> None:
    data = batch_of_size(100 * KIB)
    assert 64 * KIB < len(data) <= 110 * KIB
    response = await post_raw(client, "/v1/messages/batch", data)
    assert response.status == 202, await response.text()
    ids = (await response.json())["ids"]
    assert len(ids) == len(orjson.loads(data)["messages"])


# -- content type --------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/octet-stream",
        "text/json",
    ],
)
async def test_wrong_content_type_is_415(
    client: Client, sms_path: Path, route: str, content_type: str
) -> None:
    response = await post_raw(client, route, orjson.dumps(VALID[route]), content_type)
    payload = await problem(response, 415)
    assert slug(payload) == "unsupported-media-type"
    await assert_nothing_sent(client, sms_path)


async def test_json_with_charset_parameter_is_accepted(client: Client, sms_path: Path) -> None:
    response = await post_raw(
        client,
        "/v1/messages",
        orjson.dumps(VALID["/v1/messages"]),
        "application/json; charset=utf-8",
    )
    assert response.status == 202


# -- unknown routes and methods ------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 404),
        ("GET", "/nope", 404),
        ("POST", "/v1/nope", 404),
        ("POST", "/v2/otp", 404),
        ("GET", "/v1/otp/verify/extra", 404),
        ("POST", "/v1/otp/", 404),
        ("GET", "/v1/otp", 405),
        ("PUT", "/v1/otp/verify", 405),
        ("DELETE", "/v1/messages", 405),
        ("PATCH", "/v1/messages/batch", 405),
        ("POST", "/healthz", 405),
        ("DELETE", "/readyz", 405),
        ("POST", "/openapi.json", 405),
    ],
)
async def test_unknown_route_or_method_is_a_problem(
    client: Client, sms_path: Path, method: str, path: str, status: int
) -> None:
    response = await client.request(method, path)
    payload = await problem(response, status)
    assert payload["type"] == "about:blank"
    if status == 405:
        assert response.headers["Allow"]
    await assert_nothing_sent(client, sms_path)


# -- malformed input is a 4xx problem, never a 500, and logs no traceback ------------------
#
# Each of these used to crash a handler (500) with a full traceback in the log: a way to
# flood logs. They are sent as raw bytes where a client library would refuse to build them.

API_KEY = "bad-input-key-0123456789"
PUBLIC = "https://sms.example.com"
DEEP = 5000  # levels of nesting; Python's recursion limit is 1000


class Logs:
    """structlog events and stdlib records (aiohttp's own logger) of one test."""

    def __init__(self, events: list[dict[str, Any]], caplog: pytest.LogCaptureFixture) -> None:
        self.events = events
        self.caplog = caplog

    def assert_no_traceback(self) -> None:
        with_traceback = [e for e in self.events if e.get("exc_info") or e.get("exception")]
        assert with_traceback == []
        assert [e for e in self.events if e["log_level"] in ("error", "critical")] == []
        assert [r.getMessage() for r in self.caplog.records if r.exc_info] == []


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[Logs]:
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as events:
        yield Logs(events, caplog)


async def raw_request(client: Client, head: bytes, body: bytes = b"") -> tuple[int, bytes, bytes]:
    """Send `head` (request line and headers, without the blank line) and `body` as they
    are; returns (status, raw headers, body)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        length = b"Content-Length: %d\r\n" % len(body) if body else b""
        writer.write(head + b"\r\nConnection: close\r\n" + length + b"\r\n" + body)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    headers, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), headers, payload


def raw_problem(status: int, headers: bytes, body: bytes, expected: int) -> dict[str, Any]:
    assert status == expected, body
    assert b"content-type: application/problem+json" in headers.lower(), headers
    payload: dict[str, Any] = orjson.loads(body)
    assert payload["status"] == expected
    return payload


def deep_bodies(route: str) -> list[bytes]:
    """Bodies nested far beyond the recursion limit, in place of the body and of a field."""
    valid = orjson.dumps(VALID[route])
    field = valid[:-1] + b', "x": ' + b"[" * DEEP + b"]" * DEEP + b"}"
    return [
        b"[" * DEEP + b"]" * DEEP,
        b'{"a":' * DEEP + b"1" + b"}" * DEEP,
        b"[" * DEEP,  # deep and truncated
        field,
    ]


DEEP_CASES = [(route, body) for route in ROUTES for body in deep_bodies(route)]


@pytest.mark.parametrize(
    ("route", "body"), DEEP_CASES, ids=[f"{r}-{i % 4}" for i, (r, _) in enumerate(DEEP_CASES)]
)
async def test_deeply_nested_json_is_400(
    client: Client, sms_path: Path, logs: Logs, route: str, body: bytes
) -> None:
    payload = await problem(await post_raw(client, route, body), 400)
    assert slug(payload) in ("malformed-json", "invalid-request")
    await assert_nothing_sent(client, sms_path)
    logs.assert_no_traceback()


@pytest.fixture
async def keyed_client(aiohttp_client: Any, sms_path: Path) -> Client:
    return await app_client(aiohttp_client, sms_path, clients=[{"name": "a", "key": API_KEY}])


@pytest.mark.parametrize(
    "authorization",
    [
        b"Bearer \xff\xfe",
        b"Bearer " + API_KEY.encode() + b"\xff",
        b"\xc3\x28 x",
        b"Bearer \xed\xa0\x80",
    ],
)
@pytest.mark.parametrize("target", [b"POST /v1/messages", b"GET /v1/messages/msg_1"])
async def test_authorization_that_is_not_utf8_is_401(
    keyed_client: Client, logs: Logs, authorization: bytes, target: bytes
) -> None:
    head = target + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += b"Authorization: " + authorization
    body = orjson.dumps(VALID["/v1/messages"]) if target.startswith(b"POST") else b""
    payload = raw_problem(*await raw_request(keyed_client, head, body), 401)
    assert slug(payload) == "unauthorized"
    logs.assert_no_traceback()


async def test_idempotency_key_that_is_not_utf8_is_400(
    client: Client, sms_path: Path, logs: Logs
) -> None:
    head = b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += b"Idempotency-Key: key-\xff\xfe"
    body = orjson.dumps(VALID["/v1/messages"])
    payload = raw_problem(*await raw_request(client, head, body), 400)
    assert slug(payload) == "invalid-idempotency-key"
    await assert_nothing_sent(client, sms_path)
    logs.assert_no_traceback()


@pytest.mark.parametrize(
    "limit",
    ["%C2%B2", "%D9%A3", "%EF%BC%91", "1" * 5000, "0", "101", "-1", "+5", " 5", "5 ", "%FF"],
    ids=[
        "superscript-2",
        "arabic-3",
        "fullwidth-1",
        "5000-digits",
        "0",
        "101",
        "-1",
        "+5",
        "space-5",
        "5-space",
        "not-utf8",
    ],
)
async def test_limit_that_is_not_an_ascii_integer_in_range_is_400(
    client: Client, logs: Logs, limit: str
) -> None:
    response = await client.get(f"/v1/messages?to=%2B14155550100&limit={limit}")
    payload = await problem(response, 400)
    assert payload["errors"] == [{"pointer": "?limit", "detail": payload["errors"][0]["detail"]}]
    logs.assert_no_traceback()


@pytest.mark.parametrize("message_id", ["%FF", "%ED%A0%80", "msg_" + "a" * 3000, "%00"])
async def test_any_message_id_of_another_shape_is_404(
    client: Client, logs: Logs, message_id: str
) -> None:
    payload = await problem(await client.get(f"/v1/messages/{message_id}"), 404)
    assert slug(payload) == "message-not-found"
    logs.assert_no_traceback()


TWILIO = {
    "name": "twilio",
    "kind": "twilio",
    "account_sid": "AC1",
    "auth_token": "t" * 32,
    "from": "+15005550006",
}
VONAGE = {"name": "vonage", "kind": "vonage", "api_key": "k", "api_secret": "s", "from": "x"}


@pytest.fixture
async def webhooks(aiohttp_client: Any, sms_path: Path) -> Client:
    signed_vonage = {**VONAGE, "name": "signed", "signature_secret": "vonage-signature-secret"}
    return await app_client(
        aiohttp_client,
        sms_path,
        server={"public_url": PUBLIC, "receipt_secret": "receipt-secret-0123456789"},
        providers=[TWILIO, VONAGE, signed_vonage],
    )


@pytest.mark.parametrize("provider", [b"twilio", b"vonage", b"signed"])
@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (b"application/json", b"[" * DEEP + b"]" * DEEP),
        (b"application/json", b'{"a":' * DEEP + b"1" + b"}" * DEEP),
        (b"application/json", b'{"status": "delivered", "x": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
        (b"application/json", b"\xff\xfe"),
        (b"application/x-www-form-urlencoded", b"MessageStatus=\xff\xfe"),
        (b"application/x-www-form-urlencoded; charset=no-such-charset", b"a=b"),
        (b"multipart/form-data", b"xx"),
        (b"multipart/form-data; boundary=zz", b"garbage"),
    ],
    ids=[
        "deep-array",
        "deep-object",
        "deep-field",
        "json-not-utf8",
        "form-not-utf8",
        "unknown-charset",
        "multipart-no-boundary",
        "multipart-garbage",
    ],
)
async def test_malformed_webhook_bodies_are_4xx(
    webhooks: Client, logs: Logs, provider: bytes, content_type: bytes, body: bytes
) -> None:
    head = b"POST /v1/webhooks/" + provider + b" HTTP/1.1\r\nHost: x\r\n"
    head += b"Content-Type: " + content_type
    status, headers, payload = await raw_request(webhooks, head, body)
    assert 400 <= status < 500, payload
    raw_problem(status, headers, payload, status)
    logs.assert_no_traceback()


@pytest.mark.parametrize("signature", [b"\xff\xfe", b"abc\xed\xa0\x80", b"\xc3\x28"])
async def test_twilio_signature_that_is_not_utf8_is_403(
    webhooks: Client, logs: Logs, signature: bytes
) -> None:
    head = b"POST /v1/webhooks/twilio?message_id=msg_1 HTTP/1.1\r\nHost: x\r\n"
    head += b"Content-Type: application/x-www-form-urlencoded\r\n"
    head += b"X-Twilio-Signature: " + signature
    payload = raw_problem(*await raw_request(webhooks, head, b"MessageStatus=delivered"), 403)
    assert slug(payload) == "invalid-signature"
    logs.assert_no_traceback()


@pytest.mark.parametrize(
    "client_ref",
    [
        "msg_" + "a" * 32 + ".\u00b2." + "0" * 32,
        "msg_" + "a" * 32 + "." + "9" * 5000 + "." + "0" * 32,
        "msg_" + "a" * 32 + ".1.\u00e9" * 10,
    ],
    ids=["superscript-time", "huge-time", "non-ascii-tag"],
)
async def test_vonage_client_ref_with_odd_numbers_is_refused(
    webhooks: Client, logs: Logs, client_ref: str
) -> None:
    receipt = {"messageId": "0A01", "status": "delivered", "client-ref": client_ref}
    payload = await problem(await webhooks.get("/v1/webhooks/vonage", params=receipt), 403)
    assert slug(payload) == "invalid-receipt-tag"
    logs.assert_no_traceback()


async def test_a_request_the_http_parser_refuses_logs_no_traceback(
    client: Client, logs: Logs
) -> None:
    # Raw bytes in the request line: aiohttp answers 400 itself, before any middleware.
    status, _, _ = await raw_request(client, b"GET /v1/messages/a\xffb HTTP/1.1\r\nHost: x")
    assert status == 400
    logs.assert_no_traceback()


async def test_an_unexpected_error_is_a_500_problem_and_one_short_line(
    client: Client, logs: Logs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug a client can trigger at will must not flood the log with tracebacks: one line
    each, with the traceback on the first of its kind only (and at debug level always)."""

    async def broken(message_id: str) -> list[Any]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(client.app[AUDIT].store, "events", broken)
    middleware._TRACEBACKS._last.clear()
    for _ in range(3):
        payload = await problem(await client.get("/v1/messages/msg_" + "a" * 32), 500)
        assert payload == {"type": "about:blank", "title": "Internal Server Error", "status": 500}
    lines = [e for e in logs.events if e["event"] == "unhandled_error"]
    assert len(lines) == 3
    assert {e["route"] for e in lines} == {"/v1/messages/{message_id}"}
    assert {e["error"] for e in lines} == {"RuntimeError"}
    assert all(e["site"].startswith("test_bad_input.py:") for e in lines)
    assert [bool(e.get("exc_info")) for e in lines] == [True, False, False]
    debug = [e for e in logs.events if e["event"] == "unhandled_error_traceback"]
    assert len(debug) == 2
    assert all(e["log_level"] == "debug" and e["exc_info"] for e in debug)


async def test_redis_trouble_is_a_503_and_one_line_without_traceback(
    client: Client, logs: Logs, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable(message_id: str) -> list[Any]:
        raise RedisConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    monkeypatch.setattr(client.app[AUDIT].store, "events", unreachable)
    response = await client.get("/v1/messages/msg_" + "a" * 32)
    await problem(response, 503)
    [line] = [e for e in logs.events if e["event"] == "redis_error"]
    assert line["error"] == "ConnectionError"
    logs.assert_no_traceback()


@pytest.mark.parametrize(
    "content_type",
    [
        b"application/json; charset=\xff",
        b"\xff\xfe/json",
        b'application/json; charset="',
        b"application/json;;;=",
        b"application/x-www-form-urlencoded; charset=\xff",
    ],
)
@pytest.mark.parametrize("path", [b"/v1/messages", b"/v1/webhooks/vonage", b"/v1/webhooks/twilio"])
async def test_odd_content_types_are_4xx(
    webhooks: Client, logs: Logs, content_type: bytes, path: bytes
) -> None:
    head = b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: " + content_type
    status, headers, body = await raw_request(webhooks, head, b'{"to": "x"}')
    assert 400 <= status < 500, body
    raw_problem(status, headers, body, status)
    logs.assert_no_traceback()
