"""Provider rate limiters."""

from smsgw.limiter.base import ProviderLimiter
from smsgw.limiter.memory import MemoryLimiter

__all__ = ["MemoryLimiter", "ProviderLimiter"]
