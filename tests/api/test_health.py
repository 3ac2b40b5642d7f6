"""Liveness, readiness and the draining state."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

import smsgw.app
from smsgw.app_keys import STATE
from tests.helpers import make_settings, read_sms

PHONE = "+14155550100"
PROBLEM = "application/problem+json"
# Routes that queue new messages: refused while draining.
POSTS = {
    "/v1/otp": {"phone": PHONE},
    "/v1/messages": {"to": PHONE, "body": "late"},
    "/v1/messages/batch": {"messages": [{"to": PHONE, "body": "late"}]},
}

Client = TestClient[Any, Any]


def slug(payload: dict[str, Any]) -> str:
    problem_type = payload["type"]
    assert isinstance(problem_type, str)
    return problem_type.rsplit(":", 1)[-1]


async def test_healthz(client: Client) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == {"status": "ok"}


async def test_readyz_while_running(client: Client) -> None:
    response = await client.get("/readyz")
    assert response.status == 200
    payload = await response.json()
    assert payload["status"] == "ready"
    assert payload["queue_depth"] == 0
    assert payload["dispatch"]["sent"] == 0


async def test_readyz_counts_sent_messages(client: Client, sms_path: Path) -> None:
    response = await client.post(
        "/v1/messages/batch",
        json={"messages": [{"to": PHONE, "body": str(i)} for i in range(3)]},
    )
    assert response.status == 202
    deadline = time.monotonic() + 2
    while True:
        payload = await (await client.get("/readyz")).json()
        if payload["dispatch"]["sent"] == 3 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    assert payload["dispatch"]["sent"] == 3
    assert payload["queue_depth"] == 0


async def assert_draining(client: Client, sms_path: Path) -> None:
    response = await client.get("/readyz")
    assert response.status == 503
    assert response.headers["Content-Type"] == PROBLEM
    payload = await response.json(content_type=None)
    assert payload["status"] == 503
    for route, body in POSTS.items():
        response = await client.post(route, json=body)
        assert response.status == 503, route
        assert response.headers["Content-Type"] == PROBLEM
        assert int(response.headers["Retry-After"]) >= 1
        payload = await response.json(content_type=None)
        assert slug(payload) == "draining"
        assert payload["status"] == 503
    # Checking a code queues nothing: it keeps working while the replica drains, so a code
    # already on its way can still be used (here: nothing pending, answered like a wrong code).
    response = await client.post("/v1/otp/verify", json={"phone": PHONE, "code": "123456"})
    assert response.status == 200
    assert (await response.json())["valid"] is False
    # Liveness is unaffected: the process is healthy, just stopping.
    assert (await client.get("/healthz")).status == 200
    await asyncio.sleep(0.05)
    assert all(sms["body"] != "late" for sms in read_sms(sms_path))


async def test_after_drain_not_ready_and_posts_refused(client: Client, sms_path: Path) -> None:
    assert await smsgw.app.drain(client.app) is True
    await assert_draining(client, sms_path)


async def test_draining_flag_alone(client: Client, sms_path: Path) -> None:
    client.app[STATE].draining = True
    await assert_draining(client, sms_path)


async def test_drain_waits_for_queued_messages(client: Client, sms_path: Path) -> None:
    response = await client.post(
        "/v1/messages/batch",
        json={"messages": [{"to": PHONE, "body": f"queued {i}"} for i in range(50)]},
    )
    assert response.status == 202
    assert await smsgw.app.drain(client.app) is True
    # Everything accepted had its outcome before drain() returned.
    assert len(read_sms(sms_path)) == 50


@pytest.mark.parametrize("auth", [False, True])
async def test_draining_is_checked_after_auth(
    aiohttp_client: Any, sms_path: Path, auth: bool
) -> None:
    clients = [{"name": "login-app", "key": "k" * 20}]
    app = smsgw.app.create_app(make_settings(sms_path, clients=clients))
    client: Client = await aiohttp_client(app)
    app[STATE].draining = True
    headers = {"Authorization": "Bearer " + "k" * 20} if auth else {}
    response = await client.post("/v1/messages", json=POSTS["/v1/messages"], headers=headers)
    assert response.status == (503 if auth else 401)
