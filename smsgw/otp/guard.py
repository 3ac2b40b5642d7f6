"""Abuse protection for OTPs: SMS pumping and brute force across verifications.

SMS pumping (toll fraud): attackers start OTPs to number ranges that pay them per SMS.
Starts are counted per destination prefix (first `prefix_digits` digits of the E.164
number) and per country in fixed buckets of `pumping_window_s`; the count over the last
window (the current bucket plus the overlapping share of the previous one) may not exceed
max(floor, spike_factor x the previous day's average per window). Only starts that send count:
the service admits a start here after the per-number checks passed, and takes it back when
its SMS cannot be queued; a start refused here counts nothing. So a caller can keep a range
refused only by getting real SMS sent into it, as many as the floor each window. A number
that completed a verification within `verified_exempt_s` (kept as an HMAC of the number) is
never refused here (it is counted): its owner still gets codes while the range is attacked.
Prefixes in `allowed_prefixes` are exempt and not counted. Counters live in Redis when
configured, so every replica sees every start.

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
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from redis.asyncio import Redis

from smsgw.errors import TooManyFailedChecks, TooManySends
from smsgw.otp.redis_store import script_now
from smsgw.phone import PhoneNumber
from smsgw.redis_keys import RedisKeys
from smsgw.redis_scripts import load_script
from smsgw.settings import AbuseSettings

__all__ = [
    "AbuseCounters",
    "AbuseGuard",
    "FailedChecks",
    "MemoryAbuseCounters",
    "MemoryFailedChecks",
    "PumpingRule",
    "PumpingScope",
    "RedisAbuseCounters",
    "RedisFailedChecks",
    "StartTicket",
]

_log = structlog.get_logger("smsgw.otp")
_DAY_S = 86400.0
_SWEEP_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class PumpingScope:
    """The counter keys of one scope (a country or a prefix) around now, and its floor."""

    current: str
    previous: str
    today: str
    yesterday: str
    floor: int


@dataclass(frozen=True, slots=True)
class PumpingRule:
    elapsed: float  # share of the current bucket gone by, 0..1
    window_s: float
    spike_factor: float

    def judge(self, current: int, previous: int, yesterday: int, floor: int) -> tuple[float, float]:
        """(starts over the last window with this one, the limit): refused if the first is
        larger."""
        recent = current + 1 + previous * (1.0 - self.elapsed)
        limit = max(float(floor), self.spike_factor * yesterday * self.window_s / _DAY_S)
        return recent, limit


@dataclass(frozen=True, slots=True)
class StartTicket:
    """What admit_start counted, to take it back if the start sends nothing after all."""

    keys: tuple[str, ...] = ()


class AbuseCounters(Protocol):
    async def admit(
        self, scopes: Sequence[PumpingScope], rule: PumpingRule, exempt: str | None
    ) -> tuple[int, float, float]:
        """Count one start in every scope unless one is over its limit, then count nothing:
        (-1, 0, 0) when counted, else (index of that scope, its recent count, its limit).
        With `exempt` the key of an existing mark, the start is counted and never refused.
        Atomic: concurrent calls are counted as if one after the other."""

    async def uncount(self, keys: Sequence[str]) -> None:
        """One less in each of these counters (never below zero)."""

    async def mark(self, key: str, ttl_s: float) -> None:
        """Set (or renew) a mark that lives `ttl_s`."""

    def sweep(self) -> int:
        """Forget what expired (memory); returns how many entries went."""


class MemoryAbuseCounters:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._values: dict[str, tuple[int, float]] = {}
        # Marks all live verified_exempt_s, so insertion order (renewals move to the end) is
        # expiry order and a sweep only looks at the expired front.
        self._marks: OrderedDict[str, float] = OrderedDict()
        self._clock = clock
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._values) + len(self._marks)

    async def admit(
        self, scopes: Sequence[PumpingScope], rule: PumpingRule, exempt: str | None
    ) -> tuple[int, float, float]:
        # No await in here: atomic on the event loop.
        now = self._clock()
        if now >= self._next_sweep:
            self.sweep()
        if exempt is None or self._marks.get(exempt, 0.0) <= now:
            for index, scope in enumerate(scopes):
                recent, limit = rule.judge(
                    self._value(scope.current, now),
                    self._value(scope.previous, now),
                    self._value(scope.yesterday, now),
                    scope.floor,
                )
                if recent > limit:
                    return index, recent, limit
        for scope in scopes:
            self._increment(scope.current, 2 * rule.window_s, now)
            self._increment(scope.today, 2 * _DAY_S, now)
        return -1, 0.0, 0.0

    async def uncount(self, keys: Sequence[str]) -> None:
        now = self._clock()
        for key in keys:
            value, expires = self._values.get(key, (0, 0.0))
            if value > 0 and expires > now:
                self._values[key] = (value - 1, expires)

    async def mark(self, key: str, ttl_s: float) -> None:
        self._marks[key] = self._clock() + ttl_s
        self._marks.move_to_end(key)

    def sweep(self) -> int:
        now = self._clock()
        before = len(self)
        self._values = {k: v for k, v in self._values.items() if v[1] > now}
        while self._marks and next(iter(self._marks.values())) <= now:
            self._marks.popitem(last=False)
        self._next_sweep = now + _SWEEP_EVERY_S
        return before - len(self)

    def _value(self, key: str, now: float) -> int:
        value, expires = self._values.get(key, (0, 0.0))
        return value if expires > now else 0

    def _increment(self, key: str, ttl_s: float, now: float) -> None:
        self._values[key] = (self._value(key, now) + 1, now + ttl_s)


class RedisAbuseCounters:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._admit = load_script(redis, "smsgw.otp", "lua/pumping_admit.lua")
        self._uncount = load_script(redis, "smsgw.otp", "lua/pumping_uncount.lua")

    async def admit(
        self, scopes: Sequence[PumpingScope], rule: PumpingRule, exempt: str | None
    ) -> tuple[int, float, float]:
        keys = [k for s in scopes for k in (s.current, s.previous, s.today, s.yesterday)]
        if exempt is not None:
            keys.append(exempt)
        args: list[str | int] = [
            repr(rule.elapsed),
            repr(rule.window_s),
            repr(_DAY_S),
            repr(rule.spike_factor),
            math.ceil(2 * rule.window_s * 1000),
            math.ceil(2 * _DAY_S * 1000),
            *(scope.floor for scope in scopes),
        ]
        reply = await self._admit(keys=keys, args=args)
        if int(reply[0]) == 0:
            return -1, 0.0, 0.0
        return int(reply[0]) - 1, float(reply[1]), float(reply[2])

    async def uncount(self, keys: Sequence[str]) -> None:
        await self._uncount(keys=list(keys), args=[])

    async def mark(self, key: str, ttl_s: float) -> None:
        await self._redis.set(key, b"1", px=math.ceil(ttl_s * 1000))

    def sweep(self) -> int:
        return 0  # every key has an expiry: Redis forgets by itself


class FailedChecks(Protocol):
    async def reserve(
        self, phone: str, now: float, window_s: float, limit: int
    ) -> tuple[str | None, float]:
        """Reserve a failure slot for one check of `phone`: (token, 0) or (None, retry_after)."""

    async def release(self, phone: str, token: str) -> None:
        """The code was right: the reserved slot was not a failure."""

    def sweep(self, now: float, window_s: float) -> int:
        """Forget numbers without a failure in the window (memory); how many went."""


class MemoryFailedChecks:
    def __init__(self) -> None:
        self._checks: dict[str, deque[tuple[float, str]]] = {}

    def __len__(self) -> int:
        return len(self._checks)

    async def reserve(
        self, phone: str, now: float, window_s: float, limit: int
    ) -> tuple[str | None, float]:
        checks = self._checks.setdefault(phone, deque())
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

    def sweep(self, now: float, window_s: float) -> int:
        # Without this, one entry per number ever checked stayed for the life of the process.
        stale = [p for p, c in self._checks.items() if not c or c[-1][0] <= now - window_s]
        for phone in stale:
            del self._checks[phone]
        return len(stale)


class RedisFailedChecks:
    """Failed checks in Redis, on Redis' clock (see RedisOtpStore: `now` is used only with
    `trust_caller_time`)."""

    def __init__(self, redis: Redis, keys: RedisKeys, *, trust_caller_time: bool = False) -> None:
        self._redis = redis
        self._keys = keys
        self._trust_caller_time = trust_caller_time
        self._reserve = load_script(redis, "smsgw.otp", "lua/failed_check.lua")

    async def reserve(
        self, phone: str, now: float, window_s: float, limit: int
    ) -> tuple[str | None, float]:
        token = os.urandom(8).hex()
        args: list[str | float] = [script_now(now, self._trust_caller_time), window_s, limit, token]
        reply = await self._reserve(keys=[self._keys.failed_checks(phone)], args=args)
        if int(reply[0]) == 1:
            return token, 0.0
        return None, float(reply[1])

    async def release(self, phone: str, token: str) -> None:
        await self._redis.zrem(self._keys.failed_checks(phone), token)

    def sweep(self, now: float, window_s: float) -> int:
        return 0  # the sorted set expires with its last failure


# Scopes whose keys are kept formatted: the busy prefixes of a bucket, not every one seen.
_SCOPES_KEPT = 10_000


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
        # The counter keys of the scopes seen in the current bucket: four formatted keys per
        # scope and start were a third of admitting one. Emptied when the bucket moves on.
        self._scopes: dict[tuple[str, str, int], PumpingScope] = {}
        self._scopes_bucket = (-1, -1)

    async def admit_start(self, phone: PhoneNumber, verified_tag: str | None = None) -> StartTicket:
        """Count one OTP start to `phone` that is about to send, or raise
        TooManySends("suspected-pumping") (counting nothing) when its prefix or country is
        sending far more than usual. `verified_tag` names the number in the marks of
        mark_verified: a number verified lately is counted but never refused."""
        settings = self.settings
        now = self._clock()
        digits = phone.e164[1:]
        if self._allowed and digits.startswith(self._allowed):
            return StartTicket()  # an operator vouches for this range
        prefix = digits[: settings.prefix_digits]
        named = [
            ("country", phone.country, settings.country_floor),
            ("prefix", prefix, settings.prefix_floor),
        ]
        scopes = [self._scope(scope, name, floor, now) for scope, name, floor in named]
        window_s = settings.pumping_window_s
        elapsed = (now % window_s) / window_s
        rule = PumpingRule(elapsed, window_s, settings.spike_factor)
        exempt = None
        if verified_tag is not None and settings.verified_exempt_s > 0:
            exempt = self._keys.verified_number(verified_tag)
        refused, recent, limit = await self._counters.admit(scopes, rule, exempt)
        if refused >= 0:
            scope = named[refused][0]
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
        return StartTicket(tuple(key for s in scopes for key in (s.current, s.today)))

    async def cancel_start(self, ticket: StartTicket) -> None:
        """The admitted start sent nothing (its SMS could not be queued): take it back."""
        if ticket.keys:
            await self._counters.uncount(ticket.keys)

    async def mark_verified(self, verified_tag: str) -> None:
        """The number named by `verified_tag` completed a verification: its owner is real."""
        if self.settings.verified_exempt_s > 0:
            key = self._keys.verified_number(verified_tag)
            await self._counters.mark(key, self.settings.verified_exempt_s)

    def sweep(self) -> int:
        """Forget what aged out of the embedded (memory) state; Redis expires keys itself."""
        window_s = self.settings.failed_check_window_s
        return self._counters.sweep() + self._failed.sweep(self._clock(), window_s)

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

    def _scope(self, scope: str, name: str, floor: int, now: float) -> PumpingScope:
        bucket = int(now // self.settings.pumping_window_s)
        day = int(now // _DAY_S)
        if self._scopes_bucket != (bucket, day) or len(self._scopes) >= _SCOPES_KEPT:
            self._scopes = {}
            self._scopes_bucket = (bucket, day)
        cached = self._scopes.get((scope, name, floor))
        if cached is None:
            cached = self._scopes[(scope, name, floor)] = self._new_scope(
                scope, name, floor, bucket, day
            )
        return cached

    def _new_scope(self, scope: str, name: str, floor: int, bucket: int, day: int) -> PumpingScope:
        key = self._keys.abuse_counter
        return PumpingScope(
            current=key(scope, name, f"w{bucket}"),
            previous=key(scope, name, f"w{bucket - 1}"),
            today=key(scope, name, f"d{day}"),
            yesterday=key(scope, name, f"d{day - 1}"),
            floor=floor,
        )
