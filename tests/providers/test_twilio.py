"""TwilioProvider: the request it sends and how it classifies every kind of answer."""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from smsgw.errors import (
    PermanentProviderError,
    ProviderError,
    RetryableProviderError,
    ThrottledError,
)
from smsgw.providers.base import OutgoingSms
from smsgw.providers.twilio import TwilioProvider
from smsgw.settings import TwilioProviderSettings
from tests.helpers import FakeHttp

pytestmark = pytest.mark.timeout(30)

SID = "AC" + "0123abcd" * 4
TOKEN = "tok-5ecret-a1b2c3d4e5f6"
FROM = "+15005550006"
TO = "+14155550100"
BODY = "Your smsgw code is 493817. It expires in 10 minutes."
BASE = "http://twilio.test"
URL_ = f"{BASE}/2010-04-01/Accounts/{SID}/Messages.json"


def settings(**overrides: Any) -> TwilioProviderSettings:
    values: dict[str, Any] = {
        "name": "twilio",
        "account_sid": SID,
        "auth_token": TOKEN,
        "from_": FROM,
        "base_url": BASE,
        "timeout_s": 5.0,
        "connect_timeout_s": 1.0,
    }
    values.update(overrides)
    return TwilioProviderSettings(**values)


def sms(validity_s: int | None = 600, body: str = BODY) -> OutgoingSms:
    return OutgoingSms(message_id="msg_1", to=TO, body=body, validity_s=validity_s)


@pytest.fixture
async def provider() -> AsyncIterator[TwilioProvider]:
    p = TwilioProvider(settings())
    await p.start()
    yield p
    await p.close()


@pytest.fixture
def fake() -> Any:
    with FakeHttp() as mocked:
        yield mocked


def form_of(mocked: Any, url: str = URL_, index: int = 0) -> dict[str, list[str]]:
    call = mocked.requests[("POST", URL(url))][index]
    data = call.kwargs["data"]
    assert isinstance(data, bytes | str)
    text = data.decode() if isinstance(data, bytes) else data
    return parse_qs(text, keep_blank_values=True, strict_parsing=True)


def expected_auth() -> str:
    return "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()


# --- request shape -----------------------------------------------------------------------


async def test_request_goes_to_account_messages_url_with_form_fields(
    provider: TwilioProvider, fake: Any
) -> None:
    fake.post(URL_, status=201, payload={"sid": "SM123", "status": "queued"})

    receipt = await provider.send(sms(validity_s=600))

    assert receipt.provider_message_id == "SM123"
    assert receipt.provider == "twilio"
    assert receipt.latency_s >= 0
    form = form_of(fake)
    assert form == {
        "To": [TO],
        "Body": [BODY],
        "From": [FROM],
        "ValidityPeriod": ["600"],
    }
    headers = fake.requests[("POST", URL(URL_))][0].kwargs["headers"]
    assert headers["Authorization"] == expected_auth()
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"


async def test_trailing_slash_in_base_url_is_not_doubled(fake: Any) -> None:
    p = TwilioProvider(settings(base_url=BASE + "/"))
    await p.start()
    try:
        fake.post(URL_, status=201, payload={"sid": "SM1"})
        assert (await p.send(sms())).provider_message_id == "SM1"
    finally:
        await p.close()


@pytest.mark.parametrize(
    ("validity_s", "expected"),
    [(0, "1"), (-5, "1"), (1, "1"), (599, "599"), (36_000, "36000"), (100_000, "36000")],
)
async def test_validity_period_is_clamped_to_twilio_range(
    provider: TwilioProvider, fake: Any, validity_s: int, expected: str
) -> None:
    fake.post(URL_, status=201, payload={"sid": "SM1"})
    await provider.send(sms(validity_s=validity_s))
    assert form_of(fake)["ValidityPeriod"] == [expected]


async def test_no_validity_period_for_messages_without_expiry(
    provider: TwilioProvider, fake: Any
) -> None:
    fake.post(URL_, status=201, payload={"sid": "SM1"})
    await provider.send(sms(validity_s=None))
    assert "ValidityPeriod" not in form_of(fake)


async def test_messaging_service_sid_replaces_from(fake: Any) -> None:
    p = TwilioProvider(settings(from_=None, messaging_service_sid="MG" + "9" * 32))
    await p.start()
    try:
        fake.post(URL_, status=201, payload={"sid": "SM1", "status": "accepted"})
        await p.send(sms())
    finally:
        await p.close()
    form = form_of(fake)
    assert form["MessagingServiceSid"] == ["MG" + "9" * 32]
    assert "From" not in form


async def test_body_with_reserved_characters_survives_form_encoding(
    provider: TwilioProvider, fake: Any
) -> None:
    body = "Code 1234 & more = 100% sûr + ok?\nnext line"
    fake.post(URL_, status=201, payload={"sid": "SM1"})
    await provider.send(sms(body=body))
    assert form_of(fake)["Body"] == [body]


async def test_wire_request_has_basic_auth_and_no_user_agent(
    aiohttp_server: Callable[..., Any],
) -> None:
    """Checked on a real socket: session-level headers are invisible to aioresponses."""
    seen: list[tuple[dict[str, str], str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((dict(request.headers), request.path, await request.text()))
        return web.json_response({"sid": "SMwire", "status": "queued"}, status=201)

    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", handler)
    server = await aiohttp_server(app)
    p = TwilioProvider(settings(base_url=str(server.make_url(""))))
    await p.start()
    try:
        receipt = await p.send(sms(validity_s=120))
    finally:
        await p.close()

    assert receipt.provider_message_id == "SMwire"
    [(headers, path, body)] = seen
    assert path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert headers["Authorization"] == expected_auth()
    assert "User-Agent" not in headers
    assert parse_qs(body) == {
        "To": [TO],
        "Body": [BODY],
        "From": [FROM],
        "ValidityPeriod": ["120"],
    }


async def test_send_before_start_is_a_programming_error() -> None:
    p = TwilioProvider(settings())
    with pytest.raises(RuntimeError, match="start"):
        await p.send(sms())


# --- classification ----------------------------------------------------------------------


async def test_success_without_sid_is_ambiguous_retryable(
    provider: TwilioProvider, fake: Any
) -> None:
    fake.post(URL_, status=201, payload={"status": "queued"})
    with pytest.raises(RetryableProviderError) as info:
        await provider.send(sms())
    assert info.value.ambiguous is True
    assert not isinstance(info.value, ThrottledError)


async def test_429_is_throttled_with_retry_after_from_header(
    provider: TwilioProvider, fake: Any
) -> None:
    fake.post(
        URL_,
        status=429,
        payload={"code": 20429, "message": "Too Many Requests", "status": 429},
        headers={"Retry-After": "7"},
    )
    with pytest.raises(ThrottledError) as info:
        await provider.send(sms())
    assert info.value.retry_after_s == 7.0
    assert info.value.code == "20429"
    assert info.value.ambiguous is False
    assert info.value.provider == "twilio"


async def test_429_without_body_or_header_waits_a_default_second(
    provider: TwilioProvider, fake: Any
) -> None:
    fake.post(URL_, status=429, body="", content_type="text/plain")
    with pytest.raises(ThrottledError) as info:
        await provider.send(sms())
    assert info.value.retry_after_s == 1.0
    assert info.value.code is None


async def test_code_20429_throttles_even_without_http_429(
    provider: TwilioProvider, fake: Any
) -> None:
    fake.post(URL_, status=400, payload={"code": 20429, "message": "Too many requests"})
    with pytest.raises(ThrottledError):
        await provider.send(sms())


@pytest.mark.parametrize(
    ("header", "expected"),
    [("0.5", 0.5), ("not-a-number", 1.0), ("Wed, 21 Oct 2015 07:28:00 GMT", 1.0), ("9999", 60.0)],
)
async def test_retry_after_parsing_is_bounded(
    provider: TwilioProvider, fake: Any, header: str, expected: float
) -> None:
    fake.post(URL_, status=429, payload={"code": 20429}, headers={"Retry-After": header})
    with pytest.raises(ThrottledError) as info:
        await provider.send(sms())
    assert info.value.retry_after_s == expected


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_retryable_and_ambiguous(
    provider: TwilioProvider, fake: Any, status: int
) -> None:
    fake.post(URL_, status=status, body="<html>oops</html>", content_type="text/html")
    with pytest.raises(RetryableProviderError) as info:
        await provider.send(sms())
    assert info.value.ambiguous is True
    assert not isinstance(info.value, ThrottledError)
    assert str(status) in info.value.detail


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_our_configuration_failing_is_retryable_not_permanent(
    provider: TwilioProvider, fake: Any, status: int
) -> None:
    fake.post(URL_, status=status, payload={"code": 20003, "message": "Authenticate"})
    with pytest.raises(RetryableProviderError) as info:
        await provider.send(sms())
    assert info.value.ambiguous is False
    assert not isinstance(info.value, ThrottledError)


@pytest.mark.parametrize("code", [21211, 21610, 21614, 21408])
async def test_permanent_codes(provider: TwilioProvider, fake: Any, code: int) -> None:
    fake.post(URL_, status=400, payload={"code": code, "message": "nope", "status": 400})
    with pytest.raises(PermanentProviderError) as info:
        await provider.send(sms())
    assert info.value.code == str(code)
    assert "rejected with HTTP" not in info.value.detail  # the table's own reason is used


async def test_unknown_4xx_code_is_permanent_with_generic_reason(
    provider: TwilioProvider, fake: Any
) -> None:
    fake.post(URL_, status=400, payload={"code": 99999, "message": "new thing"})
    with pytest.raises(PermanentProviderError) as info:
        await provider.send(sms())
    assert info.value.detail == "rejected with HTTP 400"
    assert info.value.code == "99999"


async def test_timeout_is_ambiguous(provider: TwilioProvider, fake: Any) -> None:
    fake.post(URL_, exception=TimeoutError())
    with pytest.raises(RetryableProviderError) as info:
        await provider.send(sms())
    assert info.value.ambiguous is True
    assert isinstance(info.value.__cause__, TimeoutError)


async def test_connect_timeout_is_not_ambiguous(provider: TwilioProvider, fake: Any) -> None:
    fake.post(URL_, exception=aiohttp.ConnectionTimeoutError())
    with pytest.raises(RetryableProviderError) as info:
        await provider.send(sms())
    assert info.value.ambiguous is False


async def test_connection_lost_mid_request_is_ambiguous(
    provider: TwilioProvider, fake: Any
) -> None:
    fake.post(URL_, exception=aiohttp.ServerDisconnectedError())
    with pytest.raises(RetryableProviderError) as info:
        await provider.send(sms())
    assert info.value.ambiguous is True


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_connection_refused_is_retryable_not_ambiguous() -> None:
    p = TwilioProvider(settings(base_url=f"http://127.0.0.1:{_closed_port()}"))
    await p.start()
    try:
        with pytest.raises(RetryableProviderError) as info:
            await p.send(sms())
    finally:
        await p.close()
    assert info.value.ambiguous is False
    assert not isinstance(info.value, ThrottledError)
    assert TOKEN not in str(info.value.__cause__)


async def test_real_read_timeout_is_ambiguous(aiohttp_server: Callable[..., Any]) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await request.read()
        await release.wait()
        return web.json_response({"sid": "SMlate"}, status=201)

    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", slow)
    server = await aiohttp_server(app)
    p = TwilioProvider(settings(base_url=str(server.make_url("")), timeout_s=0.2))
    await p.start()
    try:
        with pytest.raises(RetryableProviderError) as info:
            await p.send(sms())
    finally:
        release.set()
        await p.close()
    assert info.value.ambiguous is True


# --- secrecy ------------------------------------------------------------------------------


def _error_texts(exc: BaseException) -> list[str]:
    texts = [str(exc), repr(exc)]
    if isinstance(exc, ProviderError):
        texts.append(exc.detail)
        texts.append(str(exc.code))
    if exc.__cause__ is not None:
        texts += [str(exc.__cause__), repr(exc.__cause__)]
    return texts


# Twilio's error messages can echo what was sent; none of it may end up in our errors.
_ECHO = f"The 'To' number {TO} is not valid. Body: {BODY} auth {TOKEN}"


@pytest.mark.parametrize(
    "answer",
    [
        {"status": 400, "payload": {"code": 21211, "message": _ECHO}},
        {"status": 400, "payload": {"code": 12345, "message": _ECHO}},
        {"status": 401, "payload": {"code": 20003, "message": _ECHO}},
        {"status": 429, "payload": {"code": 20429, "message": _ECHO}},
        {"status": 500, "body": _ECHO, "content_type": "text/plain"},
        {"status": 201, "payload": {"message": _ECHO}},
        {"exception": TimeoutError()},
    ],
    ids=["permanent", "unknown", "auth", "throttled", "5xx", "no-sid", "timeout"],
)
async def test_no_error_text_contains_token_or_body(
    provider: TwilioProvider, fake: Any, answer: dict[str, Any]
) -> None:
    fake.post(URL_, **answer)
    with pytest.raises(ProviderError) as info:
        await provider.send(sms())
    for text in _error_texts(info.value):
        assert TOKEN not in text
        assert BODY not in text
        assert "493817" not in text
        assert TO not in text
