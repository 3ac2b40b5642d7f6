"""What the API and the dispatcher need from a queue, whatever keeps the messages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from smsgw.queue.message import Message

__all__ = ["Backlog", "MessageQueue"]


@dataclass(frozen=True, slots=True)
class Backlog:
    """Unfinished messages of one part of the queue ("high", "normal", or "delayed":
    waiting for a retry), and how long the oldest of them has been there."""

    part: str
    messages: int
    oldest_age_s: float


class MessageQueue(Protocol):
    # The bound on waiting messages (beyond it, put() raises QueueFull).
    max_size: int

    def waiting(self) -> int:
        """Messages waiting to be sent, as far as this process knows (for readiness)."""

    async def put(self, message: Message) -> None:
        """Accept one message or raise QueueFull."""

    async def put_many(self, messages: Sequence[Message]) -> None:
        """Accept all of them or none (QueueFull)."""

    async def get(self) -> Message:
        """Wait for the next message, high priority first."""

    async def ack(self, message: Message) -> None:
        """The message's outcome is recorded; forget it."""

    async def retry_later(self, message: Message, delay_s: float) -> None:
        """Hand the message back to be delivered again after `delay_s` (replaces ack)."""

    def depth(self) -> int:
        """Messages waiting, delayed or in flight: the work a drain must still finish."""

    async def backlog(self) -> list[Backlog]:
        """Per part of the queue, for metrics and autoscaling; shared queues count every
        replica's messages (one read of the queue's store)."""

    async def wait_empty(self) -> None:
        """Return once depth() is zero."""

    async def stop_fetching(self) -> None:
        """Take no new messages (a drain begins); what is held is still finished.

        A shared queue gives back what it fetched but has not handed out, for other replicas;
        the memory queue has no one to give messages to and keeps serving them.
        """

    async def mark_sent(self, message: Message) -> None:
        """The provider accepted `message`: a redelivered copy of it must not be sent again.

        Call it right after the provider's answer, before recording the outcome; `ack()`
        follows once the outcome is recorded.
        """

    def taken_over(self, message: Message) -> bool:
        """True if this delivery took `message` over from a consumer that stopped answering:
        that consumer may have sent it already, so sending it is a possible duplicate."""

    async def was_sent(self, message: Message) -> bool:
        """True if `message` is a redelivered copy another consumer already finished.

        Cheap (no I/O) unless the message was redelivered; call it just before sending.
        """
