"""Idempotency-Key: the same key and body replay the first answer and send nothing new."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from tests.helpers import app_client, code_in, read_sms, wait_sms

PHONE = "+14155550100"
OTHER_PHONE = "+14155550101"
PROBLEM = "application/problem+json"

Client = TestClient[Any, Any]


async def settled_sms(path: Path, count: int) -> list[dict[str, Any]]:
    """Wait for `count` SMS, then a little longer so an extra one would show up too."""
    await wait_sms(path, count)
    await asyncio.sleep(0.1)
    return read_sms(path)


async def post(client: Client, path: str, body: Any, key: str | None) -> tuple[int, Any, Any]:
    headers = {} if key is None else {"Idempotency-Key": key}
    response = await client.post(path, json=body, headers=headers)
    raw = await response.read()
    return response.status, orjson.loads(raw), response


def slug(payload: dict[str, Any]) -> str:
    problem_type = payload["type"]
    assert isinstance(problem_type, str)
    return problem_type.rsplit(":", 1)[-1]


async def sent_count(client: Client) -> int:
    response = await client.get("/readyz")
    count: int = (await response.json())["dispatch"]["sent"]
    return count


# -- replay --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "expected_sms"),
    [
        ("/v1/messages", {"to": PHONE, "body": "once"}, 1),
        (
            "/v1/messages/batch",
            {"messages": [{"to": PHONE, "body": "a"}, {"to": OTHER_PHONE, "body": "b"}]},
            2,
        ),
        ("/v1/otp", {"phone": PHONE}, 1),
    ],
)
async def test_same_key_same_body_replays_and_sends_once(
    client: Client, sms_path: Path, path: str, body: Any, expected_sms: int
) -> None:
    status, first, response = await post(client, path, body, "key-1")
    assert status == 202
    assert "Idempotent-Replayed" not in response.headers
    for _ in range(3):
        status, again, response = await post(client, path, body, "key-1")
        assert status == 202
        assert again == first  # same ids, same times
        assert response.headers["Idempotent-Replayed"] == "true"
        assert response.content_type == "application/json"
    sms = await settled_sms(sms_path, expected_sms)
    assert len(sms) == expected_sms
    assert await sent_count(client) == expected_sms


async def test_replayed_otp_start_is_not_a_resend(client: Client, sms_path: Path) -> None:
    # Without the key the second start would be refused by the resend cooldown.
    status, first, _ = await post(client, "/v1/otp", {"phone": PHONE}, "otp-key")
    assert status == 202
    status, again, _ = await post(client, "/v1/otp", {"phone": PHONE}, "otp-key")
    assert status == 202
    assert again["id"] == first["id"]
    sms = await settled_sms(sms_path, 1)
    assert len(sms) == 1
    # The replayed id is the live verification.
    response = await client.post(
        "/v1/otp/verify", json={"id": first["id"], "code": code_in(sms[0]["body"])}
    )
    assert response.status == 200
    assert (await response.json())["status"] == "approved"


async def test_keys_are_independent(client: Client, sms_path: Path) -> None:
    body = {"to": PHONE, "body": "same body"}
    _, first, _ = await post(client, "/v1/messages", body, "key-a")
    _, second, _ = await post(client, "/v1/messages", body, "key-b")
    _, third, _ = await post(client, "/v1/messages", body, None)
    assert len({first["id"], second["id"], third["id"]}) == 3
    assert len(await settled_sms(sms_path, 3)) == 3


# -- misuse of a key -----------------------------------------------------------------------


async def test_same_key_other_body_is_422(client: Client, sms_path: Path) -> None:
    status, first, _ = await post(client, "/v1/messages", {"to": PHONE, "body": "one"}, "k")
    assert status == 202
    status, payload, response = await post(
        client, "/v1/messages", {"to": PHONE, "body": "two"}, "k"
    )
    assert status == 422
    assert response.content_type == PROBLEM
    assert slug(payload) == "idempotency-key-reused"
    assert payload["status"] == 422
    sms = await settled_sms(sms_path, 1)
    assert [s["body"] for s in sms] == ["one"]
    # The first answer is still what the key replays.
    status, again, _ = await post(client, "/v1/messages", {"to": PHONE, "body": "one"}, "k")
    assert status == 202
    assert again == first


async def test_same_key_on_another_route_is_422(client: Client, sms_path: Path) -> None:
    status, _, _ = await post(client, "/v1/messages", {"to": PHONE, "body": "one"}, "k")
    assert status == 202
    batch = {"messages": [{"to": PHONE, "body": "one"}]}
    status, payload, _ = await post(client, "/v1/messages/batch", batch, "k")
    assert status == 422
    assert slug(payload) == "idempotency-key-reused"
    status, payload, _ = await post(client, "/v1/otp", {"phone": PHONE}, "k")
    assert status == 422
    assert slug(payload) == "idempotency-key-reused"
    assert len(await settled_sms(sms_path, 1)) == 1


# -- which answers are stored --------------------------------------------------------------


async def test_a_4xx_answer_is_replayed(client: Client, sms_path: Path) -> None:
    body = {"to": "+1555", "body": "x"}
    status, first, response = await post(client, "/v1/messages", body, "bad-1")
    assert status == 400
    assert "Idempotent-Replayed" not in response.headers
    status, again, response = await post(client, "/v1/messages", body, "bad-1")
    assert status == 400
    assert again == first
    assert response.headers["Idempotent-Replayed"] == "true"
    assert response.headers["Content-Type"] == PROBLEM
    await asyncio.sleep(0.05)
    assert read_sms(sms_path) == []


async def test_a_verify_answer_is_replayed_without_counting_an_attempt(
    client: Client, sms_path: Path
) -> None:
    status, started, _ = await post(client, "/v1/otp", {"phone": PHONE}, None)
    assert status == 202
    sms = await wait_sms(sms_path, 1)
    code = code_in(sms[0]["body"])
    bad = "".join(str((int(d) + 1) % 10) for d in code)
    check = {"id": started["id"], "code": bad}
    status, first, _ = await post(client, "/v1/otp/verify", check, "check-1")
    assert status == 200
    assert first["attempts_left"] == 4
    status, again, response = await post(client, "/v1/otp/verify", check, "check-1")
    assert status == 200
    assert again == first
    assert response.headers["Idempotent-Replayed"] == "true"
    # The replay did not use an attempt: the next real check is the second one.
    status, fresh, _ = await post(client, "/v1/otp/verify", check, None)
    assert status == 200
    assert fresh["attempts_left"] == 3


async def test_a_cooldown_429_is_not_stored(aiohttp_client: Any, sms_path: Path) -> None:
    client = await app_client(aiohttp_client, sms_path, otp={"resend_cooldown_s": 1})
    status, _, _ = await post(client, "/v1/otp", {"phone": PHONE}, None)
    assert status == 202
    status, payload, response = await post(client, "/v1/otp", {"phone": PHONE}, "retry-me")
    assert status == 429
    assert slug(payload) == "resend-cooldown"
    assert "Idempotent-Replayed" not in response.headers
    await asyncio.sleep(float(response.headers["Retry-After"]) + 0.05)
    status, started, response = await post(client, "/v1/otp", {"phone": PHONE}, "retry-me")
    assert status == 202, started
    assert "Idempotent-Replayed" not in response.headers
    # ... and now that success is what the key replays.
    status, again, response = await post(client, "/v1/otp", {"phone": PHONE}, "retry-me")
    assert status == 202
    assert again == started
    assert response.headers["Idempotent-Replayed"] == "true"
    assert len(await settled_sms(sms_path, 2)) == 2


async def test_a_queue_full_503_is_not_stored(aiohttp_client: Any, sms_path: Path) -> None:
    client = await app_client(aiohttp_client, sms_path, queue={"max_size": 2})
    batch = {"messages": [{"to": PHONE, "body": f"m{i}"} for i in range(3)]}
    status, payload, _ = await post(client, "/v1/messages/batch", batch, "full")
    assert status == 503
    assert slug(payload) == "queue-full"
    status, payload, response = await post(client, "/v1/messages/batch", batch, "full")
    assert status == 503
    assert "Idempotent-Replayed" not in response.headers


# -- the key itself ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["", "k" * 256, "has space", "tab\there"],
    ids=["empty", "256-chars", "space", "tab"],
)
async def test_invalid_key_is_400(client: Client, sms_path: Path, key: str) -> None:
    status, payload, response = await post(client, "/v1/messages", {"to": PHONE, "body": "x"}, key)
    assert status == 400
    assert response.content_type == PROBLEM
    assert slug(payload) == "invalid-idempotency-key"
    assert payload["status"] == 400
    await asyncio.sleep(0.05)
    assert read_sms(sms_path) == []
    assert await sent_count(client) == 0


@pytest.mark.parametrize("key", ["k" * 255, "x", "550e8400-e29b-41d4-a716-446655440000", "!~"])
async def test_valid_keys_are_accepted(client: Client, sms_path: Path, key: str) -> None:
    status, first, _ = await post(client, "/v1/messages", {"to": PHONE, "body": "x"}, key)
    assert status == 202
    status, again, response = await post(client, "/v1/messages", {"to": PHONE, "body": "x"}, key)
    assert status == 202
    assert again == first
    assert response.headers["Idempotent-Replayed"] == "true"


async def test_keys_belong_to_their_client(aiohttp_client: Any, sms_path: Path) -> None:
    clients = [{"name": "app-a", "key": "a" * 20}, {"name": "app-b", "key": "b" * 20}]
    client = await app_client(aiohttp_client, sms_path, clients=clients)
    answers = []
    for token, body in (("a" * 20, "from a"), ("b" * 20, "from b")):
        response = await client.post(
            "/v1/messages",
            json={"to": PHONE, "body": body},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "shared"},
        )
        assert response.status == 202
        assert "Idempotent-Replayed" not in response.headers
        answers.append(await response.json())
    assert answers[0]["id"] != answers[1]["id"]
    sms = await settled_sms(sms_path, 2)
    assert sorted(s["body"] for s in sms) == ["from a", "from b"]
