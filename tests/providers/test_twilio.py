"""TwilioProvider: the request it sends and how it classifies every kind of answer."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest

from smsgw.errors import (
    ConcurrencyLimited,
    PermanentProviderError,
    ProviderError,
    ThrottledError,
)
from smsgw.providers.base import OutgoingSms
from smsgw.providers.twilio import TwilioProvider
from smsgw.settings import TwilioProviderSettings
from tests.helpers import ScriptedHttp

pytestmark = pytest.mark.timeout(30)

SID = "AC" + "0123abcd" * 4
TOKEN = "tok-5ecret-a1b2c3d4e5f6"
FROM = "+15005550006"
TO = "+14155550100"
BODY = "Your smsgw code is 493817. It expires in 10 minutes."
BASE = "http://twilio.test"
PATH = f"/2010-04-01/Accounts/{SID}/Messages.json"


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
async def provider(http: ScriptedHttp) -> AsyncIterator[TwilioProvider]:
    p = TwilioProvider(settings(base_url=http.url))
    await p.start()
    yield p
    await p.close()


def form_of(http: ScriptedHttp, index: int = 0) -> dict[str, list[str]]:
    return http.sent(PATH)[index].form()


def expected_auth() -> str:
    return "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()


# --- request shape -----------------------------------------------------------------------


async def test_request_goes_to_account_messages_url_with_form_fields(
    provider: TwilioProvider, http: ScriptedHttp
) -> None:
    http.post(PATH, status=201, payload={"sid": "SM123", "status": "queued"})

    receipt = await provider.send(sms(validity_s=600))

    assert receipt.provider_message_id == "SM123"
    assert receipt.provider == "twilio"
    assert receipt.latency_s >= 0
    form = form_of(http)
    assert form == {
        "To": [TO],
        "Body": [BODY],
        "From": [FROM],
        "ValidityPeriod": ["600"],
    }
    headers = http.sent(PATH)[0].headers
    assert headers["Authorization"] == expected_auth()
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("validity_s", "expected"),
    [(0, "1"), (-5, "1"), (1, "1"), (599, "599"), (36_000, "36000"), (100_000, "36000")],
)
async def test_validity_period_is_clamped_to_twilio_range(
    provider: TwilioProvider, http: ScriptedHttp, validity_s: int, expected: str
) -> None:
    http.post(PATH, status=201, payload={"sid": "SM1"})
    await provider.send(sms(validity_s=validity_s))
    assert form_of(http)["ValidityPeriod"] == [expected]


async def test_no_validity_period_for_messages_without_expiry(
    provider: TwilioProvider, http: ScriptedHttp
) -> None:
    http.post(PATH, status=201, payload={"sid": "SM1"})
    await provider.send(sms(validity_s=None))
    assert "ValidityPeriod" not in form_of(http)


async def test_messaging_service_sid_replaces_from(http: ScriptedHttp) -> None:
    p = TwilioProvider(
        settings(from_=None, messaging_service_sid="MG" + "9" * 32, base_url=http.url)
    )
    await p.start()
    try:
        http.post(PATH, status=201, payload={"sid": "SM1", "status": "accepted"})
        await p.send(sms())
    finally:
        await p.close()
    form = form_of(http)
    assert form["MessagingServiceSid"] == ["MG" + "9" * 32]
    assert "From" not in form


async def test_body_with_reserved_characters_survives_form_encoding(
    provider: TwilioProvider, http: ScriptedHttp
) -> None:
    body = "Code 1234 & more = 100% sûr + ok?\nnext line"
    http.post(PATH, status=201, payload={"sid": "SM1"})
    await provider.send(sms(body=body))
    assert form_of(http)["Body"] == [body]


# --- classification ----------------------------------------------------------------------


async def test_429_is_throttled_with_retry_after_from_header(
    provider: TwilioProvider, http: ScriptedHttp
) -> None:
    http.post(
        PATH,
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


@pytest.mark.parametrize(
    ("retry_after", "expected"), [(None, 0.0), ("2", 2.0), ("0.25", 0.25), ("9999", 60.0)]
)
async def test_429_with_20429_is_the_concurrency_limit(
    provider: TwilioProvider, http: ScriptedHttp, retry_after: str | None, expected: float
) -> None:
    # Too many requests open at once, not too many per second: no pause unless Twilio
    # names one.
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    http.post(
        PATH,
        status=429,
        payload={"code": 20429, "message": "Too Many Requests", "status": 429},
        headers=headers,
    )
    with pytest.raises(ConcurrencyLimited) as info:
        await provider.send(sms())
    assert (info.value.retry_after_s, info.value.code, info.value.ambiguous) == (
        expected,
        "20429",
        False,
    )


@pytest.mark.parametrize(
    ("payload", "retry_after", "expected"),
    [
        ({"code": 14107, "message": "Rate limit exceeded"}, None, 1.0),
        ({"code": 63017, "message": "Rate limit exceeded"}, "3", 3.0),
        ({"message": "Too Many Requests"}, None, 1.0),
        (None, "5", 5.0),
    ],
    ids=["14107", "63017", "no-code", "no-json"],
)
async def test_any_other_429_is_a_rate_throttle(
    provider: TwilioProvider,
    http: ScriptedHttp,
    payload: dict[str, Any] | None,
    retry_after: str | None,
    expected: float,
) -> None:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    http.post(PATH, status=429, payload=payload, headers=headers)
    with pytest.raises(ThrottledError) as info:
        await provider.send(sms())
    assert type(info.value) is ThrottledError
    assert info.value.retry_after_s == expected


async def test_code_20429_throttles_even_without_http_429(
    provider: TwilioProvider, http: ScriptedHttp
) -> None:
    http.post(PATH, status=400, payload={"code": 20429, "message": "Too many requests"})
    with pytest.raises(ThrottledError) as info:
        await provider.send(sms())
    assert type(info.value) is ThrottledError  # the concurrency limit is 429 with 20429


@pytest.mark.parametrize("code", [21211, 21610, 21614, 21408])
async def test_permanent_codes(provider: TwilioProvider, http: ScriptedHttp, code: int) -> None:
    http.post(PATH, status=400, payload={"code": code, "message": "nope", "status": 400})
    with pytest.raises(PermanentProviderError) as info:
        await provider.send(sms())
    assert info.value.code == str(code)
    assert "rejected with HTTP" not in info.value.detail  # the table's own reason is used


async def test_unknown_4xx_code_is_permanent_with_generic_reason(
    provider: TwilioProvider, http: ScriptedHttp
) -> None:
    http.post(PATH, status=400, payload={"code": 99999, "message": "new thing"})
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
        {"hang": True},
        {"status": 302, "headers": {"Location": f"https://example.com/?token={TOKEN}"}},
    ],
    ids=["permanent", "unknown", "auth", "throttled", "5xx", "no-sid", "timeout", "redirect"],
)
async def test_no_error_text_contains_token_or_body(
    http: ScriptedHttp, answer: dict[str, Any]
) -> None:
    http.post(PATH, **answer)
    provider = TwilioProvider(settings(base_url=http.url, timeout_s=0.2))
    await provider.start()
    try:
        with pytest.raises(ProviderError) as info:
            await provider.send(sms())
    finally:
        await provider.close()
    for text in _error_texts(info.value):
        assert TOKEN not in text
        assert BODY not in text
        assert "493817" not in text
        assert TO not in text
