"""Idempotency-Key: the same key and body replay the first answer and send nothing new."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from smsgw.api.idempotency import (
    IN_FLIGHT_TTL_S,
    Idempotency,
    IdempotencyBackend,
    MemoryIdempotencyBackend,
)
from smsgw.api.idempotency_redis import RedisIdempotencyBackend
from smsgw.api.problems import Problem, problem_response
from smsgw.errors import ConfigError
from smsgw.redis_keys import IDEMPOTENCY_TTL_S, RedisKeys
from smsgw.settings import IdempotencySettings, parse_settings
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


# -- what is kept, and how much ------------------------------------------------------------
# The decision logic (smsgw.api.idempotency.Idempotency) with each backend, against a handler
# that counts its executions: a re-execution is what a duplicate send would be.


class Handler:
    """A POST handler's stand-in: answers `body` with `status`, counting executions."""

    def __init__(self, body: bytes = b'{"id":"msg_1","status":"queued"}', status: int = 202):
        self.body = body
        self.status = status
        self.calls = 0
        self.gate: asyncio.Event | None = None  # set: the call waits for it (in flight)

    async def __call__(self) -> web.Response:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        content_type = "application/json" if self.status < 400 else PROBLEM
        return web.Response(
            status=self.status, body=self.body, headers={"Content-Type": content_type}
        )


def fingerprint(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


async def run(idem: Idempotency, client: str, key: str, handler: Handler) -> web.Response:
    try:
        return await idem.run(client, key, fingerprint(key), handler)
    except Problem as problem:
        return problem_response(problem)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


REDIS_KEYS = RedisKeys("t:")

BackendFactory = Callable[..., IdempotencyBackend]


@pytest.fixture(params=["memory", "redis"])
async def make_backend(
    request: pytest.FixtureRequest, redis_url: str
) -> AsyncIterator[BackendFactory]:
    if request.param == "memory":
        yield MemoryIdempotencyBackend
        return
    client = Redis.from_url(redis_url)
    yield functools.partial(RedisIdempotencyBackend, client, REDIS_KEYS)
    await client.aclose()


async def test_an_answer_too_large_to_keep_is_refused_not_replayed_or_executed_again(
    make_backend: BackendFactory,
) -> None:
    idem = Idempotency(make_backend())
    huge = Handler(os.urandom(IdempotencySettings().max_answer_bytes + 1))
    first = await run(idem, "c", "huge", huge)
    assert (first.status, first.body) == (202, huge.body)
    again = await run(idem, "c", "huge", huge)
    assert huge.calls == 1  # never executed twice
    assert again.status == 410
    assert again.content_type == PROBLEM
    payload = orjson.loads(again.body)  # never a different (truncated) body as the answer
    assert slug(payload) == "idempotent-answer-not-kept"
    assert hashlib.sha256(huge.body).hexdigest() in payload["detail"]
    assert again.headers["Idempotent-Replayed"] == "true"


async def test_a_refusal_too_large_to_keep_runs_again_and_gives_the_same_problem(
    make_backend: BackendFactory,
) -> None:
    # A refusal changed nothing: running it again is safe, and gives the same answer.
    idem = Idempotency(make_backend(client_budget_bytes=64_000), max_answer_bytes=16_000)
    refusal = Handler(os.urandom(20_000), status=400)
    for _ in range(2):
        answer = await run(idem, "c", "bad", refusal)
        assert (answer.status, answer.body) == (400, refusal.body)
        assert "Idempotent-Replayed" not in answer.headers
    assert refusal.calls == 2


async def test_one_client_filling_the_memory_cache_cannot_evict_anothers_in_flight_claim() -> None:
    idem = Idempotency(MemoryIdempotencyBackend())  # as the app builds it
    slow = Handler()
    slow.gate = asyncio.Event()
    first = asyncio.create_task(run(idem, "client-b", "b-key", slow))
    await asyncio.sleep(0)
    assert slow.calls == 1  # client B's request is running: its key is claimed
    # Client A sends many small requests with keys of its own meanwhile.
    for i in range(100_001):
        await run(idem, "client-a", f"a-{i}", Handler())
    slow.gate.set()
    assert (await first).status == 202
    # B's retry (its client timed out) must get the first answer, not send again.
    again = await run(idem, "client-b", "b-key", slow)
    assert again.status == 202
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert slow.calls == 1


def _held_bytes(snapshot: tracemalloc.Snapshot, before: tracemalloc.Snapshot) -> int:
    return sum(stat.size_diff for stat in snapshot.compare_to(before, "filename"))


@pytest.mark.parametrize(
    ("size", "count"),
    [(50_000, 300), (60, 25_000)],
    ids=["large-answers", "small-answers"],
)
async def test_the_memory_backend_keeps_at_most_its_budget_per_client(
    size: int, count: int
) -> None:
    idem = Idempotency(MemoryIdempotencyBackend())
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(count):  # random bodies: compression does not help
            await run(idem, "big", f"{i:036d}", Handler(os.urandom(size)))
        held = _held_bytes(tracemalloc.take_snapshot(), before)
    finally:
        tracemalloc.stop()
    budget = IdempotencySettings().client_budget_bytes
    assert held <= budget * 1.25, f"{held} bytes held for one client"


async def _redis_bytes(redis: Redis, pattern: str = "t:idem:*") -> int:
    total = 0
    async for key in redis.scan_iter(pattern, count=1000):
        total += await redis.memory_usage(key) or 0
    return total


async def test_the_redis_backend_keeps_at_most_its_budget_per_client(redis: Redis) -> None:
    idem = Idempotency(RedisIdempotencyBackend(redis, REDIS_KEYS))
    for i in range(300):
        await run(idem, "big", f"k{i}", Handler(os.urandom(50_000)))
    held = await _redis_bytes(redis)
    settings = IdempotencySettings()
    assert held <= (settings.client_budget_bytes + settings.max_answer_bytes) * 1.1, held
    # Every key it keeps expires.
    async for key in redis.scan_iter("t:idem:*"):
        assert 0 < await redis.pttl(key) <= (IDEMPOTENCY_TTL_S + IN_FLIGHT_TTL_S) * 1000, key
    # The newest answers are the ones kept, and they replay.
    newest = Handler()
    again = await run(idem, "big", "k299", newest)
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert newest.calls == 0


async def test_over_its_budget_a_client_evicts_only_its_own_oldest_answers(
    make_backend: BackendFactory,
) -> None:
    idem = Idempotency(make_backend(client_budget_bytes=64_000), max_answer_bytes=16_000)
    b_done, b_live = Handler(), Handler()
    b_live.gate = asyncio.Event()
    await run(idem, "b", "b-done", b_done)
    in_flight = asyncio.create_task(run(idem, "b", "b-live", b_live))
    await asyncio.sleep(0.01)
    a = [Handler(os.urandom(10_000)) for _ in range(20)]  # 200 KB: three times the budget
    for i, handler in enumerate(a):
        assert (await run(idem, "a", f"a-{i}", handler)).status == 202
    for i in (0, 19):  # A's oldest answer is gone, its newest still replays
        await run(idem, "a", f"a-{i}", a[i])
    assert (a[0].calls, a[19].calls) == (2, 1)
    # B's answer and B's request in flight are untouched.
    assert "Idempotent-Replayed" in (await run(idem, "b", "b-done", b_done)).headers
    busy = await run(idem, "b", "b-live", b_live)
    assert busy.status == 409  # still running: its retry waits, it does not run twice
    b_live.gate.set()
    await in_flight
    assert "Idempotent-Replayed" in (await run(idem, "b", "b-live", b_live)).headers
    assert (b_done.calls, b_live.calls) == (1, 1)


async def test_live_claims_filling_a_clients_budget_refuse_new_keys(
    make_backend: BackendFactory,
) -> None:
    idem = Idempotency(make_backend(client_budget_bytes=8_000), max_answer_bytes=2_000)
    gate = asyncio.Event()
    handlers: list[Handler] = []
    tasks = []
    refused = None
    for i in range(200):
        handler = Handler()
        handler.gate = gate
        handlers.append(handler)
        tasks.append(asyncio.create_task(run(idem, "busy", f"k{i}", handler)))
        await asyncio.sleep(0.005)
        if tasks[-1].done():
            refused = tasks[-1].result()
            break
    assert refused is not None, "200 requests in flight never filled 8 kB"
    assert refused.status == 429
    assert slug(orjson.loads(refused.body)) == "idempotency-budget-exhausted"
    assert int(refused.headers["Retry-After"]) >= 1
    assert handlers[-1].calls == 0  # refused before it ran
    # Another client is not affected.
    assert (await run(idem, "other", "k0", Handler())).status == 202
    gate.set()
    answers = await asyncio.gather(*tasks[:-1])
    assert {answer.status for answer in answers} == {202}
    # Finished answers can make room again: the refused key now runs.
    assert (await run(idem, "busy", f"k{len(tasks) - 1}", Handler())).status == 202


async def test_answers_and_claims_expire(make_backend: BackendFactory) -> None:
    idem = Idempotency(make_backend(answer_ttl_s=0.5, claim_ttl_s=0.5))
    done = Handler()
    await run(idem, "c", "done", done)
    stuck = Handler()
    stuck.gate = asyncio.Event()
    task = asyncio.create_task(run(idem, "c", "stuck", stuck))  # never finishes in time
    await asyncio.sleep(0.01)
    assert (await run(idem, "c", "stuck", Handler())).status == 409
    assert "Idempotent-Replayed" in (await run(idem, "c", "done", done)).headers
    await asyncio.sleep(0.6)
    # Both keys are free again: a new request with them runs.
    assert (await run(idem, "c", "done", done)).status == 202
    assert done.calls == 2
    fresh = Handler()
    assert (await run(idem, "c", "stuck", fresh)).status == 202
    assert fresh.calls == 1
    stuck.gate.set()
    await task


async def test_expired_redis_entries_leave_nothing_behind(redis: Redis) -> None:
    backend = RedisIdempotencyBackend(redis, REDIS_KEYS, answer_ttl_s=0.3, claim_ttl_s=0.2)
    idem = Idempotency(backend)
    for i in range(5):
        await run(idem, "c", f"k{i}", Handler())
    assert [key async for key in redis.scan_iter("t:idem:*")]
    await asyncio.sleep(0.6)  # every key, bookkeeping included, has a TTL
    assert [key async for key in redis.scan_iter("t:idem:*")] == []


async def test_a_large_problem_is_kept_compact_and_replayed(client: Client, sms_path: Path) -> None:
    bad = {"messages": [{"to": f"+1555{i:04d}", "body": "x"} for i in range(1000)]}
    status, first, response = await post(client, "/v1/messages/batch", bad, "bad-batch")
    assert status == 400
    assert len(first["errors"]) == 1000  # ~68 KB of problem, mostly repetition
    status, again, response = await post(client, "/v1/messages/batch", bad, "bad-batch")
    assert status == 400
    assert again == first
    assert response.headers["Idempotent-Replayed"] == "true"


async def test_the_app_applies_the_idempotency_settings(
    aiohttp_client: Any, sms_path: Path
) -> None:
    settings = {"max_answer_bytes": 1024, "client_budget_bytes": 4096}
    client = await app_client(aiohttp_client, sms_path, idempotency=settings)
    batch = {"messages": [{"to": PHONE, "body": f"m{i}"} for i in range(100)]}  # ~2 KB answer
    status, _, _ = await post(client, "/v1/messages/batch", batch, "big")
    assert status == 202
    status, payload, _ = await post(client, "/v1/messages/batch", batch, "big")
    assert status == 410
    assert slug(payload) == "idempotent-answer-not-kept"
    assert len(await settled_sms(sms_path, 100)) == 100  # sent once


def test_idempotency_settings_from_the_environment() -> None:
    env = {"SMSGW_IDEMPOTENCY_CLIENT_BUDGET_BYTES": "1048576"}
    assert parse_settings({}, env=env).idempotency.client_budget_bytes == 1048576
    with pytest.raises(ConfigError, match="client_budget_bytes"):
        parse_settings({"idempotency": {"client_budget_bytes": 1000}}, env={})
