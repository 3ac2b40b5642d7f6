"""Problems shared by every endpoint that queues messages."""

from __future__ import annotations

from smsgw.api.problems import Problem
from smsgw.errors import QueueFull

__all__ = ["queue_full_problem"]


def queue_full_problem(exc: QueueFull) -> Problem:
    return Problem(
        503,
        "queue-full",
        "Queue full",
        "too many messages are waiting; retry later",
        headers={"Retry-After": str(exc.retry_after_s)},
    )
