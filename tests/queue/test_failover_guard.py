"""After a Redis primary change, a copy of an entry another consumer holds or finished is not
sent again (smsgw.queue.failover).

One real Redis plays both primaries: "the new primary never saw the read" is the consumer
group's last-delivered id set back (XGROUP SETID), so the entry is handed out again, as a
promoted replica that missed the XREADGROUP would; each consumer's PrimaryWatch is told the
address changed, as the Sentinel pool does when it finds the new primary.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

import smsgw.queue.failover as failover_module
import smsgw.queue.redis as queue_module
from smsgw.queue.failover import GRACE_S
from smsgw.queue.message import Message
from smsgw.queue.redis import RedisQueue
from smsgw.queue.sealing import QueueCipher
from smsgw.redis_connect import PrimaryWatch
from smsgw.redis_keys import QUEUE_GROUP, RedisKeys
from smsgw.settings import QueueSettings

pytestmark = pytest.mark.timeout(30)

KEYS = RedisKeys("guard:")
CIPHER = QueueCipher(b"g" * 32)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def message(body: str) -> Message:
    return Message(to="+14155550100", country="US", body=body, client="app")


async def test_a_copy_held_elsewhere_or_finished_is_skipped_after_a_change(
    client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    watches = {name: PrimaryWatch(address="127.0.0.1:1") for name in ("a", "b")}
    queues: dict[str, RedisQueue] = {}
    for name in ("a", "b"):
        # Each consumer's client would have its own pool, hence its own watch.
        monkeypatch.setattr(failover_module, "primary_watch", lambda _, w=watches[name]: w)
        monkeypatch.setattr(queue_module, "primary_watch", lambda _, w=watches[name]: w)
        queues[name] = RedisQueue(client, KEYS, QueueSettings(), name, cipher=CIPHER)
    a, b = queues["a"], queues["b"]
    stream = KEYS.stream("normal")
    try:
        await a.put(message("held by a"))
        await a.put(message("finished by a"))
        (held_id, _), (finished_id, _) = await client.xrange(stream)
        held = await a.get()
        finished = await a.get()
        await a.ack(finished)
        while a.depth() > 1:  # the ack settled (and the entry is deleted: finished)
            await asyncio.sleep(0.01)
        finished_marker = KEYS.done_marker("normal", finished_id.decode())
        assert not await client.exists(finished_marker)  # nobody else could hold a copy
        # b waits for work (parked in get(): what a dispatcher's intake does when idle).
        waiting = asyncio.create_task(b.get())
        await asyncio.sleep(0.3)
        assert not waiting.done()
        # The promoted replica never saw a's read of the entry it holds.
        await client.xgroup_setid(stream, QUEUE_GROUP, "0")
        for watch in watches.values():
            watch.seen("127.0.0.1", 2)
        changed_at = time.monotonic()
        copy = await waiting
        # Nothing handed out during the grace, so a's markers were written first: the
        # done marker of what it finished (a new primary that missed the ack would hand
        # that entry out again too) and a held marker for what it holds.
        assert time.monotonic() - changed_at >= GRACE_S - 0.05
        assert await client.exists(finished_marker)
        assert copy.body == "held by a"
        assert await b.was_sent(copy)  # not b's to send
        await b.ack(copy)  # dropped here only: left pending, not acknowledged
        assert b.stats.duplicates_skipped == 1
        # a still sends what it holds, and finishes it; whoever claims the copy left
        # pending for b after the visibility timeout finds it done.
        await a.ack(held)
        await a.close()
        await b.close()
        assert [entry_id for entry_id, _ in await client.xrange(stream)] == [held_id]
        assert await client.exists(KEYS.done_marker("normal", held_id.decode()))
    finally:
        for queue in queues.values():
            await queue.close()


async def test_without_a_change_seen_the_copy_would_be_sent_again(
    client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The case the guard exists for (so the test above can fail)."""
    watch = PrimaryWatch(address="127.0.0.1:1")
    monkeypatch.setattr(failover_module, "primary_watch", lambda _: watch)
    monkeypatch.setattr(queue_module, "primary_watch", lambda _: watch)
    a = RedisQueue(client, KEYS, QueueSettings(), "a", cipher=CIPHER)
    b = RedisQueue(client, KEYS, QueueSettings(), "b", cipher=CIPHER)
    try:
        await a.put(message("held by a"))
        await a.get()
        await client.xgroup_setid(KEYS.stream("normal"), QUEUE_GROUP, "0")
        copy = await asyncio.wait_for(b.get(), 5)
        assert not await b.was_sent(copy)
    finally:
        await a.close()
        await b.close()
