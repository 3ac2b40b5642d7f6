"""The bad-input matrix: every POST route refuses bad requests with a problem and sends nothing."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from tests.helpers import read_sms

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
