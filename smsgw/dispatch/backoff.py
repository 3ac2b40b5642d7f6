"""Retry delays: exponential with jitter, so retries of a burst do not come back as a burst."""

from __future__ import annotations

import random

__all__ = ["backoff_delay"]


def backoff_delay(
    attempt: int, base_s: float, max_s: float, rng: random.Random | None = None
) -> float:
    """Delay before retry number `attempt` (1 = first retry): half fixed, half random."""
    ceiling: float = min(max_s, base_s * 2.0 ** (attempt - 1))
    jitter: float = (rng or random).uniform(0.0, ceiling / 2)
    return ceiling / 2 + jitter
