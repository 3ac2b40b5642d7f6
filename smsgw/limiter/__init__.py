"""Provider rate limiters."""

from smsgw.limiter.base import LATE_SLOT_S, ProviderLimiter
from smsgw.limiter.memory import MemoryLimiter

__all__ = ["LATE_SLOT_S", "MemoryLimiter", "ProviderLimiter"]
