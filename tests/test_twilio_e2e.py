"""End to end through the real TwilioProvider against the fake Twilio server (in-process)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from smsgw.app import create_app
from testkit.fake_provider import FakeTwilio, Faults
from tests.helpers import code_in, make_settings

ACCOUNT_SID = "AC" + "5e" * 16
AUTH_TOKEN = "e2e-auth-token"
FROM = "+15005550006"
PHONE = "+14155550100"
REJECTED = "+14155550199"

Client = TestClient[Any, Any]


class Gateway:
    """The fake Twilio, the raw forms it received, and smsgw wired to it."""

    def __init__(self, fake: FakeTwilio, forms: list[dict[str, list[str]]], client: Client):
        self.fake = fake
        self.forms = forms
        self.client = client

    async def ready(self) -> dict[str, Any]:
        payload: dict[str, Any] = await (await self.client.get("/readyz")).json()
        return payload

    async def wait(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.005)

    async def wait_stats(self, key: str, value: int, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            ready = await self.ready()
            if ready["dispatch"][key] >= value:
                return ready
            assert time.monotonic() < deadline, ready
            await asyncio.sleep(0.01)


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
def gateway(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    aiohttp_client: Callable[..., Awaitable[Client]],
    sms_path: Path,
) -> GatewayFactory:
    async def build(faults: Faults | None = None, **sections: Any) -> Gateway:
        fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN, faults=faults, seed=3)
        forms: list[dict[str, list[str]]] = []

        # The fake records To and Body; this keeps every field as sent (From, ValidityPeriod).
        @web.middleware
        async def keep_form(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.method == "POST" and request.path == fake.messages_path:
                forms.append(parse_qs((await request.read()).decode()))
                forms[-1]["_authorization"] = [request.headers.get("Authorization", "")]
            response: web.StreamResponse = await handler(request)
            return response

        fake_app = fake.make_app()
        fake_app.middlewares.append(keep_form)
        server = await aiohttp_server(fake_app)
        provider = {
            "name": "twilio",
            "kind": "twilio",
            "account_sid": ACCOUNT_SID,
            "auth_token": AUTH_TOKEN,
            "from": FROM,
            "base_url": str(server.make_url("")),
        }
        dispatch = {"backoff_base_s": 0.05, "backoff_max_s": 0.2, **sections.pop("dispatch", {})}
        settings = make_settings(sms_path, providers=[provider], dispatch=dispatch, **sections)
        client = await aiohttp_client(create_app(settings))
        return Gateway(fake, forms, client)

    return build


async def test_otp_flow_through_twilio(gateway: GatewayFactory, sms_path: Path) -> None:
    gw = await gateway()
    response = await gw.client.post("/v1/otp", json={"phone": PHONE, "ttl_s": 120})
    assert response.status == 202
    started = await response.json()
    await gw.wait(lambda: len(gw.fake.accepted) == 1)
    ready = await gw.wait_stats("sent", 1)

    accepted = gw.fake.accepted[0]
    assert accepted.to == PHONE
    assert accepted.sid.startswith("SM")
    code = code_in(accepted.body)
    assert len(code) == 6
    form = gw.forms[0]
    assert form["To"] == [PHONE]
    assert form["From"] == [FROM]
    assert form["Body"] == [accepted.body]
    expected_auth = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    assert form["_authorization"] == [f"Basic {expected_auth}"]
    validity = int(form["ValidityPeriod"][0])
    assert 100 <= validity <= 120  # the OTP's remaining life, never more than its ttl
    assert gw.fake.by_status == {201: 1}
    assert ready["dispatch"]["retried"] == 0
    assert not sms_path.exists()  # the console provider is not configured here

    response = await gw.client.post("/v1/otp/verify", json={"id": started["id"], "code": code})
    assert response.status == 200
    assert await response.json() == {
        "id": started["id"],
        "status": "approved",
        "valid": True,
        "attempts_left": 4,
    }


async def test_plain_message_has_no_validity_period(gateway: GatewayFactory) -> None:
    gw = await gateway()
    response = await gw.client.post("/v1/messages", json={"to": PHONE, "body": "no expiry"})
    assert response.status == 202
    await gw.wait_stats("sent", 1)
    assert len(gw.forms) == 1
    assert "ValidityPeriod" not in gw.forms[0]
    assert gw.forms[0]["Body"] == ["no expiry"]


async def test_server_errors_are_retried_until_sent(gateway: GatewayFactory) -> None:
    gw = await gateway(Faults(fail_5xx=1.0), dispatch={"max_attempts": 20})
    response = await gw.client.post("/v1/messages", json={"to": PHONE, "body": "persist"})
    assert response.status == 202
    await gw.wait(lambda: gw.fake.by_status.get(500, 0) >= 3)
    gw.fake.configure({"fail_5xx": 0.0})
    ready = await gw.wait_stats("sent", 1)
    assert [a.body for a in gw.fake.accepted] == ["persist"]
    assert gw.fake.by_status[201] == 1
    failures = gw.fake.by_status[500]
    assert failures >= 3
    assert ready["dispatch"]["retried"] == failures
    assert ready["dispatch"]["failed"] == 0
    assert ready["queue_depth"] == 0
    # Retries are spaced (backoff), not a hot loop.
    times = [r.at for r in gw.fake.records]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.02


async def test_throttling_is_retried_until_sent(gateway: GatewayFactory) -> None:
    gw = await gateway(Faults(throttle_429=1.0, retry_after_s=0))
    response = await gw.client.post("/v1/messages", json={"to": PHONE, "body": "patient"})
    assert response.status == 202
    await gw.wait(lambda: gw.fake.by_status.get(429, 0) >= 2)
    gw.fake.configure({"throttle_429": 0.0})
    ready = await gw.wait_stats("sent", 1)
    assert [a.body for a in gw.fake.accepted] == ["patient"]
    # The fake's 429 carries 20429, Twilio's "too many concurrent requests": re-sent after
    # a short pause of the lane, not a rate pause and not an attempt.
    assert ready["dispatch"]["concurrency_refusals"] == gw.fake.by_status[429]
    assert ready["dispatch"]["throttled"] == 0
    assert ready["dispatch"]["failed"] == 0


async def test_rejected_number_is_never_retried(gateway: GatewayFactory) -> None:
    gw = await gateway(Faults(reject_numbers=frozenset({REJECTED})))
    response = await gw.client.post("/v1/messages", json={"to": REJECTED, "body": "nobody"})
    assert response.status == 202
    await gw.wait_stats("failed", 1)
    # Longer than several backoff delays: a retry would have shown up.
    await asyncio.sleep(0.4)
    ready = await gw.ready()
    assert len(gw.fake.records) == 1
    assert gw.fake.records[0].status == 400
    assert gw.fake.accepted == []
    assert ready["dispatch"]["failed"] == 1
    assert ready["dispatch"]["retried"] == 0
    assert ready["dispatch"]["sent"] == 0
    assert ready["queue_depth"] == 0


async def test_otp_to_a_rejected_number_is_never_retried(gateway: GatewayFactory) -> None:
    gw = await gateway(Faults(reject_numbers=frozenset({REJECTED})))
    response = await gw.client.post("/v1/otp", json={"phone": REJECTED})
    assert response.status == 202
    await gw.wait_stats("failed", 1)
    await asyncio.sleep(0.4)
    assert len(gw.fake.records) == 1
    # A good number still goes through.
    response = await gw.client.post("/v1/otp", json={"phone": PHONE})
    assert response.status == 202
    await gw.wait_stats("sent", 1)
    assert [a.to for a in gw.fake.accepted] == [PHONE]
