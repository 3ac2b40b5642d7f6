"""Queues between the API and the dispatcher."""

from smsgw.queue.base import Backlog, MessageQueue
from smsgw.queue.memory import MemoryQueue
from smsgw.queue.message import Message, Priority, new_message_id
from smsgw.queue.redis import (
    QueueUnavailable,
    RedisQueue,
    RedisQueueStats,
    default_consumer_name,
)

__all__ = [
    "Backlog",
    "MemoryQueue",
    "Message",
    "MessageQueue",
    "Priority",
    "QueueUnavailable",
    "RedisQueue",
    "RedisQueueStats",
    "default_consumer_name",
    "new_message_id",
]
