"""Abuse protection for OTPs: SMS pumping and brute force across verifications.

SMS pumping (toll fraud): attackers start OTPs to number ranges that pay them per SMS.
Starts are counted per destination prefix (first `prefix_digits` digits of the E.164
number) and per country in fixed buckets of `pumping_window_s`; the count over the last
window (the current bucket plus the overlapping share of the previous one) may not exceed
max(floor, spike_factor x the previous day's average per window). Refused starts are
counted too, so a range under attack stays refused while the attack goes on. Prefixes in
`allowed_prefixes` are exempt. Counters live in Redis when configured, so every replica
sees every start.

Brute force: besides the 5 attempts of one verification, a number may collect at most
`failed_checks_per_number` wrong codes over `failed_check_window_s`, across all its
verifications; then its checks are refused until the oldest failure ages out. The lock is
bounded by that window; an attacker who re-locks a number must spend another full set of
guesses each time (at 10 per hour, a 6-digit code falls once in 100 000 hours).
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Protocol

import structlog
from redis.asyncio import Redis

from smsgw.errors import TooManyFailedChecks, TooManySends
from smsgw.phone import PhoneNumber
from smsgw.redis_keys import RedisKeys
from smsgw.settings import AbuseSettings

__all__ = [
    "AbuseCounters",
    "AbuseGuard",
    "FailedChecks",
    "MemoryAbuseCounters",
    "MemoryFailedChecks",
    "RedisAbuseCounters",
    "RedisFailedChecks",
]

_log = structlog.get_logger("smsgw.otp")
_DAY_S = 86400.0


class AbuseCounters(Protocol):
    async def count(
        self, increments: Sequence[tuple[str, float]], reads: Sequence[str]
    ) -> tuple[list[int], list[int]]:
        """Add one to each key of `increments` (each kept for its ttl, in seconds) and read
        the `reads`; the values after the increments, and the values read (0 if absent)."""


class MemoryAbuseCounters:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._values: dict[str, tuple[int, float]] = {}
        self._clock = clock
        self._next_sweep = 0.0

    async def count(
        self, increments: Sequence[tuple[str, float]], reads: Sequence[str]
    ) -> tuple[list[int], list[int]]:
        now = self._clock()
        if now >= self._next_sweep:
            self._values = {k: v for k, v in self._values.items() if v[1] > now}
            self._next_sweep = now + 60.0
        added = []
        for key, ttl in increments:
            value, expires = self._values.get(key, (0, 0.0))
            value = value + 1 if expires > now else 1
            self._values[key] = (value, now + ttl)
            added.append(value)
        read = []
        for key in reads:
            value, expires = self._values.get(key, (0, 0.0))
            read.append(value if expires > now else 0)
        return added, read


class RedisAbuseCounters:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def count(
        self, increments: Sequence[tuple[str, float]], reads: Sequence[str]
    ) -> tuple[list[int], list[int]]:
        # One round trip; not atomic, and need not be: these are statistics, not a cap.
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, ttl in increments:
                pipe.incr(key)
                pipe.expire(key, math.ceil(ttl))
            for key in reads:
                pipe.get(key)
            replies = await pipe.execute()
        added = [int(v) for v in replies[: 2 * len(increments) : 2]]
        read = [int(v) if v is not None else 0 for v in replies[2 * len(increments) :]]
        return added, read


class FailedChecks(Protocol):
    async def reserve(
        self, phone: str, now: float, window_s: float, limit: int
    ) -> tuple[str | None, float]:
        """Reserve a failure slot for one check of `phone`: (token, 0) or (None, retry_after)."""

    async def release(self, phone: str, token: str) -> None:
        """The code was right: the reserved slot was not a failure."""


class MemoryFailedChecks:
    def __init__(self) -> None:
        self._checks: dict[str, deque[tuple[float, str]]] = defaultdict(deque)

    async def reserve(
        self, phone: str, now: float, window_s: float, limit: int
    ) -> tuple[str | None, float]:
        checks = self._checks[phone]
        while checks and checks[0][0] <= now - window_s:
            checks.popleft()
        if len(checks) >= limit:
            return None, checks[0][0] + window_s - now
        token = os.urandom(8).hex()
        checks.append((now, token))
        return token, 0.0

    async def release(self, phone: str, token: str) -> None:
        checks = self._checks.get(phone)
        if checks:
            self._checks[phone] = deque(c for c in checks if c[1] != token)


class RedisFailedChecks:
    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self._redis = redis
        self._keys = keys
        source = resources.files("smsgw.otp").joinpath("lua/failed_check.lua").read_text()
        self._reserve = redis.register_script(source)

    async def reserve(
        self, phone: str, now: float, window_s: float, limit: int
    ) -> tuple[str | None, float]:
        token = f"{now:.6f}:{os.urandom(8).hex()}"
        reply = await self._reserve(
            keys=[self._keys.failed_checks(phone)], args=[repr(now), window_s, limit, token]
        )
        if int(reply[0]) == 1:
            return token, 0.0
        return None, float(reply[1])

    async def release(self, phone: str, token: str) -> None:
        await self._redis.zrem(self._keys.failed_checks(phone), token)


@dataclass(frozen=True, slots=True)
class _Window:
    current: str
    previous: str
    today: str
    yesterday: str


class AbuseGuard:
    def __init__(
        self,
        settings: AbuseSettings,
        counters: AbuseCounters,
        failed_checks: FailedChecks,
        keys: RedisKeys,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._counters = counters
        self._failed = failed_checks
        self._keys = keys
        self._clock = clock
        self._allowed = tuple(settings.allowed_prefixes)
        # (scope, country) -> starts refused as suspected pumping; for metrics and alerts.
        self.pumping_refusals: Counter[tuple[str, str]] = Counter()

    async def check_start(self, phone: PhoneNumber) -> None:
        """Count one OTP start to `phone`; raise TooManySends("suspected-pumping") when its
        prefix or country is sending far more than usual."""
        settings = self.settings
        now = self._clock()
        digits = phone.e164[1:]
        if self._allowed and digits.startswith(self._allowed):
            return  # an operator vouches for this range
        prefix = digits[: settings.prefix_digits]
        scopes = [
            ("country", phone.country, settings.country_floor),
            ("prefix", prefix, settings.prefix_floor),
        ]
        windows = [self._window(scope, name, now) for scope, name, _ in scopes]
        window_s = settings.pumping_window_s
        increments = [(w.current, 2 * window_s) for w in windows]
        increments += [(w.today, 2 * _DAY_S) for w in windows]
        reads = [key for w in windows for key in (w.previous, w.yesterday)]
        added, read = await self._counters.count(increments, reads)
        elapsed = (now % window_s) / window_s
        for index, (scope, _, floor) in enumerate(scopes):
            previous, yesterday = read[2 * index], read[2 * index + 1]
            recent = added[index] + previous * (1.0 - elapsed)
            baseline = yesterday * window_s / _DAY_S
            limit = max(floor, settings.spike_factor * baseline)
            if recent > limit:
                self.pumping_refusals[(scope, phone.country)] += 1
                _log.warning(
                    "suspected_pumping",
                    scope=scope,
                    country=phone.country,
                    prefix=prefix,  # an operator needs it to allow the range if it is real
                    recent=round(recent, 1),
                    limit=round(limit, 1),
                )
                retry_after = math.ceil(window_s * (1.0 - elapsed))
                raise TooManySends("suspected-pumping", retry_after)

    async def reserve_check(self, phone: str) -> str:
        """Before comparing a code for `phone`: a failure slot, or TooManyFailedChecks."""
        settings = self.settings
        token, retry_after = await self._failed.reserve(
            phone, self._clock(), settings.failed_check_window_s, settings.failed_checks_per_number
        )
        if token is None:
            raise TooManyFailedChecks(max(math.ceil(retry_after), 1))
        return token

    async def check_passed(self, phone: str, token: str) -> None:
        await self._failed.release(phone, token)

    def _window(self, scope: str, name: str, now: float) -> _Window:
        bucket = int(now // self.settings.pumping_window_s)
        day = int(now // _DAY_S)
        key = self._keys.abuse_counter
        return _Window(
            current=key(scope, name, f"w{bucket}"),
            previous=key(scope, name, f"w{bucket - 1}"),
            today=key(scope, name, f"d{day}"),
            yesterday=key(scope, name, f"d{day - 1}"),
        )
