"""Several app instances sharing one private Redis behave as one gateway: OTPs, the attempt
cap, idempotency keys and quotas hold across instances, and every key expires."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient

from smsgw.app import create_app
from testkit.services import RedisServer
from tests.helpers import code_in, make_settings, wait_sms

pytestmark = pytest.mark.timeout(60)

PHONE = "+14155550100"
KEY = "k" * 20
Client = TestClient[Any, Any]
MakeInstances = Callable[..., Awaitable[list[Client]]]


@pytest.fixture
def make_instances(
    aiohttp_client: Callable[..., Awaitable[Client]], redis_url: str, sms_path: Path
) -> MakeInstances:
    async def make(count: int, **sections: Any) -> list[Client]:
        sections.setdefault("redis", {"url": redis_url})
        settings = make_settings(sms_path, **sections)
        return [await aiohttp_client(create_app(settings)) for _ in range(count)]

    return make


async def test_started_on_one_instance_verified_on_another(
    make_instances: MakeInstances, sms_path: Path
) -> None:
    first, second = await make_instances(2)
    started = await first.post("/v1/otp", json={"phone": PHONE})
    assert started.status == 202
    verification = await started.json()
    (sms,) = await wait_sms(sms_path, 1)

    wrong = await second.post("/v1/otp/verify", json={"phone": PHONE, "code": "0000000"[:6]})
    assert (await wrong.json())["attempts_left"] == 4
    right = await second.post(
        "/v1/otp/verify", json={"id": verification["id"], "code": code_in(sms["body"])}
    )
    assert right.status == 200
    assert (await right.json())["status"] == "approved"
    again = await first.post(
        "/v1/otp/verify", json={"id": verification["id"], "code": code_in(sms["body"])}
    )
    assert again.status == 404


async def test_fifty_simultaneous_wrong_checks_over_three_instances_get_five_comparisons(
    make_instances: MakeInstances, sms_path: Path
) -> None:
    instances = await make_instances(3)
    verification = await (await instances[0].post("/v1/otp", json={"phone": PHONE})).json()
    (sms,) = await wait_sms(sms_path, 1)
    code = code_in(sms["body"])
    wrong = f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"

    async def check(index: int) -> int:
        client = instances[index % 3]
        response = await client.post(
            "/v1/otp/verify", json={"id": verification["id"], "code": wrong}
        )
        return response.status

    statuses = Counter(await asyncio.gather(*(check(i) for i in range(50))))
    assert statuses == {200: 5, 429: 45}
    # The code is dead everywhere, even when right.
    late = await instances[2].post("/v1/otp/verify", json={"id": verification["id"], "code": code})
    assert late.status == 429


async def test_send_policy_is_shared(make_instances: MakeInstances) -> None:
    first, second = await make_instances(2)
    assert (await first.post("/v1/otp", json={"phone": PHONE})).status == 202
    refused = await second.post("/v1/otp", json={"phone": PHONE})
    assert refused.status == 429
    assert (await refused.json(content_type=None))["type"].endswith("resend-cooldown")


async def test_idempotency_key_is_shared(make_instances: MakeInstances, sms_path: Path) -> None:
    first, second = await make_instances(2)
    body = {"to": PHONE, "body": "once only"}
    headers = {"Idempotency-Key": "order-42"}
    original = await first.post("/v1/messages", json=body, headers=headers)
    replayed = await second.post("/v1/messages", json=body, headers=headers)
    assert original.status == replayed.status == 202
    assert await original.json() == await replayed.json()
    assert replayed.headers["Idempotent-Replayed"] == "true"
    other = await second.post("/v1/messages", json={**body, "body": "x"}, headers=headers)
    assert other.status == 422
    await asyncio.sleep(0.2)
    assert len(await wait_sms(sms_path, 1)) == 1


async def test_quota_is_counted_across_instances(make_instances: MakeInstances) -> None:
    clients = [{"name": "login-app", "key": KEY, "requests_per_minute": 3}]
    first, second = await make_instances(2, clients=clients)
    auth = {"Authorization": f"Bearer {KEY}"}
    statuses = []
    for client in (first, second, first, second):
        response = await client.post("/v1/messages", json={"to": PHONE, "body": "hi"}, headers=auth)
        statuses.append(response.status)
    assert statuses == [202, 202, 202, 429]
    assert response.headers["Retry-After"] == "60"
    assert (await response.json(content_type=None))["type"].endswith("quota-exceeded")


async def test_every_key_written_expires(
    make_instances: MakeInstances, sms_path: Path, redis_url: str
) -> None:
    (instance,) = await make_instances(1)
    await instance.post("/v1/otp", json={"phone": PHONE}, headers={"Idempotency-Key": "a"})
    await instance.post("/v1/otp", json={"phone": "+14155550101"})
    await wait_sms(sms_path, 2)
    sync = redis.Redis.from_url(redis_url)
    try:
        keys = [key.decode() for key in sync.keys("smsgw:*")]
        # The queue's streams hold accepted messages: they must not expire, but finished
        # entries are deleted, so they are empty once everything was sent.
        streams = [key for key in keys if sync.type(key) == b"stream"]
        assert streams
        deadline = time.monotonic() + 3
        while sum(sync.xlen(key) for key in streams) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert all(sync.xlen(key) == 0 for key in streams)
        others = [key for key in keys if key not in streams]
        assert others, "the flows above must have written shared state"
        assert all(sync.pttl(key) > 0 for key in others), {k: sync.pttl(k) for k in others}
    finally:
        sync.close()


async def test_redis_down_is_a_503_not_a_500(
    make_instances: MakeInstances, redis_server: RedisServer
) -> None:
    (instance,) = await make_instances(1)
    redis_server.stop()
    try:
        response = await instance.post("/v1/otp", json={"phone": PHONE})
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        payload = await response.json(content_type=None)
        assert payload["type"].endswith("dependency-unavailable")
    finally:
        redis_server.start()
