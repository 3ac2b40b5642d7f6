"""What the API and the dispatcher need from a queue, whatever keeps the messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from smsgw.queue.message import Message

__all__ = ["MessageQueue"]


class MessageQueue(Protocol):
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

    async def wait_empty(self) -> None:
        """Return once depth() is zero."""
