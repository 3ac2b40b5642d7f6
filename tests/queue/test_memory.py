"""MemoryQueue: priorities, the bound, delayed retries, and what depth/wait_empty count."""

from __future__ import annotations

import asyncio
import time

import pytest

from smsgw.errors import QueueFull
from smsgw.queue.memory import MemoryQueue
from smsgw.queue.message import Message, Priority

pytestmark = pytest.mark.timeout(30)


def msg(name: str, priority: Priority = "normal") -> Message:
    return Message(
        to="+14155550100", country="US", body=name, client="c", priority=priority, id=name
    )


async def drain_ready(queue: MemoryQueue) -> list[str]:
    taken = []
    while queue.waiting():
        message = await queue.get()
        await queue.ack(message)
        taken.append(message.id)
    return taken


async def get_soon(queue: MemoryQueue, timeout: float = 1.0) -> Message:
    return await asyncio.wait_for(queue.get(), timeout)


async def test_high_priority_first_fifo_within_a_priority() -> None:
    queue = MemoryQueue(max_size=10)
    for name, priority in [
        ("n1", "normal"),
        ("n2", "normal"),
        ("h1", "high"),
        ("n3", "normal"),
        ("h2", "high"),
        ("h3", "high"),
    ]:
        await queue.put(msg(name, priority))  # type: ignore[arg-type]
    assert await drain_ready(queue) == ["h1", "h2", "h3", "n1", "n2", "n3"]


async def test_put_many_keeps_order() -> None:
    queue = MemoryQueue(max_size=10)
    await queue.put_many([msg(f"m{i}") for i in range(5)])
    assert await drain_ready(queue) == [f"m{i}" for i in range(5)]


async def test_get_waits_for_a_put() -> None:
    queue = MemoryQueue(max_size=10)
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0.01)
    assert not getter.done()
    await queue.put(msg("late"))
    assert (await asyncio.wait_for(getter, 1)).id == "late"


async def test_put_beyond_max_size_is_queue_full() -> None:
    queue = MemoryQueue(max_size=3)
    for i in range(3):
        await queue.put(msg(f"m{i}"))
    with pytest.raises(QueueFull) as info:
        await queue.put(msg("extra", "high"))
    assert info.value.retry_after_s >= 1
    assert queue.depth() == 3
    assert "extra" not in await drain_ready(queue)


async def test_put_many_is_all_or_nothing() -> None:
    queue = MemoryQueue(max_size=4)
    await queue.put(msg("first"))
    with pytest.raises(QueueFull):
        await queue.put_many([msg(f"b{i}") for i in range(4)])
    assert queue.depth() == 1
    await queue.put_many([msg(f"b{i}") for i in range(3)])  # exactly fills it
    assert queue.depth() == 4
    assert await drain_ready(queue) == ["first", "b0", "b1", "b2"]


async def test_room_comes_back_after_get() -> None:
    queue = MemoryQueue(max_size=1)
    await queue.put(msg("a"))
    with pytest.raises(QueueFull):
        await queue.put(msg("b"))
    taken = await queue.get()
    await queue.ack(taken)
    await queue.put(msg("b"))
    assert (await get_soon(queue)).id == "b"


async def test_retry_later_reenters_after_the_delay_even_when_full() -> None:
    queue = MemoryQueue(max_size=2)
    await queue.put(msg("a"))
    await queue.put(msg("b"))
    first = await queue.get()
    assert first.id == "a"
    await queue.put(msg("c"))  # full again: b and c wait

    started = time.monotonic()
    await queue.retry_later(first, 0.2)
    assert queue.depth() == 3
    # While it is delayed it still takes room: no new message gets in.
    with pytest.raises(QueueFull):
        await queue.put(msg("d"))

    assert (await get_soon(queue)).id == "b"
    assert (await get_soon(queue)).id == "c"
    assert queue.waiting() == 0
    again = await get_soon(queue)
    assert again.id == "a"
    assert time.monotonic() - started >= 0.18
    # Back in although the bound was reached: accepted messages are never dropped.
    assert queue.depth() == 3


async def test_retried_message_goes_behind_its_priority() -> None:
    queue = MemoryQueue(max_size=10)
    await queue.put(msg("h1", "high"))
    first = await queue.get()
    await queue.retry_later(first, 0)
    await queue.put(msg("n1"))
    await queue.put(msg("h2", "high"))
    await asyncio.sleep(0.01)  # the retry is due
    assert await drain_ready(queue) == ["h2", "h1", "n1"]


async def test_depth_counts_waiting_delayed_and_in_flight() -> None:
    queue = MemoryQueue(max_size=10)
    assert queue.depth() == 0
    await queue.put(msg("a"))
    await queue.put(msg("b"))
    assert (queue.depth(), queue.waiting()) == (2, 2)

    a = await queue.get()
    assert (queue.depth(), queue.waiting()) == (2, 1)  # in flight still counts

    await queue.retry_later(a, 0.05)
    assert (queue.depth(), queue.waiting()) == (2, 1)  # delayed counts too

    await queue.ack(await queue.get())
    assert queue.depth() == 1
    await asyncio.sleep(0.1)
    assert queue.waiting() == 1
    await queue.ack(await get_soon(queue))
    assert queue.depth() == 0


async def test_wait_empty_returns_at_once_when_empty() -> None:
    queue = MemoryQueue(max_size=10)
    await asyncio.wait_for(queue.wait_empty(), 0.5)


async def test_wait_empty_waits_until_in_flight_messages_are_acked() -> None:
    queue = MemoryQueue(max_size=10)
    await queue.put(msg("a"))
    waiter = asyncio.create_task(queue.wait_empty())
    await asyncio.sleep(0.01)
    assert not waiter.done()

    message = await queue.get()
    await asyncio.sleep(0.01)
    assert not waiter.done(), "taken but not acked is not done"

    await queue.retry_later(message, 0.02)
    await asyncio.sleep(0.01)
    assert not waiter.done(), "a delayed retry is not done"

    message = await get_soon(queue)
    await asyncio.sleep(0.01)
    assert not waiter.done()

    await queue.ack(message)
    await asyncio.wait_for(waiter, 0.5)


async def test_wait_empty_blocks_again_after_new_work() -> None:
    queue = MemoryQueue(max_size=10)
    await queue.put(msg("a"))
    await queue.ack(await queue.get())
    await asyncio.wait_for(queue.wait_empty(), 0.5)

    await queue.put(msg("b"))
    waiter = asyncio.create_task(queue.wait_empty())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    await queue.ack(await queue.get())
    await asyncio.wait_for(waiter, 0.5)


async def test_backlog_counts_each_priority_and_the_oldest_age() -> None:
    queue = MemoryQueue(max_size=10)
    old = msg("old", "normal")
    old.created_at -= 30  # queued 30 s ago
    await queue.put(old)
    await queue.put(msg("n2", "normal"))
    await queue.put(msg("h1", "high"))
    parts = {b.part: b for b in await queue.backlog()}
    assert parts["high"].messages == 1
    assert parts["high"].oldest_age_s < 5
    assert parts["normal"].messages == 2
    assert 29 <= parts["normal"].oldest_age_s < 35
    assert parts["delayed"].messages == 0
    first = await get_soon(queue)  # h1
    await queue.retry_later(first, 60)
    parts = {b.part: b for b in await queue.backlog()}
    assert parts["high"].messages == 0
    assert parts["delayed"].messages == 1
    taken = await get_soon(queue)
    assert taken.id == "old"
    assert {b.part: b.messages for b in await queue.backlog()}["normal"] == 1
