"""RedisQueue against a private redis-server: the MemoryQueue behaviours that apply, and what
only a shared, durable queue has to do (restarts, several consumers, dead consumers,
duplicates, outages, a consumer process killed with SIGKILL)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from redis.asyncio import Redis

from smsgw.dispatch import Dispatcher, Route, Router
from smsgw.errors import QueueFull
from smsgw.limiter import MemoryLimiter
from smsgw.providers import TwilioProvider
from smsgw.queue._redis_support import Codec
from smsgw.queue.message import Message, Priority
from smsgw.queue.redis import QueueUnavailable, RedisQueue
from smsgw.queue.sealing import QueueCipher, Undecodable
from smsgw.redis_keys import DEDUPE_TTL_S, QUEUE_GROUP, RedisKeys
from smsgw.settings import DispatchSettings, QueueSettings, TwilioProviderSettings
from testkit.fake_provider import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN
from testkit.processes import REPO_ROOT, start_process, stop_process
from testkit.services import RedisServer
from tests.helpers import RecordedAudit

pytestmark = pytest.mark.timeout(30)

KEYS = RedisKeys("t:")
CIPHER = QueueCipher("queue-test-secret-0123456789abcdef")
QueueFactory = Callable[..., RedisQueue]


def msg(name: str, priority: Priority = "normal", **fields: Any) -> Message:
    return Message(
        to="+14155550100",
        country="US",
        body=name,
        client="c",
        priority=priority,
        id=name,
        **fields,
    )


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def make_queue(redis: Redis) -> AsyncIterator[QueueFactory]:
    """Queues on the test's Redis; all closed at the end (those a test did not close)."""
    queues: list[RedisQueue] = []

    def make(
        consumer: str,
        *,
        max_size: int = 100,
        visibility_s: float = 5.0,
        client: Redis | None = None,
        cipher: QueueCipher = CIPHER,
        **options: Any,
    ) -> RedisQueue:
        settings = QueueSettings(max_size=max_size, visibility_timeout_s=visibility_s)
        options.setdefault("prefetch_s", 0.0)  # exact order tests: read only what is asked
        queue = RedisQueue(client or redis, KEYS, settings, consumer, cipher=cipher, **options)
        queues.append(queue)
        return queue

    yield make
    for queue in queues:
        with contextlib.suppress(Exception):
            await queue.close(timeout_s=1.0)


async def get_soon(queue: RedisQueue, timeout: float = 2.0) -> Message:
    return await asyncio.wait_for(queue.get(), timeout)


async def nothing_for(queue: RedisQueue, seconds: float) -> None:
    try:
        message = await asyncio.wait_for(queue.get(), seconds)
    except TimeoutError:
        return
    pytest.fail(f"got {message.id}")


async def take(queue: RedisQueue, count: int) -> list[str]:
    taken = []
    for _ in range(count):
        message = await get_soon(queue)
        await queue.ack(message)
        taken.append(message.id)
    return taken


async def settled(queue: RedisQueue) -> None:
    await asyncio.wait_for(queue.wait_empty(), 2.0)


# -- what MemoryQueue does too ----------------------------------------------------------


async def test_high_priority_first_fifo_within_a_priority(make_queue: QueueFactory) -> None:
    queue = make_queue("a")
    order: list[tuple[str, Priority]] = [
        ("n1", "normal"),
        ("n2", "normal"),
        ("h1", "high"),
        ("n3", "normal"),
        ("h2", "high"),
        ("h3", "high"),
    ]
    for name, priority in order:
        await queue.put(msg(name, priority))
    assert await take(queue, 6) == ["h1", "h2", "h3", "n1", "n2", "n3"]


async def test_put_many_keeps_order_and_get_waits_for_a_put(make_queue: QueueFactory) -> None:
    queue = make_queue("a")
    await queue.put_many([msg(f"m{i}") for i in range(5)])
    assert await take(queue, 5) == [f"m{i}" for i in range(5)]
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0.05)
    assert not getter.done()
    await queue.put(msg("late"))
    assert (await asyncio.wait_for(getter, 1)).id == "late"


async def test_message_fields_survive_the_round_trip(make_queue: QueueFactory) -> None:
    queue = make_queue("a")
    original = msg(
        "otp",
        "high",
        code_span=(12, 18),
        expires_at=1_900_000_000.5,
        client_ref="ref-1",
        attempts=2,
        failed_providers=("twilio",),
    )
    await queue.put(original)
    got = await get_soon(queue)
    assert got == original
    got.attempts += 1
    got.failed_providers = (*got.failed_providers, "vonage")
    await queue.retry_later(got, 0)
    again = await get_soon(queue)
    assert (again.attempts, again.failed_providers) == (3, ("twilio", "vonage"))
    assert (again.code_span, again.expires_at, again.priority) == (
        (12, 18),
        1_900_000_000.5,
        "high",
    )


async def test_bound_is_shared_by_replicas_and_counts_held_messages(
    make_queue: QueueFactory,
) -> None:
    one, two = make_queue("one", max_size=3), make_queue("two", max_size=3)
    await one.put(msg("a"))
    await two.put(msg("b"))
    held = await get_soon(one)  # held but not finished: still counts
    await two.put(msg("c"))
    with pytest.raises(QueueFull) as info:
        await one.put(msg("extra", "high"))
    assert info.value.retry_after_s >= 1
    assert one.waiting() == 3
    await one.ack(held)
    await settled(one)
    await two.put(msg("d"))  # room came back with the ack
    assert await two.total() == 3


async def test_put_many_is_all_or_nothing(make_queue: QueueFactory) -> None:
    queue = make_queue("a", max_size=4)
    await queue.put(msg("first"))
    with pytest.raises(QueueFull):
        await queue.put_many([msg(f"b{i}") for i in range(4)])
    assert await queue.total() == 1
    await queue.put_many([msg(f"b{i}") for i in range(3)])  # exactly fills it
    assert await queue.total() == 4
    assert await take(queue, 4) == ["first", "b0", "b1", "b2"]


async def test_retry_later_reenters_after_the_delay_even_when_full(
    make_queue: QueueFactory,
) -> None:
    queue = make_queue("a", max_size=3)
    await queue.put_many([msg("a"), msg("b"), msg("c")])
    first = await get_soon(queue)
    assert first.id == "a"

    started = time.monotonic()
    await queue.retry_later(first, 0.3)
    # While it is delayed it still takes room: no new message gets in.
    with pytest.raises(QueueFull):
        await queue.put(msg("d"))
    assert await take(queue, 2) == ["b", "c"]
    again = await get_soon(queue)
    assert again.id == "a"
    assert time.monotonic() - started >= 0.28
    await queue.ack(again)
    await settled(queue)
    assert await queue.total() == 0


async def test_retried_message_goes_behind_its_priority(make_queue: QueueFactory) -> None:
    queue = make_queue("a")
    await queue.put(msg("h1", "high"))
    first = await get_soon(queue)
    await queue.retry_later(first, 0)
    await settled(queue)
    await queue.put(msg("n1"))
    await queue.put(msg("h2", "high"))
    assert await take(queue, 3) == ["h2", "h1", "n1"]


async def test_depth_and_wait_empty_count_what_this_consumer_holds(
    make_queue: QueueFactory,
) -> None:
    queue = make_queue("a")
    await queue.put_many([msg("a"), msg("b")])
    # Waiting in Redis is not held here: any replica may take it, a drain need not wait.
    assert (queue.depth(), queue.waiting()) == (0, 2)
    await asyncio.wait_for(queue.wait_empty(), 0.5)

    a = await get_soon(queue)
    assert queue.depth() == 1
    waiter = asyncio.create_task(queue.wait_empty())
    await asyncio.sleep(0.05)
    assert not waiter.done(), "taken but not finished is held"
    await queue.retry_later(a, 0.05)
    # A delayed retry lives in Redis, not here: done once it is written there.
    await asyncio.wait_for(waiter, 1.0)
    assert (queue.depth(), await queue.total()) == (0, 2)

    b = await get_soon(queue)
    assert b.id == "b"
    waiter = asyncio.create_task(queue.wait_empty())
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await queue.ack(b)
    await asyncio.wait_for(waiter, 1.0)
    assert (await get_soon(queue)).id == "a"
    assert queue.depth() == 1


# -- Redis hygiene ------------------------------------------------------------------------


async def test_finished_entries_are_deleted_and_leave_no_keys(
    make_queue: QueueFactory, redis: Redis
) -> None:
    queue = make_queue("a")
    await queue.put_many([msg(f"m{i}", "high" if i % 2 else "normal") for i in range(20)])
    for name in await take(queue, 20):
        assert name.startswith("m")
    await settled(queue)
    assert await redis.xlen(KEYS.stream("high")) == 0
    assert await redis.xlen(KEYS.stream("normal")) == 0
    # Nobody else could hold a copy, so no done marker was needed.
    assert [k async for k in redis.scan_iter("t:queue:done:*")] == []
    keys = sorted([k.decode() async for k in redis.scan_iter("t:*")])
    assert keys == [KEYS.stream("high"), KEYS.stream("normal")]


async def test_scripts_survive_script_flush(make_queue: QueueFactory, redis: Redis) -> None:
    queue = make_queue("a")
    await queue.put(msg("a"))
    await redis.script_flush()
    await queue.put(msg("b"))
    await redis.script_flush()
    assert await take(queue, 2) == ["a", "b"]
    await settled(queue)


@pytest.mark.parametrize(("decode", "protocol"), [(True, 2), (False, 3), (True, 3)])
async def test_works_with_other_client_options(
    make_queue: QueueFactory, redis_url: str, decode: bool, protocol: int
) -> None:
    client = Redis.from_url(redis_url, decode_responses=decode, protocol=protocol)
    try:
        queue = make_queue("a", client=client)
        getter = asyncio.create_task(queue.get())
        await asyncio.sleep(0.05)  # waiting in a blocking read when the message comes
        await queue.put(msg("a", "high"))
        got = await asyncio.wait_for(getter, 2.0)
        await queue.retry_later(got, 0)
        assert await take(queue, 1) == ["a"]
        await settled(queue)
        assert await queue.total() == 0
        await queue.close()
    finally:
        await client.aclose()


async def test_an_undecodable_entry_is_dropped_not_retried_forever(
    make_queue: QueueFactory, redis: Redis
) -> None:
    queue = make_queue("a")
    await redis.xadd(KEYS.stream("normal"), {"m": b"\xffnot json"})
    await queue.put(msg("good"))
    assert await take(queue, 1) == ["good"]
    await settled(queue)
    assert queue.stats.undecodable == 1
    assert await queue.total() == 0


async def test_silent_empty_consumers_are_removed_from_the_group(
    make_queue: QueueFactory, redis: Redis
) -> None:
    old = make_queue("old")
    await old.put(msg("a"))
    assert await take(old, 1) == ["a"]
    await old.close()
    consumers = await redis.xinfo_consumers(KEYS.stream("normal"), QUEUE_GROUP)
    assert [c["name"] for c in consumers] == [b"old"]
    new = make_queue("new", claim_interval_s=0.05)
    new.reap_idle_s = 0.1
    await asyncio.sleep(0.2)
    await nothing_for(new, 0.3)
    consumers = await redis.xinfo_consumers(KEYS.stream("normal"), QUEUE_GROUP)
    assert b"old" not in [c["name"] for c in consumers]


async def test_batches_keep_round_trips_far_below_one_per_message(
    make_queue: QueueFactory,
) -> None:
    queue = make_queue("a", max_size=2000, prefetch_s=0.05)
    for start in range(0, 1000, 200):
        await queue.put_many([msg(f"m{i}") for i in range(start, start + 200)])
    seen: list[str] = []

    async def worker() -> None:
        while len(seen) < 1000:
            message = await queue.get()
            seen.append(message.id)
            await queue.ack(message)

    workers = [asyncio.create_task(worker()) for _ in range(32)]
    while len(seen) < 1000:
        await asyncio.sleep(0.01)
    await settled(queue)
    for task in workers:
        task.cancel()
    assert len(set(seen)) == 1000
    # 5 puts + fetches + settles; one per message would be 2000.
    assert queue.stats.redis_calls < 200, queue.stats


# -- what Redis keeps of a message --------------------------------------------------------

CODE, PHONE, VERIFICATION = "493817", "+14155550123", "ver_5f0c9a1e2b7d4c3a8e6f1b2d3c4a5e6f"


def otp_message(name: str, priority: Priority = "normal") -> Message:
    body = f"Your smsgw code is {CODE}. It expires in 10 minutes."
    return Message(
        to=PHONE,
        country="US",
        body=body,
        client="login-app",
        priority=priority,
        id=name,
        client_ref=VERIFICATION,
        expires_at=time.time() + 600,
        code_span=(19, 25),
    )


async def everything_redis_keeps(redis: Redis) -> bytes:
    """Entries, delayed members and the serialized keys (what an RDB, AOF rewrite or replica
    receives), as one blob."""
    kept = []
    async for key in redis.scan_iter("t:*"):
        kept.append(await redis.dump(key) or b"")
        kind = (await redis.type(key)).decode()
        if kind == "stream":
            for _, fields in await redis.xrange(key):
                kept += fields.values()
        elif kind == "zset":
            kept += await redis.zrange(key, 0, -1)
    return b"\n".join(kept)


async def test_redis_keeps_no_code_number_or_verification_id_in_clear(
    make_queue: QueueFactory, redis: Redis
) -> None:
    queue = make_queue("a")
    await queue.put_many([otp_message("retried", "high"), otp_message("waiting")])
    retried = await get_soon(queue)
    await queue.retry_later(retried, 60)  # into the delayed set
    held = await get_soon(queue)  # read, not finished: still in its stream
    assert (held.id, held.body, held.client_ref) == ("waiting", retried.body, VERIFICATION)
    await asyncio.sleep(0.2)  # the retry is settled
    assert await redis.zcard(KEYS.delayed) == 1
    assert await redis.xlen(KEYS.stream("normal")) == 1
    kept = await everything_redis_keeps(redis)
    for clear in (CODE, PHONE, PHONE[2:], VERIFICATION, VERIFICATION[4:], "login-app"):
        assert clear.encode() not in kept, clear


async def test_a_tampered_entry_is_counted_undecodable_not_delivered(
    make_queue: QueueFactory, redis: Redis
) -> None:
    producer = make_queue("producer")
    await producer.put(otp_message("tampered"))
    stream = KEYS.stream("normal")
    [(entry_id, fields)] = await redis.xrange(stream)
    payload = bytearray(fields[b"m"])
    middle = len(payload) // 2
    payload[middle] = ord("A") if payload[middle] != ord("A") else ord("B")
    # Replaced by a copy with one character changed (someone with write access to Redis).
    await redis.xdel(stream, entry_id)
    await redis.xadd(stream, {"m": bytes(payload)})
    await producer.put(otp_message("good"))
    consumer = make_queue("consumer")
    assert await take(consumer, 1) == ["good"]
    await nothing_for(consumer, 0.2)
    await settled(consumer)
    assert consumer.stats.undecodable == 1
    assert await consumer.total() == 0


async def test_messages_sealed_under_the_previous_secret_are_still_delivered(
    make_queue: QueueFactory, redis: Redis
) -> None:
    old, new = "old-queue-secret-0123456789abcdef", "new-queue-secret-0123456789abcdef"
    before = make_queue("before", cipher=QueueCipher(old))
    await before.put_many([otp_message("waiting"), otp_message("retried", "high")])
    retried = await get_soon(before)
    await before.retry_later(retried, 0.2)  # sealed again under the old key, delayed
    await before.close()

    rotated = make_queue("rotated", cipher=QueueCipher(new, previous=[old]))
    await rotated.put(otp_message("after"))
    got = {}
    for _ in range(3):
        message = await get_soon(rotated)
        got[message.id] = message
        await rotated.ack(message)
    assert set(got) == {"waiting", "retried", "after"}
    assert all(m.body == otp_message("x").body and m.to == PHONE for m in got.values())
    assert rotated.stats.undecodable == 0
    await settled(rotated)
    await rotated.close()

    # Once the previous secret is gone, what only it opened is dropped, counted, and the
    # fetch loop goes on with the rest.
    await make_queue("late", cipher=QueueCipher(old)).put(otp_message("sealed-under-old"))
    done = make_queue("done", cipher=QueueCipher(new))
    await done.put(otp_message("new"))
    assert await take(done, 1) == ["new"]
    await settled(done)
    assert done.stats.undecodable == 1
    assert await done.total() == 0


def test_a_key_keeps_its_id_across_a_rotation_and_payloads_vary() -> None:
    old, new = QueueCipher("a" * 32), QueueCipher("b" * 32, previous=["a" * 32])
    sealed = old.seal(b"plain", b"stream")
    assert new.open(sealed, b"stream") == b"plain"
    assert old.seal(b"plain", b"stream") != sealed  # a fresh nonce each time
    assert sealed.isascii()
    # Bound to its stream: the same payload in another stream does not open.
    with pytest.raises(Undecodable):
        new.open(sealed, b"other stream")
    # Whatever else an entry may hold is refused the same way, never raised as a bug.
    for junk in (None, b"", "é" * 40, b"{}", sealed[:20], 42):
        with pytest.raises(Undecodable):
            new.open(junk, b"stream")
    # Derived from the secret through HKDF, never the secret itself: an otp.secret that the
    # key was derived from opens as a previous queue secret.
    assert (
        QueueCipher("c" * 32, previous=["o" * 16]).open(
            QueueCipher("o" * 16).seal(b"x", b"s"), b"s"
        )
        == b"x"
    )


# -- restarts, several consumers, dead consumers ------------------------------------------


async def test_messages_survive_a_new_instance(make_queue: QueueFactory) -> None:
    before = make_queue("run-1", visibility_s=0.5)
    await before.put_many([msg("delayed"), msg("held"), msg("q1"), msg("q2", "high")])
    q2 = await get_soon(before)
    assert q2.id == "q2"
    await before.retry_later(q2, 0.4)
    delayed_at = time.monotonic()
    held = await get_soon(before)
    assert held.id == "delayed"  # FIFO: the first put
    await before.close()  # `held` was never finished: it stays pending on run-1

    after = make_queue("run-2", visibility_s=0.5, claim_interval_s=0.1)
    got = {}
    for _ in range(4):
        message = await get_soon(after, 3.0)
        got[message.id] = time.monotonic()
        await after.ack(message)
    assert set(got) == {"delayed", "held", "q1", "q2"}
    assert got["q2"] - delayed_at >= 0.35
    await settled(after)
    assert await after.total() == 0
    assert after.stats.claimed == 1


async def test_two_consumers_never_get_the_same_message(make_queue: QueueFactory) -> None:
    names = [f"m{i}" for i in range(300)]
    one = make_queue("one", max_size=1000, prefetch_s=0.05)
    two = make_queue("two", max_size=1000, prefetch_s=0.05)
    await one.put_many(
        [msg(name, "high" if i % 3 == 0 else "normal") for i, name in enumerate(names)]
    )
    taken: dict[str, list[str]] = {"one": [], "two": []}

    async def worker(queue: RedisQueue, into: list[str]) -> None:
        while True:
            message = await queue.get()
            into.append(message.id)
            await asyncio.sleep(0.001)
            await queue.ack(message)

    workers = [
        asyncio.create_task(worker(queue, taken[name]))
        for name, queue in (("one", one), ("two", two))
        for _ in range(8)
    ]
    deadline = time.monotonic() + 10
    while len(taken["one"]) + len(taken["two"]) < 300 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # anything delivered twice would show up now
    for task in workers:
        task.cancel()
    assert not set(taken["one"]) & set(taken["two"])
    assert sorted(taken["one"] + taken["two"]) == sorted(names)
    assert taken["one"]
    assert taken["two"]


async def test_due_retries_move_back_once_whichever_replica_sees_them(
    make_queue: QueueFactory,
) -> None:
    one = make_queue("one", max_size=1000, prefetch_s=0.05)
    two = make_queue("two", max_size=1000, prefetch_s=0.05)
    names = [f"m{i}" for i in range(100)]
    await one.put_many([msg(name) for name in names])
    deliveries: Counter[tuple[str, int]] = Counter()

    async def worker(queue: RedisQueue) -> None:
        while True:
            message = await queue.get()
            deliveries[(message.id, message.attempts)] += 1
            if message.attempts == 0:
                message.attempts = 1
                await queue.retry_later(message, 0.1)
            else:
                await queue.ack(message)

    workers = [asyncio.create_task(worker(q)) for q in (one, two) for _ in range(4)]
    deadline = time.monotonic() + 10
    while sum(deliveries.values()) < 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)
    for task in workers:
        task.cancel()
    assert set(deliveries) == {(name, n) for name in names for n in (0, 1)}
    assert set(deliveries.values()) == {1}
    await settled(one)
    await settled(two)
    assert await one.total() == 0


async def test_a_dead_consumers_message_is_claimed_after_the_visibility_timeout(
    make_queue: QueueFactory, redis: Redis
) -> None:
    # A consumer that never renews its leases is, to the others, a dead one.
    dead = make_queue("dead", visibility_s=0.5, renew_interval_s=3600)
    alive = make_queue("alive", visibility_s=0.5, claim_interval_s=0.1)
    await dead.put(msg("orphan"))
    assert (await get_soon(dead)).id == "orphan"
    taken_at = time.monotonic()
    await nothing_for(alive, 0.3)
    again = await get_soon(alive, 2.0)
    assert again.id == "orphan"
    assert time.monotonic() - taken_at >= 0.5
    assert alive.stats.claimed == 1
    await alive.ack(again)
    await settled(alive)
    assert await alive.total() == 0
    # Its first holder may still send it: the finished entry leaves a marker, with a TTL.
    [marker] = [k async for k in redis.scan_iter("t:queue:done:*")]
    assert 0 < await redis.ttl(marker) <= DEDUPE_TTL_S


async def test_a_live_consumer_keeps_its_messages_past_the_timeout(
    make_queue: QueueFactory,
) -> None:
    slow = make_queue("slow", visibility_s=0.5)
    other = make_queue("other", visibility_s=0.5, claim_interval_s=0.1)
    await slow.put(msg("long"))
    message = await get_soon(slow)
    await nothing_for(other, 1.5)  # three timeouts: renewals keep the lease
    assert await slow.was_sent(message) is False
    await slow.ack(message)
    await settled(slow)
    assert (slow.stats.leases_lost, other.stats.claimed) == (0, 0)


async def test_a_copy_finished_by_its_first_holder_is_not_sent_again(
    make_queue: QueueFactory,
) -> None:
    slow = make_queue("slow", visibility_s=0.5, renew_interval_s=3600)
    other = make_queue("other", visibility_s=0.5, claim_interval_s=0.1)
    await slow.put(msg("twice"))
    first = await get_soon(slow)
    await asyncio.sleep(0.6)
    copy = await get_soon(other, 2.0)  # claimed: the slow one looked dead
    assert copy.id == "twice"
    # The slow one was only slow: it sends and finishes first.
    assert await slow.was_sent(first) is False
    await slow.mark_sent(first)
    await slow.ack(first)
    await settled(slow)
    assert await other.was_sent(copy) is True
    assert other.stats.duplicates_skipped == 1
    await other.ack(copy)
    await settled(other)
    assert await other.total() == 0


async def test_sent_before_dying_is_skipped_when_claimed(
    make_queue: QueueFactory, redis: Redis
) -> None:
    dying = make_queue("dying", visibility_s=0.5, renew_interval_s=3600)
    other = make_queue("other", visibility_s=0.5, claim_interval_s=0.1)
    await dying.put_many([msg("sent"), msg("unsent")])
    sent = await get_soon(dying)
    await get_soon(dying)
    await dying.mark_sent(sent)  # the provider took it; the process dies before ack()
    deadline = time.monotonic() + 2
    while not [k async for k in redis.scan_iter("t:queue:done:*")]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)

    assert (await get_soon(other, 2.0)).id == "unsent"
    await nothing_for(other, 0.5)
    assert other.stats.duplicates_skipped == 1
    assert await other.total() == 1  # "unsent", held by `other`


async def test_stop_fetching_leaves_unfetched_messages_for_others(
    make_queue: QueueFactory,
) -> None:
    # Long visibility: whatever `other` gets quickly was given back, not claimed.
    stopping = make_queue("stopping", visibility_s=30, min_prefetch=5)
    other = make_queue("other", visibility_s=30)
    await stopping.put_many([msg(f"m{i}") for i in range(10)])
    first = await get_soon(stopping)
    await asyncio.sleep(0.1)  # the fetcher fills its buffer meanwhile
    assert stopping.depth() > 1

    started = time.monotonic()
    await stopping.stop_fetching()
    assert time.monotonic() - started < 1.0
    assert stopping.depth() == 1  # only what it handed out
    assert stopping.stats.released >= 1
    rest = await take(other, 9)
    assert sorted(rest) == sorted(f"m{i}" for i in range(1, 10))
    await nothing_for(stopping, 0.3)

    waiter = asyncio.create_task(stopping.wait_empty())
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await stopping.ack(first)
    await asyncio.wait_for(waiter, 1.0)


# -- Redis unreachable ------------------------------------------------------------------


async def test_redis_outage_refuses_puts_and_loses_nothing_held(
    make_queue: QueueFactory, redis_server: RedisServer
) -> None:
    queue = make_queue("a", visibility_s=5)
    await queue.put(msg("a"))
    held = await get_soon(queue)
    with structlog.testing.capture_logs() as logs:
        redis_server.stop()
        try:
            with pytest.raises(QueueUnavailable):
                await queue.put(msg("b"))
            # Reported while Redis is away: kept here until it can be written.
            await queue.retry_later(held, 0.1)
            getter = asyncio.create_task(queue.get())
            await asyncio.sleep(1.0)
            assert not getter.done()
            assert queue.depth() == 1
        finally:
            redis_server.start()  # empty: this test server keeps nothing on disk
        again = await asyncio.wait_for(getter, 10)
    assert again.id == "a"
    events = [entry["event"] for entry in logs]
    assert events.count("redis_queue_unavailable") == 1, events
    assert events.count("redis_queue_recovered") == 1, events
    await queue.ack(again)
    await settled(queue)


# -- a consumer process killed with SIGKILL ---------------------------------------------

VICTIM_RATE = 100.0
KILL_MESSAGES = 300
KILL_VISIBILITY_S = 0.5


def _twilio(base_url: str) -> TwilioProvider:
    settings = TwilioProviderSettings(
        name="twilio",
        account_sid=DEFAULT_ACCOUNT_SID,
        auth_token=DEFAULT_AUTH_TOKEN,
        from_="+15005550006",
        base_url=base_url,
    )
    return TwilioProvider(settings)


async def _consume(
    redis_url: str, base_url: str, consumer: str, rate: float | None, stop: asyncio.Event
) -> RedisQueue:
    """A replica's sending side: RedisQueue + the real Dispatcher + TwilioProvider."""
    redis = Redis.from_url(redis_url)
    settings = QueueSettings(max_size=10_000, visibility_timeout_s=KILL_VISIBILITY_S)
    queue = RedisQueue(redis, KEYS, settings, consumer, cipher=CIPHER, claim_interval_s=0.1)
    provider = _twilio(base_url)
    await provider.start()
    limiter = MemoryLimiter({"twilio": rate})
    dispatcher = Dispatcher(
        queue,
        Router([Route(provider, 1.0, frozenset())]),
        limiter,
        DispatchSettings(concurrency=8),
        RecordedAudit(),
    )
    dispatcher.start()
    try:
        await stop.wait()
    finally:
        await queue.stop_fetching()
        await dispatcher.drain(5.0)
        await dispatcher.stop()
        await queue.close()
        await limiter.close()
        await provider.close()
        await redis.aclose()
    return queue


def victim_main(redis_url: str, base_url: str) -> None:
    """Entry point of the consumer process the test kills (never returns by itself)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    asyncio.run(_consume(redis_url, base_url, "victim", VICTIM_RATE, asyncio.Event()))


def _accepted_bodies(port: int) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats", timeout=5) as response:
        stats = orjson.loads(response.read())
    return [record["body"] for record in stats["accepted"]]


async def _held_by(redis: Redis, consumer: str) -> set[str]:
    """Bodies of the entries `consumer` had read and not finished."""
    bodies = set()
    codec = Codec(CIPHER, (KEYS.stream("high"), KEYS.stream("normal")))
    for index, priority in enumerate(("high", "normal"), 1):
        stream = KEYS.stream(priority)
        pending = await redis.xpending_range(stream, QUEUE_GROUP, "-", "+", 1000, consumer)
        for entry in pending:
            [(_, fields)] = await redis.xrange(stream, entry["message_id"], entry["message_id"])
            bodies.add(codec.decode(fields[b"m"], index).body)
    return bodies


@pytest.mark.timeout(60)
async def test_consumer_killed_with_sigkill_loses_nothing(
    redis_url: str, redis: Redis, tmp_path: Path
) -> None:
    fake, port = start_process(
        ["python", "-m", "testkit.fake_provider", "--latency-ms", "20"], tmp_path / "fake.port"
    )
    victim: subprocess.Popen[bytes] | None = None
    try:
        base_url = f"http://127.0.0.1:{port}"
        bodies = [f"kill test {i}" for i in range(KILL_MESSAGES)]
        queue = RedisQueue(redis, KEYS, QueueSettings(max_size=10_000), "producer", cipher=CIPHER)
        await queue.put_many(
            [
                Message(
                    to=f"+1415555{i:04d}",
                    country="US",
                    body=body,
                    client="c",
                    priority="high" if i % 4 == 0 else "normal",
                )
                for i, body in enumerate(bodies)
            ]
        )
        code = (
            "import sys; from tests.queue.test_redis import victim_main; victim_main(*sys.argv[1:])"
        )
        with (tmp_path / "victim.log").open("wb") as log:
            victim = subprocess.Popen(
                [sys.executable, "-c", code, redis_url, base_url],
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while len(_accepted_bodies(port)) < 80:
            assert victim.poll() is None, (tmp_path / "victim.log").read_text()
            assert time.monotonic() < deadline, "the victim sent too little"
            await asyncio.sleep(0.05)
        victim.kill()  # SIGKILL: no drain, no ack, no release
        victim.wait(5)
        in_flight = await _held_by(redis, "victim")
        sent_by_victim = Counter(_accepted_bodies(port))

        stop = asyncio.Event()
        taker_task = asyncio.create_task(_consume(redis_url, base_url, "taker", None, stop))
        deadline = time.monotonic() + 20
        while set(_accepted_bodies(port)) != set(bodies):
            assert not taker_task.done(), taker_task
            assert time.monotonic() < deadline, "messages lost"
            await asyncio.sleep(0.05)
        await asyncio.sleep(KILL_VISIBILITY_S * 2)  # a late duplicate would show up now
        stop.set()
        taker = await asyncio.wait_for(taker_task, 15)

        received = Counter(_accepted_bodies(port))
        duplicates = {body for body, n in received.items() if n > 1}
        print(  # the counts, for whoever reads the test log
            f"sent before kill {sum(sent_by_victim.values())}, held at kill {len(in_flight)}, "
            f"claimed {taker.stats.claimed}, skipped {taker.stats.duplicates_skipped}, "
            f"duplicates {len(duplicates)}"
        )
        assert set(received) == set(bodies)
        # Only a message the victim held when it died can have been sent twice.
        assert duplicates <= in_flight
        assert max(received.values()) <= 2
        assert in_flight, "the kill should have caught messages in flight"
        assert taker.stats.claimed + taker.stats.duplicates_skipped >= len(in_flight)
        assert await queue.total() == 0
    finally:
        if victim is not None and victim.poll() is None:
            victim.kill()
            victim.wait(5)
        stop_process(fake)


async def test_backlog_is_read_from_redis_for_every_replica(make_queue: QueueFactory) -> None:
    producer, other = make_queue("producer"), make_queue("other")
    await producer.put_many([msg(f"n{i}") for i in range(5)] + [msg("h1", "high")])
    await asyncio.sleep(0.05)
    parts = {b.part: b for b in await other.backlog()}  # a replica that put nothing
    assert parts["normal"].messages == 5
    assert parts["high"].messages == 1
    assert 0.04 <= parts["normal"].oldest_age_s < 5
    # Held (not yet acknowledged) messages are still unfinished; finished ones are gone.
    await take(other, 2)
    await settled(other)
    parts = {b.part: b for b in await producer.backlog()}
    assert parts["high"].messages + parts["normal"].messages == 4
    held = await get_soon(other)
    await other.retry_later(held, 30)
    await settled(other)
    parts = {b.part: b for b in await producer.backlog()}
    assert parts["delayed"].messages == 1
    assert parts["delayed"].oldest_age_s == 0  # due in 30 s: not overdue


# -- settling after the lease was lost ----------------------------------------------------


async def _lose_lease(make_queue: QueueFactory) -> tuple[RedisQueue, Message, RedisQueue, Message]:
    """`slow` fetches a message and stalls (no renewals) until `other` has claimed it."""
    slow = make_queue("slow", visibility_s=0.5, renew_interval_s=3600)
    other = make_queue("other", visibility_s=0.5, claim_interval_s=0.1)
    await slow.put(msg("once"))
    first = await get_soon(slow)
    await asyncio.sleep(0.6)
    copy = await get_soon(other, 2.0)
    assert copy.id == "once"
    assert other.taken_over(copy)
    return slow, first, other, copy


async def test_a_retry_settled_after_the_new_owner_sent_it_is_dropped(
    make_queue: QueueFactory, redis: Redis
) -> None:
    slow, first, other, copy = await _lose_lease(make_queue)
    # The new owner sends it and finishes it.
    assert await other.was_sent(copy) is False
    await other.mark_sent(copy)
    await other.ack(copy)
    await settled(other)
    # Then the stalled first holder's provider call fails, and it asks for a retry.
    first.attempts = 1
    await slow.retry_later(first, 0)
    await settled(slow)
    assert await redis.zcard(KEYS.delayed) == 0, "a retry of a message already sent"
    await nothing_for(other, 0.5)
    assert await other.total() == 0
    assert slow.stats.leases_lost == 1


async def test_a_retry_settled_while_the_new_owner_sends_it_is_dropped(
    make_queue: QueueFactory, redis: Redis
) -> None:
    slow, first, other, copy = await _lose_lease(make_queue)
    assert await other.was_sent(copy) is False  # the new owner is sending it now...
    first.attempts = 1
    await slow.retry_later(first, 0)  # ...when the first holder's attempt fails
    await settled(slow)
    await other.mark_sent(copy)
    await other.ack(copy)
    await settled(other)
    await nothing_for(other, 0.5)  # a retry would bring the message back: a second send
    assert await redis.zcard(KEYS.delayed) == 0
    assert await other.total() == 0
    assert slow.stats.leases_lost == 1


async def test_a_retry_settled_before_the_new_owner_sends_leaves_it_to_that_owner(
    make_queue: QueueFactory, redis: Redis
) -> None:
    slow, first, other, copy = await _lose_lease(make_queue)
    first.attempts = 1
    await slow.retry_later(first, 0)
    await settled(slow)
    # The entry is the new owner's: the failed attempt of the old one must not make it skip
    # the message (that would lose it), nor schedule a second copy.
    assert await other.was_sent(copy) is False
    assert await redis.zcard(KEYS.delayed) == 0
    assert await other.total() == 1
    await other.mark_sent(copy)
    await other.ack(copy)
    await settled(other)
    await nothing_for(other, 0.3)
    assert await other.total() == 0


async def test_an_entry_claimed_back_after_a_lost_lease_is_renewed_again(
    make_queue: QueueFactory, redis: Redis
) -> None:
    queue = make_queue("a", visibility_s=0.6, claim_interval_s=0.1, renew_interval_s=0.1)
    await queue.put(msg("back"))
    message = await get_soon(queue)
    stream = KEYS.stream("normal")
    [entry] = await redis.xpending_range(stream, QUEUE_GROUP, "-", "+", 10)
    # Another replica takes it, then dies holding it: it comes back to us after a timeout.
    await redis.xclaim(stream, QUEUE_GROUP, "dead", 0, [entry["message_id"]], justid=True)
    getter = asyncio.create_task(queue.get())  # a worker waiting: claims are looked for
    deadline = time.monotonic() + 3
    while queue.stats.leases_lost == 0 or not await _held_by(redis, "a"):
        assert time.monotonic() < deadline, "never lost or never claimed back"
        await asyncio.sleep(0.05)
    # Ours again, and a copy may be out there: renewed like any held entry, sent as a
    # possible duplicate.
    assert queue.taken_over(message)
    idle_ms = []
    for _ in range(15):  # over two visibility timeouts
        await asyncio.sleep(0.1)
        [entry] = await redis.xpending_range(stream, QUEUE_GROUP, "-", "+", 10)
        assert entry["consumer"] == b"a"
        idle_ms.append(entry["time_since_delivered"])
    # Renewed every 0.1 s; not left to look abandoned until some replica claims it.
    assert max(idle_ms) < 300, idle_ms
    assert queue.stats.leases_lost == 1
    assert not getter.done()  # our own entry, not a second message
    getter.cancel()
    await queue.ack(message)
    await settled(queue)
    assert await queue.total() == 0
