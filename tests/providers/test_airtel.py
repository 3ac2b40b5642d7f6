"""AirtelProvider: request shape, India only, the outcome table, secrecy, settings, and end
to end against the fake provider server."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer

from smsgw.app import create_app
from smsgw.errors import (
    ConfigError,
    PermanentProviderError,
    ProviderError,
    RetryableProviderError,
    ThrottledError,
)
from smsgw.providers import build_provider
from smsgw.providers.airtel import HTTP_OUTCOMES, AirtelProvider
from smsgw.providers.base import OutgoingSms
from smsgw.settings import AirtelProviderSettings, parse_settings
from testkit.fake_provider import AirtelAccount, FakeProvider, Faults
from tests.helpers import ScriptedHttp, code_in, make_settings

pytestmark = pytest.mark.timeout(30)

CUSTOMER = "cust-0042"
USER = "acme-api"
PASSWORD = "airtel-pa55-w0rd-x1"
HEADER = "ACMEOT"
ENTITY = "1201159543060917386"
TEMPLATE = "1207161729866691748"
TO = "+919876543210"
BODY = "Your smsgw code is 493817. It expires in 10 minutes."
BASE = "http://airtel.test"
PATH = "/api/v1/send-sms"


def settings(**overrides: Any) -> AirtelProviderSettings:
    values: dict[str, Any] = {
        "name": "airtel",
        "customer_id": CUSTOMER,
        "username": USER,
        "password": PASSWORD,
        "source_address": HEADER,
        "dlt_entity_id": ENTITY,
        "dlt_template_id": TEMPLATE,
        "base_url": BASE,
        "timeout_s": 5.0,
        "connect_timeout_s": 1.0,
    }
    values.update(overrides)
    return AirtelProviderSettings(**values)


def sms(to: str = TO, body: str = BODY) -> OutgoingSms:
    return OutgoingSms(message_id="msg_1", to=to, body=body, validity_s=600)


def ok(request_id: Any = "5f1c0e8a-req") -> dict[str, Any]:
    return {
        "status": "SUCCESS",
        "message": "Message submitted",
        "messageRequestId": request_id,
        "errorCode": None,
        "errorDescription": None,
    }


def failed(code: Any = "E100", description: str = "refused") -> dict[str, Any]:
    return {
        "status": "FAILURE",
        "messageRequestId": None,
        "errorCode": code,
        "errorDescription": description,
    }


@pytest.fixture
async def provider(http: ScriptedHttp) -> AsyncIterator[AirtelProvider]:
    p = AirtelProvider(settings(base_url=http.url))
    await p.start()
    yield p
    await p.close()


def call_of(http: ScriptedHttp, index: int = 0) -> tuple[dict[str, Any], Mapping[str, str]]:
    request = http.sent(PATH)[index]
    return orjson.loads(request.body), request.headers


# --- request shape -----------------------------------------------------------------------


async def test_request_is_json_with_dlt_ids_and_national_number(
    provider: AirtelProvider, http: ScriptedHttp
) -> None:
    http.post(PATH, status=200, payload=ok("req-1"))

    receipt = await provider.send(sms())

    assert (receipt.provider, receipt.provider_message_id) == ("airtel", "req-1")
    body, headers = call_of(http)
    assert body == {
        "customerId": CUSTOMER,
        "destinationAddress": ["9876543210"],
        "message": BODY,
        "sourceAddress": HEADER,
        "messageType": "SERVICE_IMPLICIT",
        "dltTemplateId": TEMPLATE,
        "entityId": ENTITY,
    }
    expected = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert headers["Authorization"] == f"Basic {expected}"
    assert headers["Content-Type"] == "application/json"


async def test_otp_flag_and_message_type_come_from_settings(http: ScriptedHttp) -> None:
    p = AirtelProvider(settings(otp=True, message_type="TRANSACTIONAL", base_url=http.url))
    await p.start()
    try:
        http.post(PATH, status=200, payload=ok())
        await p.send(sms())
    finally:
        await p.close()
    body, _ = call_of(http)
    assert body["otp"] is True
    assert body["messageType"] == "TRANSACTIONAL"


@pytest.mark.parametrize(
    "to",
    ["+14155550100", "+447911123456", "+9198765432", "+9198765432101", "+92987654321"],
)
async def test_non_indian_numbers_are_refused_without_a_request(
    provider: AirtelProvider, http: ScriptedHttp, to: str
) -> None:
    with pytest.raises(PermanentProviderError) as info:
        await provider.send(sms(to=to))
    assert "+91" in info.value.detail
    assert to not in str(info.value)
    assert http.requests == []
    # The connection ready() took went back to the pool unused.
    stats = provider.pool_stats()
    assert stats is not None
    assert (stats.open, stats.idle, stats.requests) == (1, 1, 0)


async def test_a_refusal_by_encode_after_ready_gives_the_connection_back(
    http: ScriptedHttp,
) -> None:
    # The dispatcher's path: ready(), then launch(), which refuses before writing.
    http.post(PATH, status=200, payload=ok("req-1"))
    p = AirtelProvider(settings(base_url=http.url, max_in_flight=1, timeout_s=0.5))
    await p.start()
    try:
        handle = await p.ready()
        with pytest.raises(PermanentProviderError):
            handle.launch(sms(to="+14155550100"))
        # With one connection at most, this would fail as "no free connection" otherwise.
        receipt = await p.send(sms())
    finally:
        await p.close()
    assert receipt.provider_message_id == "req-1"
    assert len(http.requests) == 1


def test_factory_builds_an_airtel_provider() -> None:
    assert isinstance(build_provider(settings()), AirtelProvider)


# --- classification ----------------------------------------------------------------------


@pytest.mark.parametrize("request_id", ["abc-123", 98765])
async def test_success_returns_the_request_id(
    provider: AirtelProvider, http: ScriptedHttp, request_id: Any
) -> None:
    http.post(PATH, status=200, payload=ok(request_id))
    assert (await provider.send(sms())).provider_message_id == str(request_id)


@pytest.mark.parametrize("status", [200, 201, 202])
@pytest.mark.parametrize("code", ["E100", 4001, "SOME_NEW_CODE"])
async def test_error_code_in_a_2xx_is_permanent(
    provider: AirtelProvider, http: ScriptedHttp, status: int, code: Any
) -> None:
    http.post(PATH, status=status, payload={**failed(code), "messageRequestId": "r-1"})
    with pytest.raises(PermanentProviderError) as info:
        await provider.send(sms())
    assert info.value.code == str(code)


async def test_error_code_that_is_not_a_code_is_still_an_error_but_not_kept(
    provider: AirtelProvider, http: ScriptedHttp
) -> None:
    http.post(
        PATH, status=200, payload={**failed("Invalid template: see text"), "messageRequestId": "r"}
    )
    with pytest.raises(PermanentProviderError) as info:
        await provider.send(sms())
    assert info.value.code is None


@pytest.mark.parametrize(
    "answer",
    [
        {"payload": ok(None)},
        {"payload": ok("")},
        {"payload": ok(True)},
        {"payload": {"status": "SUCCESS"}},
        {"body": "accepted", "content_type": "text/plain"},
    ],
    ids=["null-id", "empty-id", "bool-id", "no-id", "not-json"],
)
async def test_2xx_without_request_id_is_ambiguous(
    provider: AirtelProvider, http: ScriptedHttp, answer: dict[str, Any]
) -> None:
    http.post(PATH, status=200, **answer)
    with pytest.raises(RetryableProviderError) as info:
        await provider.send(sms())
    assert info.value.ambiguous is True
    assert not isinstance(info.value, ThrottledError)


@pytest.mark.parametrize(("status", "row"), sorted(HTTP_OUTCOMES.items()))
async def test_each_http_status_in_the_table(
    provider: AirtelProvider, http: ScriptedHttp, status: int, row: tuple[str, str]
) -> None:
    outcome, reason = row
    http.post(PATH, status=status, payload=failed("X1"), headers={"Retry-After": "3"})
    with pytest.raises(RetryableProviderError) as info:
        await provider.send(sms())
    assert (info.value.detail, info.value.code, info.value.ambiguous) == (reason, "X1", False)
    if outcome == "throttled":
        assert isinstance(info.value, ThrottledError)
        assert info.value.retry_after_s == 3.0
    else:
        assert type(info.value) is RetryableProviderError


@pytest.mark.parametrize("status", [400, 405, 409, 413, 422])
async def test_other_4xx_are_permanent_and_keep_the_error_code(
    provider: AirtelProvider, http: ScriptedHttp, status: int
) -> None:
    http.post(PATH, status=status, payload=failed("INVALID_TEMPLATE"))
    with pytest.raises(PermanentProviderError) as info:
        await provider.send(sms())
    assert info.value.code == "INVALID_TEMPLATE"
    assert info.value.detail == f"rejected with HTTP {status}"


# --- secrecy ------------------------------------------------------------------------------

_ECHO = f"password {PASSWORD} for {USER}: {BODY} to 9876543210"


@pytest.mark.parametrize(
    "answer",
    [
        {"status": 200, "payload": failed(_ECHO, _ECHO)},
        {"status": 400, "payload": failed("E1", _ECHO)},
        {"status": 401, "payload": failed("E2", _ECHO)},
        {"status": 429, "payload": failed("E3", _ECHO)},
        {"status": 500, "body": _ECHO, "content_type": "text/plain"},
        {"status": 200, "payload": {"message": _ECHO}},
        {"hang": True},
    ],
    ids=["code-echo", "4xx", "auth", "throttled", "5xx", "no-id", "timeout"],
)
async def test_no_error_or_log_carries_password_body_or_number(
    http: ScriptedHttp, answer: dict[str, Any]
) -> None:
    http.post(PATH, **answer)
    provider = AirtelProvider(settings(base_url=http.url, timeout_s=0.2))
    await provider.start()
    try:
        with structlog.testing.capture_logs() as logs, pytest.raises(ProviderError) as info:
            await provider.send(sms())
    finally:
        await provider.close()
    assert [entry["event"] for entry in logs] == ["provider_error"]
    exc = info.value
    texts = [str(exc), repr(exc), exc.detail, str(exc.code), *map(repr, logs)]
    if exc.__cause__ is not None:
        texts += [str(exc.__cause__), repr(exc.__cause__)]
    for text in texts:
        for secret in (PASSWORD, BODY, "493817", "9876543210"):
            assert secret not in text


# --- settings -----------------------------------------------------------------------------

ENTRY: dict[str, Any] = {
    "name": "airtel",
    "kind": "airtel",
    "customer_id": CUSTOMER,
    "username": USER,
    "password": PASSWORD,
    "source_address": HEADER,
    "dlt_entity_id": ENTITY,
    "dlt_template_id": TEMPLATE,
    "base_url": "https://iqsms.example.in",
}


def test_settings_defaults_to_india_and_service_implicit() -> None:
    [airtel] = parse_settings({"providers": [ENTRY]}, env={}).providers
    assert isinstance(airtel, AirtelProviderSettings)
    assert airtel.countries == ("IN",)
    assert airtel.message_type == "SERVICE_IMPLICIT"
    assert airtel.otp is False
    assert PASSWORD not in repr(airtel)


@pytest.mark.parametrize(
    "field",
    [
        "customer_id",
        "username",
        "password",
        "source_address",
        "dlt_entity_id",
        "dlt_template_id",
        "base_url",
    ],
)
def test_missing_field_names_the_key(field: str) -> None:
    entry = {k: v for k, v in ENTRY.items() if k != field}
    with pytest.raises(ConfigError) as info:
        parse_settings({"providers": [entry]}, env={})
    assert info.value.key == f"providers[0].{field}"
    assert "missing" in info.value.problem


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"customer_id": ""}, "customer_id"),
        ({"username": " "}, "username"),
        ({"password": ""}, "password"),
        ({"source_address": "ACME OTP"}, "source_address"),
        ({"source_address": ""}, "source_address"),
        ({"dlt_entity_id": "12AB"}, "dlt_entity_id"),
        ({"dlt_template_id": ""}, "dlt_template_id"),
        ({"message_type": "OTP"}, "message_type"),
        ({"countries": ["*"]}, "countries"),
        ({"countries": ["IN", "US"]}, "countries"),
        ({"base_url": "iqsms.airtel.in"}, "base_url"),
        ({"otp": "yes"}, "otp"),
        ({"weight": -1}, "weight"),
    ],
)
def test_bad_settings_name_the_key(change: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings({"providers": [{**ENTRY, **change}]}, env={})
    assert info.value.key == f"providers[0].{key}"
    assert PASSWORD not in str(info.value)


# --- end to end against the fake provider server -----------------------------------------

ACCOUNT = AirtelAccount(customer_id="e2e-cust", username="e2e-user", password="e2e-pass-word")


@pytest.fixture
async def served(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> AsyncIterator[Callable[..., Awaitable[tuple[FakeProvider, AirtelProvider]]]]:
    providers: list[AirtelProvider] = []

    async def build(
        faults: Faults | None = None, **overrides: Any
    ) -> tuple[FakeProvider, AirtelProvider]:
        fake = FakeProvider(airtel=ACCOUNT, faults=faults, seed=5)
        server = await aiohttp_server(fake.make_app())
        values = {
            "customer_id": ACCOUNT.customer_id,
            "username": ACCOUNT.username,
            "password": ACCOUNT.password,
            "base_url": str(server.make_url("")),
            **overrides,
        }
        provider = AirtelProvider(settings(**values))
        await provider.start()
        providers.append(provider)
        return fake, provider

    yield build
    for provider in providers:
        await provider.close()


async def test_e2e_accepted_and_recorded_in_e164(served: Any) -> None:
    fake, provider = await served()
    receipt = await provider.send(sms())
    [accepted] = fake.accepted
    assert (accepted.to, accepted.body, accepted.sid) == (TO, BODY, receipt.provider_message_id)
    [record] = fake.records
    assert (record.provider, record.status, record.code) == ("airtel", 200, None)


@pytest.mark.parametrize(
    ("faults", "overrides", "error_type", "ambiguous", "status"),
    [
        (Faults(throttle_429=1.0, retry_after_s=2), {}, ThrottledError, False, 429),
        (Faults(fail_5xx=1.0), {}, RetryableProviderError, True, 500),
        (Faults(reject_numbers=frozenset({TO})), {}, PermanentProviderError, None, 400),
        (None, {"password": "wrong-pass"}, RetryableProviderError, False, 401),
        (None, {"customer_id": "someone-else"}, PermanentProviderError, None, 400),
    ],
    ids=["throttled", "5xx", "rejected", "bad-password", "bad-customer"],
)
async def test_e2e_faults_classify_as_airtel_answers_them(
    served: Any,
    faults: Faults | None,
    overrides: dict[str, Any],
    error_type: type[ProviderError],
    ambiguous: bool | None,
    status: int,
) -> None:
    fake, provider = await served(faults, **overrides)
    with pytest.raises(ProviderError) as info:
        await provider.send(sms())
    assert type(info.value) is error_type
    if isinstance(info.value, ThrottledError):
        assert info.value.retry_after_s == 2.0
    if ambiguous is not None:
        assert isinstance(info.value, RetryableProviderError)
        assert info.value.ambiguous is ambiguous
    assert fake.accepted == []
    [record] = fake.records
    assert (record.status, record.to) == (status, TO)
    assert record.code == info.value.code


async def test_e2e_hang_times_out_as_ambiguous(served: Any) -> None:
    fake, provider = await served(Faults(hang=1.0), timeout_s=0.2)
    with pytest.raises(RetryableProviderError) as info:
        await provider.send(sms())
    assert info.value.ambiguous is True
    assert fake.by_status == {0: 1}


Client = TestClient[Any, Any]


async def test_e2e_otp_to_india_through_the_gateway(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    aiohttp_client: Callable[..., Awaitable[Client]],
    sms_path: Path,
) -> None:
    fake = FakeProvider(airtel=ACCOUNT, seed=1)
    server = await aiohttp_server(fake.make_app())
    entry = {
        **ENTRY,
        "customer_id": ACCOUNT.customer_id,
        "username": ACCOUNT.username,
        "password": ACCOUNT.password,
        "base_url": str(server.make_url("")),
    }
    client = await aiohttp_client(create_app(make_settings(sms_path, providers=[entry])))
    response = await client.post("/v1/otp", json={"phone": TO, "ttl_s": 120})
    assert response.status == 202
    started = await response.json()
    deadline = time.monotonic() + 5
    while not fake.accepted:
        assert time.monotonic() < deadline, fake.records
        await asyncio.sleep(0.01)
    [accepted] = fake.accepted
    assert accepted.to == TO
    response = await client.post(
        "/v1/otp/verify", json={"id": started["id"], "code": code_in(accepted.body)}
    )
    assert (await response.json())["status"] == "approved"
