"""TwilioProvider: the request it sends and how it classifies every kind of answer."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import pytest
from yarl import URL

from smsgw.errors import (
    PermanentProviderError,
    ProviderError,
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


# --- classification ----------------------------------------------------------------------


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


async def test_code_20429_throttles_even_without_http_429(
    provider: TwilioProvider, fake: Any
) -> None:
    fake.post(URL_, status=400, payload={"code": 20429, "message": "Too many requests"})
    with pytest.raises(ThrottledError):
        await provider.send(sms())


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
