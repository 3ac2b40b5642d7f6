"""What the dispatcher needs from a provider rate limiter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

__all__ = ["LATE_SLOT_S", "ProviderLimiter"]

# A send must start within this long after its slot (time.monotonic()) or the slot is
# dropped: a slot used late would bunch with later ones at the provider, which counts
# arrivals, not our grants (the reference design: "dropped rather than sent in a burst").
LATE_SLOT_S = 0.005


class ProviderLimiter(Protocol):
    @property
    def stats(self) -> Mapping[str, int]:
        """Counters since start, by name, for metrics and benchmarks (may be empty)."""

    async def acquire(self, provider: str, units: int = 1) -> float:
        """Wait for a send slot for `provider` worth `units` of its rate (a message's
        segments, or 1 where the provider counts requests); return its time
        (time.monotonic() clock).

        The caller sends at once, and drops the slot (acquires another) if it could not
        start within LATE_SLOT_S of it.
        """

    async def pause(self, provider: str, seconds: float) -> None:
        """The provider throttled us: grant nothing for it during `seconds`."""

    async def close(self) -> None:
        """Stop background work; pending acquire() calls are cancelled."""
