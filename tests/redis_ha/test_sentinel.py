"""Redis behind Sentinel, with real processes (a primary, replicas, three sentinels): the
clients follow a failover without a restart, a 202 waits for a replica and says 503 when
none has the message, and /readyz tells whether a primary is reachable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient

from smsgw.app import create_app
from smsgw.queue import Message
from smsgw.queue.redis import NotReplicated, RedisQueue
from smsgw.queue.sealing import QueueCipher
from smsgw.redis_connect import connect_redis, primary_watch, probe_primary
from smsgw.redis_keys import RedisKeys
from smsgw.settings import QueueSettings, RedisSettings
from testkit.services import SentinelSet
from tests.helpers import make_settings

pytestmark = pytest.mark.timeout(90)

Client = TestClient[Any, Any]
PHONE = "+14155550100"


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    servers = SentinelSet(tmp_path / "redis", replicas=2)
    servers.start()
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture
async def client_of(sentinel_set: SentinelSet) -> AsyncIterator[redis.asyncio.Redis]:
    settings = RedisSettings(sentinels=tuple(sentinel_set.sentinels))
    client = connect_redis(settings, socket_timeout=1, socket_connect_timeout=0.5)
    try:
        yield client
    finally:
        await client.aclose()


async def write_until_it_works(client: redis.asyncio.Redis, timeout_s: float) -> float:
    """Seconds until INCR succeeded again."""
    started = time.monotonic()
    while True:
        try:
            await client.incr("writes")
            return time.monotonic() - started
        except redis.RedisError:
            if time.monotonic() - started > timeout_s:
                raise
            await asyncio.sleep(0.05)


async def test_a_client_follows_a_failover_without_a_restart(
    sentinel_set: SentinelSet, client_of: redis.asyncio.Redis
) -> None:
    await client_of.set("kept", "1")
    assert await client_of.execute_command("WAIT", 2, 1000) == 2
    old = sentinel_set.kill_primary()
    killed = time.monotonic()
    new_port = await asyncio.to_thread(sentinel_set.wait_for_failover, old.port)
    failover_s = time.monotonic() - killed
    again_s = await write_until_it_works(client_of, timeout_s=30)
    # Writable again at most 2 s after the sentinels named the new primary.
    assert again_s <= failover_s + 2.0, (again_s, failover_s)
    assert await client_of.get("kept") == b"1"  # replicated before the kill: survived
    watch = primary_watch(client_of)
    assert watch is not None
    assert watch.primary_changes == 1
    assert watch.address == f"127.0.0.1:{new_port}"
    assert watch.connects >= 2


async def test_the_probe_moves_idle_clients_after_a_coordinated_failover(
    sentinel_set: SentinelSet, client_of: redis.asyncio.Redis
) -> None:
    """SENTINEL FAILOVER demotes a primary that is still running: a client whose connections
    never failed must not keep writing to it (it would answer READONLY, or, partitioned,
    take writes nobody else sees)."""
    await client_of.set("before", "1")
    old = sentinel_set.primary()
    sentinel_set.fail_over()
    new_port = await asyncio.to_thread(sentinel_set.wait_for_failover, old.port)
    watch = primary_watch(client_of)
    assert watch is not None
    deadline = time.monotonic() + 10
    while watch.primary_changes == 0:
        assert time.monotonic() < deadline, "the probe never saw the new primary"
        await probe_primary(client_of)
        await asyncio.sleep(0.1)
    await write_until_it_works(client_of, timeout_s=10)
    direct = redis.Redis(port=new_port)
    try:
        assert direct.get("writes") == b"1"  # the write reached the new primary
    finally:
        direct.close()


def message(body: str) -> Message:
    return Message(to=PHONE, country="US", body=body, client="app")


async def test_a_put_waits_for_a_replica_and_refuses_when_none_has_it(
    sentinel_set: SentinelSet, client_of: redis.asyncio.Redis
) -> None:
    queue = RedisQueue(
        client_of,
        RedisKeys("smsgw:"),
        QueueSettings(),
        "consumer-a",
        cipher=QueueCipher(b"k" * 32),
        replica_acks=2,
        replica_ack_timeout_s=0.3,
    )
    try:
        await queue.put(message("replicated"))
        assert queue.stats.replica_ack_timeouts == 0
        sentinel_set.cut_replication()
        started = time.monotonic()
        with pytest.raises(NotReplicated) as refused:
            await queue.put(message("on the primary alone"))
        assert 0.3 <= time.monotonic() - started < 2.0
        assert "0 of the 2 replicas" in refused.value.detail
        assert "Idempotency-Key" in refused.value.detail
        assert queue.stats.replica_ack_timeouts == 1
        # Refused, but in the queue all the same: it may still be sent (and is).
        bodies = {(await queue.get()).body for _ in range(2)}
        assert bodies == {"replicated", "on the primary alone"}
    finally:
        await queue.close()


@pytest.fixture
async def app_client(
    sentinel_set: SentinelSet,
    aiohttp_client: Callable[..., Awaitable[Client]],
    sms_path: Path,
) -> Client:
    redis_section = {
        "sentinels": sentinel_set.sentinels,
        "min_replicas_ack": 2,
        "replica_ack_timeout_s": 0.3,
    }
    return await aiohttp_client(create_app(make_settings(sms_path, redis=redis_section)))


async def test_a_message_no_replica_has_is_a_503_that_says_so_and_is_audited(
    sentinel_set: SentinelSet, app_client: Client
) -> None:
    accepted = await app_client.post("/v1/messages", json={"to": PHONE, "body": "first"})
    assert accepted.status == 202
    sentinel_set.cut_replication()
    refused = await app_client.post("/v1/messages", json={"to": PHONE, "body": "second"})
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "1"
    problem = await refused.json()
    assert problem["type"].endswith("not-replicated")
    assert "retry with the same Idempotency-Key" in problem["detail"]
    # It may still be sent, so its trail starts as any other's.
    deadline = time.monotonic() + 10
    while True:
        listed = await app_client.get("/v1/messages", params={"to": PHONE})
        if len((await listed.json())["messages"]) == 2:
            break
        assert time.monotonic() < deadline, await listed.json()
        await asyncio.sleep(0.1)
    metrics = await (await app_client.get("/metrics")).text()
    assert "smsgw_queue_replica_ack_timeouts_total 1.0" in metrics


async def test_a_retry_with_the_idempotency_key_gets_the_202_not_a_second_copy(
    sentinel_set: SentinelSet, app_client: Client
) -> None:
    sentinel_set.cut_replication()
    headers = {"Idempotency-Key": "retry-me-0001"}
    batch = {"messages": [{"to": PHONE, "body": f"m{n}"} for n in range(3)]}
    refused = await app_client.post("/v1/messages/batch", json=batch, headers=headers)
    assert refused.status == 503
    assert (await refused.json())["type"].endswith("not-replicated")
    # Queued on the primary all the same: the retry replays their 202 (the primary still
    # has the kept answer; had it died, the answer would be gone with the messages).
    again = await app_client.post("/v1/messages/batch", json=batch, headers=headers)
    assert again.status == 202
    ids = (await again.json())["ids"]
    assert len(ids) == 3
    deadline = time.monotonic() + 10
    while True:
        listed = await app_client.get("/v1/messages", params={"to": PHONE})
        found = {m["id"] for m in (await listed.json())["messages"]}
        if found >= set(ids):
            break
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.1)
    assert found == set(ids)  # three messages, not six


async def test_readyz_needs_a_reachable_primary(
    sentinel_set: SentinelSet, app_client: Client
) -> None:
    assert (await app_client.get("/readyz")).status == 200
    old = sentinel_set.kill_primary()
    down = await app_client.get("/readyz")
    assert down.status == 503
    assert "no Redis primary reachable" in (await down.json())["detail"]
    await asyncio.to_thread(sentinel_set.wait_for_failover, old.port)
    deadline = time.monotonic() + 5
    while (await app_client.get("/readyz")).status != 200:
        assert time.monotonic() < deadline, "not ready again after the failover"
        await asyncio.sleep(0.1)
    metrics = await (await app_client.get("/metrics")).text()
    assert "smsgw_redis_primary_changes_total 1.0" in metrics
