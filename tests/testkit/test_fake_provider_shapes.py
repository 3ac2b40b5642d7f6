"""The fake provider's Vonage and Airtel IQ shapes: auth, validation, faults, records."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from testkit.fake_provider import (
    HUNG,
    AirtelAccount,
    FakeProvider,
    FakeTwilio,
    Faults,
    VonageAccount,
)
from testkit.processes import start_process, stop_process

pytestmark = pytest.mark.timeout(30)

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]

VONAGE = VonageAccount(api_key="key12345", api_secret="vonage-secret")
AIRTEL = AirtelAccount(customer_id="cust-1", username="user-1", password="pass-1")
UK = "+447911123456"
INDIA = "+919876543210"


def basic(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


def vonage_form(**overrides: str | None) -> dict[str, str]:
    """A valid form; an override of None drops the field."""
    form: dict[str, str | None] = {
        "api_key": VONAGE.api_key,
        "api_secret": VONAGE.api_secret,
        "from": "AcmeInc",
        "to": UK[1:],
        "text": "Your code is 123456",
        "client-ref": "msg_1",
    }
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


def airtel_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customerId": AIRTEL.customer_id,
        "destinationAddress": [INDIA[3:]],
        "message": "Your code is 123456",
        "sourceAddress": "ACMEOT",
        "messageType": "SERVICE_IMPLICIT",
        "dltTemplateId": "1207161729866691748",
        "entityId": "1201159543060917386",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def make_fake(faults: Faults | None = None, seed: int = 7) -> FakeProvider:
    return FakeProvider(vonage=VONAGE, airtel=AIRTEL, faults=faults, seed=seed)


@pytest.fixture
def fake() -> FakeProvider:
    return make_fake()


@pytest.fixture
async def client(fake: FakeProvider, aiohttp_client: MakeClient) -> Client:
    return await aiohttp_client(fake.make_app())


async def vonage(
    client: Client, form: dict[str, str], timeout: float | None = None
) -> tuple[int, Any]:
    client_timeout = aiohttp.ClientTimeout(total=timeout) if timeout else None
    async with client.post("/sms/json", data=form, timeout=client_timeout) as r:
        return r.status, await r.json()


async def airtel(
    client: Client,
    body: Any,
    authorization: str | None = None,
    timeout: float | None = None,
) -> tuple[int, Any, Any]:
    headers = {"Authorization": authorization or basic(AIRTEL.username, AIRTEL.password)}
    client_timeout = aiohttp.ClientTimeout(total=timeout) if timeout else None
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
    async with client.post(
        "/api/v1/send-sms", headers=headers, timeout=client_timeout, **kwargs
    ) as r:
        return r.status, await r.json(), r.headers


def test_fake_twilio_is_the_same_class() -> None:
    assert FakeTwilio is FakeProvider


# -- Vonage ---------------------------------------------------------------------------


async def test_vonage_accepts_and_records_in_e164(client: Client, fake: FakeProvider) -> None:
    before = time.monotonic()
    status, body = await vonage(client, vonage_form(ttl="600000"))
    assert status == 200
    [part] = body["messages"]
    assert body["message-count"] == "1"
    assert (part["status"], part["to"], part["client-ref"]) == ("0", UK[1:], "msg_1")
    assert len(part["message-id"]) == 16
    [accepted] = fake.accepted
    assert (accepted.to, accepted.body, accepted.sid) == (
        UK,
        "Your code is 123456",
        part["message-id"],
    )
    [record] = fake.records
    assert (record.provider, record.status, record.code, record.to) == ("vonage", 200, None, UK)
    assert before <= record.at <= time.monotonic()
    assert fake.by_status == {200: 1}


async def test_vonage_long_text_is_one_entry_per_part(client: Client) -> None:
    _, body = await vonage(client, vonage_form(text="a" * 161))
    assert body["message-count"] == "2"
    assert [p["status"] for p in body["messages"]] == ["0", "0"]
    assert len({p["message-id"] for p in body["messages"]}) == 2


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({"api_secret": "wrong"}, "4"),
        ({"api_key": "nope1234"}, "4"),
        ({"api_secret": None}, "2"),
        ({"from": None}, "2"),
        ({"to": None}, "2"),
        ({"text": ""}, "2"),
        ({"to": UK}, "3"),  # '+' is not accepted: digits only
        ({"to": "12345"}, "3"),
        ({"ttl": "19999"}, "3"),
        ({"ttl": "604800001"}, "3"),
        ({"ttl": "ten"}, "3"),
        ({"type": "emoji"}, "3"),
        ({"client-ref": "r" * 101}, "3"),
        ({"callback": "https://x.test/" + "c" * 100}, "3"),
    ],
)
async def test_vonage_refusals_are_200_with_a_status(
    client: Client, fake: FakeProvider, overrides: dict[str, str | None], status: str
) -> None:
    http, body = await vonage(client, vonage_form(**overrides))
    assert http == 200
    [part] = body["messages"]
    assert part["status"] == status
    assert part["error-text"]
    assert "message-id" not in part
    assert fake.accepted == []
    assert fake.records[0].code == status


async def test_vonage_throttles_inside_a_200(aiohttp_client: MakeClient) -> None:
    fake = make_fake(Faults(throttle_429=1.0))
    client = await aiohttp_client(fake.make_app())
    status, body = await vonage(client, vonage_form())
    assert status == 200
    assert body["messages"][0]["status"] == "1"
    assert fake.records[0].code == "1"
    assert fake.accepted == []


async def test_vonage_bad_credentials_are_refused_before_any_fault(
    aiohttp_client: MakeClient,
) -> None:
    fake = make_fake(Faults(fail_5xx=1.0))
    client = await aiohttp_client(fake.make_app())
    _, body = await vonage(client, vonage_form(api_secret="wrong"))
    assert body["messages"][0]["status"] == "4"
    assert (await vonage(client, vonage_form()))[0] == 500


async def test_vonage_reject_numbers_is_unroutable(aiohttp_client: MakeClient) -> None:
    fake = make_fake(Faults(reject_numbers=frozenset({UK})))
    client = await aiohttp_client(fake.make_app())
    _, body = await vonage(client, vonage_form())
    assert body["messages"][0]["status"] == "6"
    _, body = await vonage(client, vonage_form(to="447911123457"))
    assert body["messages"][0]["status"] == "0"


# -- Airtel ---------------------------------------------------------------------------


async def test_airtel_accepts_and_records_in_e164(client: Client, fake: FakeProvider) -> None:
    status, body, _ = await airtel(client, airtel_body(otp=True))
    assert status == 200
    assert body["status"] == "SUCCESS"
    assert body["errorCode"] is None
    [accepted] = fake.accepted
    assert (accepted.to, accepted.sid) == (INDIA, body["messageRequestId"])
    [record] = fake.records
    assert (record.provider, record.status, record.code, record.to) == ("airtel", 200, None, INDIA)


async def test_airtel_takes_a_single_destination_string(client: Client) -> None:
    status, _, _ = await airtel(client, airtel_body(destinationAddress=INDIA[3:]))
    assert status == 200


@pytest.mark.parametrize(
    "authorization",
    [basic(AIRTEL.username, "wrong"), basic("someone", AIRTEL.password), "Bearer x", "Basic !!"],
)
async def test_airtel_bad_credentials_are_401(
    client: Client, fake: FakeProvider, authorization: str
) -> None:
    status, body, _ = await airtel(client, airtel_body(), authorization=authorization)
    assert status == 401
    assert body["errorCode"] == "AUTH_FAILED"
    assert fake.records[0].code == "AUTH_FAILED"


async def test_airtel_other_spellings_of_basic_auth_work(client: Client) -> None:
    encoded = base64.b64encode(f"{AIRTEL.username}:{AIRTEL.password}".encode()).decode()
    status, _, _ = await airtel(client, airtel_body(), authorization=f"basic  {encoded}")
    assert status == 200


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"customerId": "other"}, "INVALID_CUSTOMER"),
        ({"destinationAddress": [INDIA]}, "INVALID_REQUEST"),  # +91 included
        ({"destinationAddress": ["1234567890"]}, "INVALID_REQUEST"),
        ({"destinationAddress": []}, "INVALID_REQUEST"),
        ({"destinationAddress": None}, "INVALID_REQUEST"),
        ({"message": ""}, "INVALID_REQUEST"),
        ({"sourceAddress": None}, "INVALID_REQUEST"),
        ({"messageType": "OTP"}, "INVALID_REQUEST"),
        ({"dltTemplateId": "abc"}, "INVALID_REQUEST"),
        ({"entityId": 1201159543060917386}, "INVALID_REQUEST"),
        ({"otp": "yes"}, "INVALID_REQUEST"),
    ],
)
async def test_airtel_invalid_requests_are_400(
    client: Client, fake: FakeProvider, overrides: dict[str, Any], code: str
) -> None:
    status, body, _ = await airtel(client, airtel_body(**overrides))
    assert (status, body["errorCode"]) == (400, code)
    assert body["errorDescription"]
    assert fake.accepted == []


async def test_airtel_body_that_is_not_a_json_object_is_400(client: Client) -> None:
    for raw in (b"not json", b"[1]"):
        status, body, _ = await airtel(client, raw)
        assert (status, body["errorCode"]) == (400, "INVALID_REQUEST")


async def test_airtel_throttles_with_429_and_retry_after(aiohttp_client: MakeClient) -> None:
    fake = make_fake(Faults(throttle_429=1.0, retry_after_s=4))
    client = await aiohttp_client(fake.make_app())
    status, body, headers = await airtel(client, airtel_body())
    assert (status, body["errorCode"], headers["Retry-After"]) == (429, "THROTTLED", "4")
    assert fake.records[0].code == "THROTTLED"


async def test_airtel_5xx(aiohttp_client: MakeClient) -> None:
    fake = make_fake(Faults(fail_5xx=1.0))
    client = await aiohttp_client(fake.make_app())
    status, body, _ = await airtel(client, airtel_body())
    assert (status, body["errorCode"]) == (500, "INTERNAL_ERROR")


async def test_airtel_reject_numbers(aiohttp_client: MakeClient) -> None:
    fake = make_fake(Faults(reject_numbers=frozenset({INDIA})))
    client = await aiohttp_client(fake.make_app())
    status, body, _ = await airtel(client, airtel_body())
    assert (status, body["errorCode"]) == (400, "INVALID_DESTINATION")
    assert (await airtel(client, airtel_body(destinationAddress=["9876543211"])))[0] == 200


# -- shared fault behaviour ---------------------------------------------------------------


async def test_hang_never_answers_either_shape(aiohttp_client: MakeClient) -> None:
    fake = make_fake(Faults(hang=1.0))
    client = await aiohttp_client(fake.make_app())
    with pytest.raises(asyncio.TimeoutError):
        await vonage(client, vonage_form(), timeout=0.2)
    with pytest.raises(asyncio.TimeoutError):
        await airtel(client, airtel_body(), timeout=0.2)
    assert fake.by_status == {HUNG: 2}
    assert [(r.provider, r.to, r.code) for r in fake.records] == [
        ("vonage", UK, None),
        ("airtel", INDIA, None),
    ]


async def test_latency_applies_to_both_shapes(aiohttp_client: MakeClient) -> None:
    fake = make_fake(Faults(latency_ms=150))
    client = await aiohttp_client(fake.make_app())
    for send in (vonage(client, vonage_form()), airtel(client, airtel_body())):
        started = time.monotonic()
        await send
        assert 0.15 <= time.monotonic() - started < 0.6
    # Stamped on arrival, before the delay.
    assert fake.records[1].at - fake.records[0].at >= 0.15


async def test_fault_draws_are_reproducible_and_exclusive(aiohttp_client: MakeClient) -> None:
    async def outcomes(seed: int) -> list[tuple[int, str | None]]:
        fake = make_fake(Faults(fail_5xx=0.3, throttle_429=0.3), seed=seed)
        client = await aiohttp_client(fake.make_app())
        for i in range(60):
            if i % 2:
                await vonage(client, vonage_form())
            else:
                await airtel(client, airtel_body())
        return [(r.status, r.code) for r in fake.records]

    first = await outcomes(1)
    assert first == await outcomes(1)
    assert first != await outcomes(2)
    throttled = sum(code in ("1", "THROTTLED") for _, code in first)
    failed = sum(status == 500 for status, _ in first)
    assert 8 <= throttled <= 30
    assert 8 <= failed <= 30


async def test_control_and_stats_cover_every_shape(client: Client, fake: FakeProvider) -> None:
    async with client.post("/_control", json={"fail_5xx": 1.0}) as r:
        assert r.status == 200
    assert (await vonage(client, vonage_form()))[0] == 500
    assert (await airtel(client, airtel_body()))[0] == 500
    async with client.post("/_control", json={"fail_5xx": 0}) as r:
        assert r.status == 200
    await vonage(client, vonage_form())
    await airtel(client, airtel_body())
    async with client.get("/_stats") as r:
        stats = await r.json()
    assert stats["count"] == 4
    assert stats["by_status"] == {"500": 2, "200": 2}
    assert {a["to"] for a in stats["accepted"]} == {UK, INDIA}
    async with client.post("/_reset") as r:
        assert r.status == 204
    assert fake.records == []


async def test_twilio_path_still_answers_next_to_the_new_shapes(client: Client) -> None:
    path = f"/2010-04-01/Accounts/{FakeProvider().account_sid}/Messages.json"
    headers = {"Authorization": basic(FakeProvider().account_sid, FakeProvider().auth_token)}
    form = {"To": UK, "From": "+15005550006", "Body": "hi"}
    async with client.post(path, data=form, headers=headers) as r:
        assert r.status == 201


async def test_script_mode_takes_vonage_and_airtel_credentials(tmp_path: Path) -> None:
    argv = [
        *("python", "-m", "testkit.fake_provider"),
        *("--vonage-api-key", "cli-key1", "--vonage-api-secret", "cli-secret"),
        *("--airtel-customer-id", "cli-cust", "--airtel-username", "cli-user"),
        *("--airtel-password", "cli-pass"),
    ]
    proc, port = await asyncio.to_thread(start_process, argv, tmp_path / "fake.port")
    try:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            form = vonage_form(api_key="cli-key1", api_secret="cli-secret")
            async with session.post(f"{base}/sms/json", data=form) as r:
                assert (await r.json())["messages"][0]["status"] == "0"
            body = airtel_body(customerId="cli-cust")
            headers = {"Authorization": basic("cli-user", "cli-pass")}
            async with session.post(f"{base}/api/v1/send-sms", json=body, headers=headers) as r:
                assert r.status == 200
    finally:
        code = await asyncio.to_thread(stop_process, proc)
    assert code == 0
