"""What the dispatcher needs from a provider rate limiter."""

from __future__ import annotations

from typing import Protocol

__all__ = ["ProviderLimiter"]


class ProviderLimiter(Protocol):
    async def acquire(self, provider: str) -> None:
        """Return when one SMS may be handed to `provider` without breaking its rate."""

    async def pause(self, provider: str, seconds: float) -> None:
        """The provider throttled us: grant nothing for it during `seconds`."""

    async def close(self) -> None:
        """Stop background work; pending acquire() calls are cancelled."""
