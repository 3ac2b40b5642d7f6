"""Bounded in-process queue with two priorities (OTP before bulk)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Sequence

from smsgw.errors import QueueFull
from smsgw.queue.base import Backlog
from smsgw.queue.message import Message

__all__ = ["MemoryQueue"]

_PRIORITY_RANK = {"high": 0, "normal": 1}


class MemoryQueue:
    """The embedded queue: exact bound, priorities, delayed retries.

    The bound applies to new messages only; a retry of an accepted message always gets back
    in, since refusing it would lose a message we promised to send.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._ready: asyncio.PriorityQueue[tuple[int, int, Message]] = asyncio.PriorityQueue()
        self._sequence = itertools.count()  # FIFO within one priority
        self._delayed: set[asyncio.TimerHandle] = set()
        self._in_flight = 0
        # Creation times of the ready messages per priority, in the order get() returns them
        # (FIFO within a priority), so the oldest is always first.
        self._created: dict[str, deque[float]] = {p: deque() for p in _PRIORITY_RANK}
        self._empty = asyncio.Event()
        self._empty.set()

    async def put(self, message: Message) -> None:
        await self.put_many((message,))

    async def put_many(self, messages: Sequence[Message]) -> None:
        # No await between the check and the puts, so the batch is all-or-nothing.
        if self._ready.qsize() + len(self._delayed) + len(messages) > self.max_size:
            raise QueueFull(retry_after_s=1)
        for message in messages:
            self._enqueue(message)

    async def get(self) -> Message:
        _, _, message = await self._ready.get()
        self._created[message.priority].popleft()
        self._in_flight += 1
        return message

    async def ack(self, message: Message) -> None:
        self._in_flight -= 1
        self._check_empty()

    async def retry_later(self, message: Message, delay_s: float) -> None:
        self._in_flight -= 1
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def _due() -> None:
            self._delayed.discard(handle)
            self._enqueue(message)

        handle = loop.call_later(max(delay_s, 0.0), _due)
        self._delayed.add(handle)

    def depth(self) -> int:
        return self._ready.qsize() + len(self._delayed) + self._in_flight

    async def backlog(self) -> list[Backlog]:
        now = time.time()
        parts = [
            Backlog(priority, len(times), now - times[0] if times else 0.0)
            for priority, times in self._created.items()
        ]
        # Delayed retries: counted, their age unknown without keeping the messages.
        parts.append(Backlog("delayed", len(self._delayed), 0.0))
        return parts

    def waiting(self) -> int:
        """Messages ready to be taken (not delayed, not in flight)."""
        return self._ready.qsize()

    async def wait_empty(self) -> None:
        await self._empty.wait()

    async def stop_fetching(self) -> None:
        # Nobody else could take the messages: a drain must send them all from here.
        pass

    async def mark_sent(self, message: Message) -> None:
        # One process, no redelivery: nothing to remember.
        pass

    async def was_sent(self, message: Message) -> bool:
        return False

    def taken_over(self, message: Message) -> bool:
        return False

    def _enqueue(self, message: Message) -> None:
        self._empty.clear()
        self._ready.put_nowait((_PRIORITY_RANK[message.priority], next(self._sequence), message))
        self._created[message.priority].append(message.created_at)

    def _check_empty(self) -> None:
        if self.depth() == 0:
            self._empty.set()
