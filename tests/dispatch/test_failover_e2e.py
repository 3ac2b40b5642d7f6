"""Failover end to end: the real app, real HTTP to two fake provider servers.

Twilio answering 500 for everything must not stop OTPs (they reach the phone through
Vonage, and Twilio's circuit opens); once Twilio recovers, the half-open probe closes the
circuit and traffic returns to the configured weights; a destination only Airtel serves
never goes anywhere else.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from smsgw.app_keys import ROUTER
from testkit.airtel_shapes import AirtelAccount
from testkit.fake_provider import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeProvider, Faults
from testkit.vonage_shapes import VonageAccount
from tests.helpers import app_client

pytestmark = pytest.mark.timeout(60)


def providers(twilio_url: str, other_url: str) -> list[dict[str, Any]]:
    vonage, airtel = VonageAccount(), AirtelAccount()
    return [
        {
            "name": "twilio",
            "kind": "twilio",
            "weight": 3,
            "countries": ["US"],
            "account_sid": DEFAULT_ACCOUNT_SID,
            "auth_token": DEFAULT_AUTH_TOKEN,
            "from": "+15005550006",
            "base_url": twilio_url,
        },
        {
            "name": "vonage",
            "kind": "vonage",
            "weight": 1,
            "countries": ["US"],
            "api_key": vonage.api_key,
            "api_secret": vonage.api_secret,
            "from": "smsgw",
            "base_url": other_url,
        },
        {
            "name": "airtel",
            "kind": "airtel",
            "customer_id": airtel.customer_id,
            "username": airtel.username,
            "password": airtel.password,
            "source_address": "SMSGW",
            "dlt_entity_id": "1101000000000000001",
            "dlt_template_id": "1107000000000000001",
            "base_url": other_url,
        },
    ]


def accepted_by(fake: FakeProvider, provider: str, since: int = 0) -> int:
    return sum(1 for r in fake.records[since:] if r.provider == provider and r.sid is not None)


async def until(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_failover_recovery_and_country_routing(
    aiohttp_client: Any, aiohttp_server: Any, sms_path: Path
) -> None:
    twilio_fake = FakeProvider(faults=Faults(fail_5xx=1.0))
    other_fake = FakeProvider()
    twilio_server = await aiohttp_server(twilio_fake.make_app())
    other_server = await aiohttp_server(other_fake.make_app())
    client = await app_client(
        aiohttp_client,
        sms_path,
        providers=providers(
            str(twilio_server.make_url("")).rstrip("/"), str(other_server.make_url("")).rstrip("/")
        ),
        breaker={"failure_threshold": 5, "cooldown_s": 0.5},
        # 200 OTPs to one number range would trip the SMS-pumping guard: not this test's topic.
        abuse={"prefix_floor": 10_000},
        dispatch={"backoff_base_s": 0.01, "backoff_max_s": 0.05},
        queue={"max_size": 5000},
    )
    router = client.app[ROUTER]

    # 1. Twilio fails everything: 200 OTPs still reach their phones, through Vonage.
    for n in range(200):
        response = await client.post("/v1/otp", json={"phone": f"+1415555{1000 + n:04d}"})
        assert response.status == 202, await response.text()
    await until(lambda: accepted_by(other_fake, "vonage") == 200)
    assert router.breaker_states()["twilio"] == "open"
    assert accepted_by(twilio_fake, "twilio") == 0
    # The circuit opened after 5 failures: Twilio was not tried for every message.
    assert len(twilio_fake.records) < 50

    # 2. Twilio is back: after the cooldown a probe closes the circuit, and traffic returns
    # to the weights (3:1, so 75% to Twilio).
    twilio_fake.faults = Faults()
    await asyncio.sleep(0.6)
    # The first messages after the cooldown: one is the probe, the rest go to Vonage while
    # it is out (one probe at a time).
    response = await client.post(
        "/v1/messages/batch",
        json={"messages": [{"to": f"+1415555{1500 + n:04d}", "body": "p"} for n in range(20)]},
    )
    assert response.status == 202
    await until(lambda: router.breaker_states()["twilio"] == "closed", timeout=5.0)
    start_twilio, start_other = len(twilio_fake.records), len(other_fake.records)
    messages = [{"to": f"+1415555{2000 + n:04d}", "body": f"m{n}"} for n in range(1000)]
    response = await client.post("/v1/messages/batch", json={"messages": messages})
    assert response.status == 202

    def delivered() -> int:
        return accepted_by(twilio_fake, "twilio", start_twilio) + accepted_by(
            other_fake, "vonage", start_other
        )

    await until(lambda: delivered() == 1000)
    assert router.breaker_states()["twilio"] == "closed"
    share = accepted_by(twilio_fake, "twilio", start_twilio) / 1000
    assert 0.675 <= share <= 0.825, share

    # 3. India is served by Airtel only: never by Twilio or Vonage.
    before = Counter(r.provider for r in twilio_fake.records + other_fake.records)
    messages = [{"to": f"+9198765432{n:02d}", "body": f"in{n}"} for n in range(20)]
    response = await client.post("/v1/messages/batch", json={"messages": messages})
    assert response.status == 202
    await until(lambda: accepted_by(other_fake, "airtel") == 20)
    after = Counter(r.provider for r in twilio_fake.records + other_fake.records)
    assert after - before == Counter({"airtel": 20})
