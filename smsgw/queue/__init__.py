"""Queues between the API and the dispatcher."""

from smsgw.queue.base import MessageQueue
from smsgw.queue.memory import MemoryQueue
from smsgw.queue.message import Message, Priority, new_message_id

__all__ = ["MemoryQueue", "Message", "MessageQueue", "Priority", "new_message_id"]
