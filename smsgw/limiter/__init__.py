"""Provider rate limiters."""

from smsgw.limiter.base import LATE_SLOT_S, ProviderLimiter
from smsgw.limiter.memory import MemoryLimiter
from smsgw.limiter.redis import RedisLimiter

__all__ = ["LATE_SLOT_S", "MemoryLimiter", "ProviderLimiter", "RedisLimiter"]
