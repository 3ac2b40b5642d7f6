"""POST /v1/messages and /v1/messages/batch: queued, sent, bounded, all or nothing."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from testkit.fake_provider import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeTwilio, Faults
from tests.helpers import app_client, read_sms, wait_sms

PHONE = "+14155550100"
FR_PHONE = "+33612345678"
DE_PHONE = "+4915123456789"
MESSAGE_ID = re.compile(r"^msg_[0-9a-f]{32}$")
PROBLEM = "application/problem+json"

Client = TestClient[Any, Any]


async def readiness(client: Client) -> dict[str, Any]:
    response = await client.get("/readyz")
    payload: dict[str, Any] = await response.json(content_type=None)
    return payload


def slug(payload: dict[str, Any]) -> str:
    problem_type = payload["type"]
    assert isinstance(problem_type, str)
    return problem_type.rsplit(":", 1)[-1]


def twilio_provider(server: Any) -> dict[str, Any]:
    return {
        "name": "twilio",
        "kind": "twilio",
        "account_sid": DEFAULT_ACCOUNT_SID,
        "auth_token": DEFAULT_AUTH_TOKEN,
        "from": "+15005550006",
        "base_url": str(server.make_url("")),
    }


# -- one message ---------------------------------------------------------------------------


async def test_message_is_queued_and_sent(client: Client, sms_path: Path) -> None:
    response = await client.post(
        "/v1/messages", json={"to": "+1 415 555 0100", "body": "Hello from smsgw"}
    )
    assert response.status == 202
    assert response.content_type == "application/json"
    payload = await response.json()
    assert set(payload) == {"id", "status", "segments", "encoding"}
    assert payload["status"] == "queued"
    assert (payload["segments"], payload["encoding"]) == (1, "GSM-7")
    assert MESSAGE_ID.match(payload["id"])
    sms = await wait_sms(sms_path, 1)
    assert len(sms) == 1
    assert sms[0]["to"] == PHONE
    assert sms[0]["body"] == "Hello from smsgw"
    assert sms[0]["message_id"] == payload["id"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", sms[0]["at"])
    assert (await readiness(client))["dispatch"]["sent"] == 1


@pytest.mark.parametrize(
    ("body", "segments", "encoding"),
    [
        ("a" * 160, 1, "GSM-7"),
        ("a" * 161, 2, "GSM-7"),
        ("{" * 80, 1, "GSM-7"),  # extension characters: two septets each
        ("Ж" * 70, 1, "UCS-2"),
        ("Ж" * 71, 2, "UCS-2"),
        ("Привет 👋", 1, "UCS-2"),
    ],
)
async def test_answer_says_how_providers_count_the_body(
    client: Client, sms_path: Path, body: str, segments: int, encoding: str
) -> None:
    response = await client.post("/v1/messages", json={"to": PHONE, "body": body})
    assert response.status == 202
    payload = await response.json()
    assert (payload["segments"], payload["encoding"]) == (segments, encoding)
    await wait_sms(sms_path, 1)


async def test_body_longer_than_every_provider_takes_is_422_and_not_queued(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    sms_path = tmp_path / "sms.jsonl"
    console = {"name": "console", "kind": "console", "path": str(sms_path), "max_segments": 10}
    client = await app_client(aiohttp_client, sms_path, providers=[console])
    # 11 UCS-2 parts of 67 units: one more than the only provider takes.
    body = "Ж" * (67 * 10 + 1)
    response = await client.post("/v1/messages", json={"to": PHONE, "body": body})
    assert response.status == 422
    problem = await response.json()
    assert problem["type"].endswith("body-too-long")
    assert problem["errors"][0]["pointer"] == "#/body"
    assert "11 segments" in problem["errors"][0]["detail"]
    assert "at most 10" in problem["errors"][0]["detail"]
    batch = {"messages": [{"to": PHONE, "body": "ok"}, {"to": PHONE, "body": body}]}
    response = await client.post("/v1/messages/batch", json=batch)
    assert response.status == 422
    problem = await response.json()
    assert [e["pointer"] for e in problem["errors"]] == ["#/messages/1/body"]
    readiness_state = await readiness(client)
    assert readiness_state["dispatch"]["sent"] == 0  # nothing of either request was queued
    assert not sms_path.exists() or sms_path.read_text() == ""


@pytest.mark.parametrize("priority", ["high", "normal"])
async def test_priority_field_is_accepted(client: Client, sms_path: Path, priority: str) -> None:
    response = await client.post(
        "/v1/messages",
        json={"to": PHONE, "body": "p", "priority": priority, "client_ref": "order-42"},
    )
    assert response.status == 202
    assert len(await wait_sms(sms_path, 1)) == 1


async def test_body_of_1600_characters_is_sent_whole(client: Client, sms_path: Path) -> None:
    body = "é" * 1600
    response = await client.post("/v1/messages", json={"to": PHONE, "body": body})
    assert response.status == 202
    sms = await wait_sms(sms_path, 1)
    assert sms[0]["body"] == body


async def test_high_priority_overtakes_queued_bulk(aiohttp_client: Any, sms_path: Path) -> None:
    # One worker at 50 SMS/s: ten bulk messages take 0.2 s, so the queue holds most of them
    # when the high-priority one arrives.
    client = await app_client(
        aiohttp_client,
        sms_path,
        dispatch={"concurrency": 1},
        providers=[{"name": "console", "kind": "console", "path": str(sms_path), "rate": 50}],
    )
    bulk = [{"to": PHONE, "body": f"bulk {i}"} for i in range(10)]
    response = await client.post("/v1/messages/batch", json={"messages": bulk})
    assert response.status == 202
    response = await client.post(
        "/v1/messages", json={"to": PHONE, "body": "urgent", "priority": "high"}
    )
    assert response.status == 202
    sms = await wait_sms(sms_path, 11)
    bodies = [s["body"] for s in sms]
    assert len(bodies) == 11
    assert bodies.index("urgent") <= 3, bodies
    # Bulk keeps its own order.
    assert [b for b in bodies if b != "urgent"] == [f"bulk {i}" for i in range(10)]


# -- batches -------------------------------------------------------------------------------


async def test_batch_of_three(client: Client, sms_path: Path) -> None:
    messages = [
        {"to": PHONE, "body": "one"},
        {"to": FR_PHONE, "body": "deux", "priority": "high"},
        {"to": DE_PHONE, "body": "drei", "client_ref": "c-3"},
    ]
    response = await client.post("/v1/messages/batch", json={"messages": messages})
    assert response.status == 202
    payload = await response.json()
    assert set(payload) == {"ids"}
    ids = payload["ids"]
    assert len(ids) == 3
    assert len(set(ids)) == 3
    assert all(MESSAGE_ID.match(i) for i in ids)
    sms = await wait_sms(sms_path, 3)
    await asyncio.sleep(0.05)
    assert len(read_sms(sms_path)) == 3
    sent = {s["message_id"]: (s["to"], s["body"]) for s in sms}
    assert sent == {
        ids[0]: (PHONE, "one"),
        ids[1]: (FR_PHONE, "deux"),
        ids[2]: (DE_PHONE, "drei"),
    }


async def test_batch_is_all_or_nothing(client: Client, sms_path: Path) -> None:
    messages = [
        {"to": PHONE, "body": "one"},
        {"to": "+1555", "body": "two"},
        {"to": FR_PHONE, "body": "three"},
    ]
    response = await client.post("/v1/messages/batch", json={"messages": messages})
    assert response.status == 400
    assert response.content_type == PROBLEM
    payload = await response.json(content_type=None)
    assert slug(payload) == "invalid-phone"
    assert payload["status"] == 400
    assert [e["pointer"] for e in payload["errors"]] == ["#/messages/1/to"]
    await asyncio.sleep(0.1)
    assert read_sms(sms_path) == []
    ready = await readiness(client)
    assert ready["queue_depth"] == 0
    assert ready["dispatch"]["sent"] == 0


async def test_batch_reports_every_bad_number(client: Client, sms_path: Path) -> None:
    messages = [
        {"to": "nope", "body": "a"},
        {"to": PHONE, "body": "b"},
        {"to": "+442079460000", "body": "c"},  # a London landline
    ]
    response = await client.post("/v1/messages/batch", json={"messages": messages})
    assert response.status == 400
    payload = await response.json(content_type=None)
    assert [e["pointer"] for e in payload["errors"]] == ["#/messages/0/to", "#/messages/2/to"]
    assert all(e["detail"] for e in payload["errors"])
    await asyncio.sleep(0.05)
    assert read_sms(sms_path) == []


async def test_batch_of_1000_is_accepted(client: Client, sms_path: Path) -> None:
    messages = [{"to": PHONE, "body": f"n{i}"} for i in range(1000)]
    response = await client.post("/v1/messages/batch", json={"messages": messages})
    assert response.status == 202
    ids = (await response.json())["ids"]
    assert len(set(ids)) == 1000
    sms = await wait_sms(sms_path, 1000, timeout=10)
    assert sorted(s["message_id"] for s in sms) == sorted(ids)


# -- destinations no provider serves -------------------------------------------------------


async def test_unserved_country_is_refused(aiohttp_client: Any, sms_path: Path) -> None:
    console = {"name": "console", "kind": "console", "path": str(sms_path), "countries": ["US"]}
    client = await app_client(aiohttp_client, sms_path, providers=[console])
    response = await client.post("/v1/messages", json={"to": FR_PHONE, "body": "x"})
    assert response.status == 422
    payload = await response.json(content_type=None)
    assert slug(payload) == "unroutable-destination"
    assert payload["errors"][0]["pointer"] == "#/to"
    response = await client.post("/v1/messages", json={"to": PHONE, "body": "x"})
    assert response.status == 202
    sms = await wait_sms(sms_path, 1)
    await asyncio.sleep(0.05)
    assert [s["to"] for s in read_sms(sms_path)] == [PHONE]
    assert len(sms) == 1


# -- the bounded queue ---------------------------------------------------------------------


async def test_batch_larger_than_the_queue_is_503_and_queues_nothing(
    aiohttp_client: Any, sms_path: Path
) -> None:
    client = await app_client(aiohttp_client, sms_path, queue={"max_size": 2})
    messages = [{"to": PHONE, "body": f"m{i}"} for i in range(3)]
    response = await client.post("/v1/messages/batch", json={"messages": messages})
    assert response.status == 503
    assert response.content_type == PROBLEM
    payload = await response.json(content_type=None)
    assert slug(payload) == "queue-full"
    assert payload["status"] == 503
    assert int(response.headers["Retry-After"]) >= 1
    await asyncio.sleep(0.1)
    assert read_sms(sms_path) == []
    ready = await readiness(client)
    assert ready["queue_depth"] == 0
    assert ready["dispatch"]["sent"] == 0
    # A batch that fits goes through.
    response = await client.post("/v1/messages/batch", json={"messages": messages[:2]})
    assert response.status == 202
    assert len(await wait_sms(sms_path, 2)) == 2


async def test_queue_full_with_a_slow_provider(
    aiohttp_client: Any, aiohttp_server: Any, sms_path: Path
) -> None:
    # One worker on a provider that takes 300 ms: the queue (max 2) fills at HTTP speed.
    fake = FakeTwilio(faults=Faults(latency_ms=300))
    server = await aiohttp_server(fake.make_app())
    client = await app_client(
        aiohttp_client,
        sms_path,
        providers=[twilio_provider(server)],
        queue={"max_size": 2},
        dispatch={"concurrency": 1},
    )
    accepted: list[str] = []
    refused: list[str] = []
    for i in range(6):
        body = f"message {i}"
        response = await client.post("/v1/messages", json={"to": PHONE, "body": body})
        if response.status == 202:
            accepted.append(body)
            continue
        assert response.status == 503
        assert response.content_type == PROBLEM
        payload = await response.json(content_type=None)
        assert slug(payload) == "queue-full"
        assert int(response.headers["Retry-After"]) >= 1
        refused.append(body)
    assert refused, "the queue never filled"
    assert 2 <= len(accepted) <= 3  # one in flight + max_size waiting

    # Saturated: not ready, so a load balancer sends work elsewhere.
    response = await client.get("/readyz")
    assert response.status == 503
    assert response.content_type == PROBLEM

    # The fake records a message on arrival; the dispatcher counts it once answered.
    deadline = time.monotonic() + 5
    while (await readiness(client)).get("dispatch", {}).get("sent") != len(accepted):
        assert time.monotonic() < deadline, await readiness(client)
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    assert sorted(a.body for a in fake.accepted) == sorted(accepted)
    ready = await readiness(client)
    assert ready["status"] == "ready"
    assert ready["queue_depth"] == 0
    assert ready["dispatch"]["sent"] == len(accepted)
