"""GET /v1/messages/{id} and GET /v1/messages?to=: the audit trail through the real app,
with the embedded SQLite store (and DynamoDB on dynalite where replicas share the store)."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient

from smsgw.app_keys import AUDIT
from smsgw.audit import AuditEvent, open_store
from smsgw.settings import AuditSettings
from testkit.fake_provider import FakeTwilio, Faults
from tests.api.test_messages import twilio_provider
from tests.helpers import app_client, code_in, wait_sms

PHONE = "+14155550100"
OTHER_PHONE = "+14155550101"
KEYS = {"shop": "shop-key-0123456789abcdef", "login": "login-key-0123456789abcdef"}
CLIENTS = [{"name": name, "key": key} for name, key in KEYS.items()]

Client = TestClient[Any, Any]


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


async def trail_when(client: Client, message_id: str, status: str, **kw: Any) -> dict[str, Any]:
    """The message's trail once it reached `status` (the dispatcher works in the background)."""
    deadline = time.monotonic() + 5.0
    while True:
        response = await client.get(f"/v1/messages/{message_id}", **kw)
        assert response.status == 200, await response.text()
        trail: dict[str, Any] = await response.json()
        if trail["status"] == status or time.monotonic() > deadline:
            return trail
        await asyncio.sleep(0.02)


async def listed_ids(client: Client, to: str, count: int, **params: str) -> list[str]:
    """The listing once it shows `count` messages: it reads the store, which the writer fills
    every flush interval (and DynamoDB's index follows shortly after)."""
    deadline = time.monotonic() + 5.0
    while True:
        response = await client.get("/v1/messages", params={"to": to, **params})
        assert response.status == 200, await response.text()
        ids = [m["id"] for m in (await response.json())["messages"]]
        if len(ids) >= count or time.monotonic() > deadline:
            return ids
        await asyncio.sleep(0.02)


async def send(client: Client, to: str, body: str, who: str | None = None) -> str:
    headers = auth(who) if who else {}
    response = await client.post("/v1/messages", json={"to": to, "body": body}, headers=headers)
    assert response.status == 202
    message_id: str = (await response.json())["id"]
    return message_id


async def test_a_sent_message_shows_every_step(client: Client, sms_path: Path) -> None:
    message_id = await send(client, PHONE, "Your parcel is on its way")
    trail = await trail_when(client, message_id, "sent")
    assert trail["id"] == message_id
    assert trail["to"] == PHONE
    assert trail["status"] == "sent"
    assert trail["provider"] == "console"
    assert trail["attempts"] == 1
    assert trail["body"] == "Your parcel is on its way"
    assert [e["type"] for e in trail["events"]] == ["accepted", "queued", "sending", "sent"]
    sending, sent = trail["events"][2], trail["events"][3]
    assert sending["provider"] == "console"
    assert sending["attempt"] == 1
    (sms,) = await wait_sms(sms_path, 1)
    assert sms["message_id"] == message_id
    assert sent["provider_message_id"].startswith("console-")
    times = [e["at"] for e in trail["events"]]
    assert times == sorted(times)
    assert all(t.endswith("Z") for t in times)


async def test_a_lookup_right_after_the_post_finds_the_message(client: Client) -> None:
    # Events still waiting in the writer's buffer count: no 404 in the first 200 ms.
    message_id = await send(client, PHONE, "hello")
    response = await client.get(f"/v1/messages/{message_id}")
    assert response.status == 200
    assert (await response.json())["events"][0]["type"] == "accepted"


async def test_a_message_being_written_to_the_store_is_found(client: Client) -> None:
    # Out of the writer's buffer, not yet in the store: still the writer's to show.
    writer = client.app[AUDIT]
    writing, answer = asyncio.Event(), asyncio.Event()
    store_write = writer.store.write

    async def slow_write(events: list[AuditEvent]) -> None:
        writing.set()
        await answer.wait()
        await store_write(events)

    writer.store.write = slow_write  # type: ignore[method-assign]
    message_id = await send(client, PHONE, "hello")
    await asyncio.wait_for(writing.wait(), 2.0)
    response = await client.get(f"/v1/messages/{message_id}")
    assert response.status == 200
    assert (await response.json())["events"][0]["type"] == "accepted"
    answer.set()


@pytest.fixture(params=["sqlite", "dynamodb"])
async def shared_audit(
    request: pytest.FixtureRequest, tmp_path: Path, dynamodb_settings: AuditSettings
) -> dict[str, Any]:
    """The [audit] section of replicas sharing one store: one SQLite file, or one table."""
    if request.param == "sqlite":
        return {"path": str(tmp_path / "shared.sqlite3")}
    store = await open_store(dynamodb_settings)
    await store.migrate()
    await store.close()
    return msgspec.structs.asdict(dynamodb_settings)


async def test_a_message_accepted_by_one_replica_is_found_at_once_by_another(
    aiohttp_client: Any, sms_path: Path, redis_url: str, shared_audit: dict[str, Any]
) -> None:
    # Two replicas on one Redis (queue, OTP state) and one audit store, as behind a load
    # balancer: the lookup right after the POST lands on the replica that did not take it.
    replicas = [
        await app_client(aiohttp_client, sms_path, redis={"url": redis_url}, audit=shared_audit)
        for _ in range(2)
    ]
    message_id = await send(replicas[0], PHONE, "hello")
    started = time.monotonic()
    response = await replicas[1].get(f"/v1/messages/{message_id}")
    assert response.status == 200, await response.text()
    assert (await response.json())["events"][0]["type"] == "accepted"
    assert time.monotonic() - started < 2.0
    # Unknown stays unknown, once the other replicas had time to store it.
    unknown = await replicas[1].get("/v1/messages/msg_" + "0" * 32)
    assert unknown.status == 404


async def test_an_otp_is_stored_with_its_code_masked(
    client: Client, sms_path: Path, tmp_path: Path
) -> None:
    response = await client.post("/v1/otp", json={"phone": PHONE})
    message_id = (await response.json())["message_id"]
    (sms,) = await wait_sms(sms_path, 1)
    code = code_in(sms["body"])
    trail = await trail_when(client, message_id, "sent")
    assert trail["body"] == sms["body"].replace(code, "*" * len(code))
    assert trail["priority"] == "high"
    await client.close()  # the writer flushes on stop
    stored = sqlite3.connect(tmp_path / "audit.sqlite3")
    rows = stored.execute("SELECT event FROM audit_events").fetchall()
    stored.close()
    assert rows
    assert not any(code.encode() in row[0] for row in rows)


async def test_retries_and_failures_are_in_the_trail(
    aiohttp_client: Any, aiohttp_server: Any, sms_path: Path
) -> None:
    fake = FakeTwilio(faults=Faults(fail_5xx=1.0))
    server = await aiohttp_server(fake.make_app())
    client = await app_client(
        aiohttp_client,
        sms_path,
        providers=[twilio_provider(server)],
        dispatch={"max_attempts": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.02},
    )
    message_id = await send(client, PHONE, "hello")
    trail = await trail_when(client, message_id, "failed")
    kinds = [e["type"] for e in trail["events"]]
    assert kinds == ["accepted", "queued", "sending", "retry", "sending", "failed"]
    assert trail["attempts"] == 2
    retry = trail["events"][3]
    assert retry["provider"] == "twilio"
    assert retry["possible_duplicate"] is True  # a 5xx may come after the SMS went out
    assert "reason" in trail["events"][5]


async def test_a_rejected_number_fails_at_once(
    aiohttp_client: Any, aiohttp_server: Any, sms_path: Path
) -> None:
    fake = FakeTwilio(faults=Faults(reject_numbers=frozenset({PHONE})))
    server = await aiohttp_server(fake.make_app())
    client = await app_client(aiohttp_client, sms_path, providers=[twilio_provider(server)])
    message_id = await send(client, PHONE, "hello")
    trail = await trail_when(client, message_id, "failed")
    assert [e["type"] for e in trail["events"]] == ["accepted", "queued", "sending", "failed"]


async def test_a_client_sees_only_its_own_messages(aiohttp_client: Any, sms_path: Path) -> None:
    client = await app_client(aiohttp_client, sms_path, clients=CLIENTS)
    message_id = await send(client, PHONE, "for the shop", who="shop")
    mine = await client.get(f"/v1/messages/{message_id}", headers=auth("shop"))
    assert mine.status == 200
    theirs = await client.get(f"/v1/messages/{message_id}", headers=auth("login"))
    assert theirs.status == 404
    assert (await theirs.json())["type"] == "urn:smsgw:problem:message-not-found"
    unknown = await client.get("/v1/messages/msg_" + "0" * 32, headers=auth("shop"))
    assert unknown.status == 404
    anonymous = await client.get(f"/v1/messages/{message_id}")
    assert anonymous.status == 401
    listing = await client.get("/v1/messages", params={"to": PHONE}, headers=auth("login"))
    assert (await listing.json())["messages"] == []


async def test_listing_pages_newest_first_across_pages(client: Client) -> None:
    sent = [await send(client, PHONE, f"message {n}") for n in range(7)]
    await send(client, OTHER_PHONE, "not this number")
    assert len(await listed_ids(client, PHONE, 7)) == 7
    seen: list[str] = []
    pages = 0
    cursor = None
    while True:
        params = {"to": PHONE, "limit": "3"}
        if cursor:
            params["cursor"] = cursor
        response = await client.get("/v1/messages", params=params)
        assert response.status == 200, await response.text()
        page = await response.json()
        pages += 1
        seen += [m["id"] for m in page["messages"]]
        assert all(m["to"] == PHONE for m in page["messages"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(sent))


async def test_listing_takes_an_unencoded_plus_and_a_time_range(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `since` below is in whole seconds, so "early" must be accepted a second or more before
    # `middle`: its acceptance is recorded 2 s back instead of waiting for the clock to move.
    audit = client.app[AUDIT]
    accepted = audit.accepted

    def two_seconds_back(message_id: str, at: float, **details: Any) -> None:
        accepted(message_id, at - 2.0, **details)

    monkeypatch.setattr(audit, "accepted", two_seconds_back)
    early = await send(client, PHONE, "early")
    monkeypatch.setattr(audit, "accepted", accepted)
    middle = time.time()
    late = await send(client, PHONE, "late")
    assert await listed_ids(client, PHONE, 2) == [late, early]
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(middle))
    # "+" left unencoded in the query string arrives as a space.
    response = await client.get(f"/v1/messages?to=+{PHONE[1:]}&since={since}")
    assert [m["id"] for m in (await response.json())["messages"]] == [late]
    until = datetime.fromtimestamp(middle - 0.5, UTC).isoformat()  # fractions are fine too
    response = await client.get("/v1/messages", params={"to": PHONE, "until": until})
    assert [m["id"] for m in (await response.json())["messages"]] == [early]
    response = await client.get("/v1/messages", params={"to": PHONE})
    listed = (await response.json())["messages"]
    assert [m["id"] for m in listed] == [late, early]
    assert set(listed[0]) == {
        "id",
        "to",
        "status",
        "provider",
        "attempts",
        "client_ref",
        "priority",
        "body",
        "segments",
        "encoding",
        "created_at",
    }
    assert (listed[0]["segments"], listed[0]["encoding"]) == (1, "GSM-7")


async def test_bad_listing_queries_are_400_problems(client: Client) -> None:
    bad_cursor = base64.urlsafe_b64encode(b"no separator").decode()
    cases = {
        "": "to",
        "to=not-a-number": "to",
        f"to={PHONE}&limit=0": "limit",
        f"to={PHONE}&limit=101": "limit",
        f"to={PHONE}&limit=ten": "limit",
        f"to={PHONE}&since=yesterday": "since",
        f"to={PHONE}&since=2026-01-01T00:00:00": "since",
        f"to={PHONE}&since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z": "since",
        f"to={PHONE}&cursor=%%%": "cursor",
        f"to={PHONE}&cursor={bad_cursor}": "cursor",
        f"to={PHONE}&colour=red": "colour",
        f"to={PHONE}&to={OTHER_PHONE}": "to",
    }
    for query, parameter in cases.items():
        response = await client.get("/v1/messages?" + query.replace("+", "%2B"))
        assert response.status == 400, query
        assert response.content_type == "application/problem+json"
        problem = await response.json()
        assert problem["type"] == "urn:smsgw:problem:invalid-query", query
        assert problem["errors"][0]["pointer"] == f"?{parameter}", query
