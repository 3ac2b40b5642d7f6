"""Exponential backoff, the one implementation every retry loop uses.

Delays double from `base_s` up to `max_s`. Jitter spreads the retries of many callers (a
burst of messages, every replica after a Redis restart) so they do not come back in step:

- "half": half of the delay fixed, half random (dispatch retries, Redis reconnects);
- "full": anywhere from 0 to the delay (DynamoDB's own advice for throttled batch writes);
- "none": the plain doubling, for a single caller that waits on one thing (a table to
  become active, a spool to replay, a worker that keeps failing to start).
"""

from __future__ import annotations

import random
from typing import Literal

__all__ = ["Backoff", "Jitter", "backoff_delay"]

Jitter = Literal["half", "full", "none"]


def backoff_delay(
    attempt: int,
    base_s: float,
    max_s: float,
    jitter: Jitter = "half",
    rng: random.Random | None = None,
) -> float:
    """Delay before retry number `attempt` (1 = the first retry)."""
    ceiling: float = min(max_s, base_s * 2.0 ** (attempt - 1))
    if jitter == "none":
        return ceiling
    uniform = (rng or random).uniform
    if jitter == "full":
        return uniform(0.0, ceiling)
    return ceiling / 2 + uniform(0.0, ceiling / 2)


class Backoff:
    """`backoff_delay` with the attempt count kept: `next()` after each failure, `reset()`
    after a success."""

    def __init__(self, base_s: float, max_s: float, jitter: Jitter = "half") -> None:
        self.base_s = base_s
        self.max_s = max_s
        self.jitter: Jitter = jitter
        self.failures = 0

    def next(self) -> float:
        self.failures += 1
        return backoff_delay(self.failures, self.base_s, self.max_s, self.jitter)

    def reset(self) -> None:
        self.failures = 0
