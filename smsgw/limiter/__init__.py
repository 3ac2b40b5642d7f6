"""Provider rate limiters and caps on sends in flight."""

from smsgw.limiter.base import LATE_SLOT_S, ProviderLimiter
from smsgw.limiter.in_flight import InFlightLimits, InFlightStats, MemoryInFlight, RedisInFlight
from smsgw.limiter.memory import MemoryLimiter
from smsgw.limiter.redis import RedisLimiter

__all__ = [
    "LATE_SLOT_S",
    "InFlightLimits",
    "InFlightStats",
    "MemoryInFlight",
    "MemoryLimiter",
    "ProviderLimiter",
    "RedisInFlight",
    "RedisLimiter",
]
