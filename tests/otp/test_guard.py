"""The abuse guard, on memory and on a private Redis: SMS pumping trips on a burst to one
prefix and not on normal traffic spread over many countries; failed checks lock a number for
a bounded time; an operator's allowed prefix is exempt."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from smsgw.errors import TooManyFailedChecks, TooManySends
from smsgw.otp.guard import (
    AbuseGuard,
    MemoryAbuseCounters,
    MemoryFailedChecks,
    RedisAbuseCounters,
    RedisFailedChecks,
)
from smsgw.phone import parse_phone
from smsgw.redis_keys import RedisKeys
from smsgw.settings import AbuseSettings

pytestmark = pytest.mark.timeout(30)

# A fixed time in the middle of a 10-minute bucket, and of a day.
NOON = 1_800_000_000.0 + 43_200 + 300


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
async def make_guard(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    redis = None
    keys = RedisKeys(f"guard-{request.node.name[-20:]}:")
    if request.param == "redis":
        redis = Redis.from_url(request.getfixturevalue("redis_url"))

    def make(clock: Clock, **settings: object) -> AbuseGuard:
        abuse = AbuseSettings(**settings)  # type: ignore[arg-type]
        if redis is None:
            return AbuseGuard(abuse, MemoryAbuseCounters(), MemoryFailedChecks(), keys, clock)
        counters, failed = RedisAbuseCounters(redis), RedisFailedChecks(redis, keys)
        return AbuseGuard(abuse, counters, failed, keys, clock)

    yield make
    if redis is not None:
        await redis.aclose()


async def starts(guard: AbuseGuard, numbers: list[str]) -> list[str]:
    """The outcome of one OTP start per number: "ok" or the refusal's reason."""
    outcomes = []
    for number in numbers:
        try:
            await guard.check_start(parse_phone(number))
            outcomes.append("ok")
        except TooManySends as exc:
            outcomes.append(exc.reason)
    return outcomes


async def test_a_burst_to_one_prefix_trips_the_guard(make_guard) -> None:  # type: ignore[no-untyped-def]
    guard = make_guard(Clock(), prefix_floor=30)
    # Premium-rate pumping looks like this: many numbers in one small range.
    burst = [f"+4479460{12000 + n:05d}" for n in range(40)]
    outcomes = await starts(guard, burst)
    assert outcomes[:30] == ["ok"] * 30
    assert set(outcomes[30:]) == {"suspected-pumping"}
    assert guard.pumping_refusals[("prefix", "GB")] == 10
    # Another range in the same country is not affected.
    assert await starts(guard, ["+447911123456"]) == ["ok"]


async def test_normal_traffic_over_many_countries_and_ranges_passes(make_guard) -> None:  # type: ignore[no-untyped-def]
    guard = make_guard(Clock(), prefix_floor=30, country_floor=600)
    numbers = []
    for n in range(250):
        numbers += [
            f"+1415{2_000_000 + (n * 7919) % 7_000_000:07d}",
            f"+447{400_000_000 + (n * 2_000_003) % 600_000_000:09d}",
            f"+336{12_000_000 + n * 3_001:08d}",
            f"+49151{10_000_000 + (n * 37_003) % 89_999_999:08d}",
        ]
    valid = []
    for number in numbers:
        try:
            parse_phone(number)
        except ValueError:
            continue
        valid.append(number)
    assert len(valid) > 600
    assert set(await starts(guard, valid)) == {"ok"}
    assert sum(guard.pumping_refusals.values()) == 0


async def test_a_spike_far_above_yesterday_trips_even_above_the_floor(make_guard) -> None:  # type: ignore[no-untyped-def]
    yesterday = (NOON // 86_400 - 1) * 86_400
    clock = Clock(yesterday)
    guard = make_guard(clock, prefix_floor=1000, country_floor=5, spike_factor=10.0)
    # Yesterday: 144 starts to the US over the day, one per 10-minute window on average.
    numbers = [f"+1415555{n:04d}" for n in range(144)]
    for number in numbers:
        assert await starts(guard, [number]) == ["ok"]
        clock.now += 600
    clock.now = NOON
    # Today a window may hold max(floor 5, 10 x 1) = 10 starts to the US.
    outcomes = await starts(guard, [f"+1650555{n:04d}" for n in range(12)])
    assert outcomes[:10] == ["ok"] * 10
    assert outcomes[10:] == ["suspected-pumping"] * 2


async def test_an_allowed_prefix_is_exempt(make_guard) -> None:  # type: ignore[no-untyped-def]
    guard = make_guard(Clock(), prefix_floor=5, allowed_prefixes=("4479460",))
    assert set(await starts(guard, [f"+4479460{12000 + n:05d}" for n in range(20)])) == {"ok"}


async def test_failed_checks_lock_a_number_for_a_bounded_time(make_guard) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    guard = make_guard(clock, failed_checks_per_number=3, failed_check_window_s=3600)
    phone = "+14155550100"
    for _ in range(3):
        await guard.reserve_check(phone)  # three wrong codes (slots kept)
        clock.now += 10
    with pytest.raises(TooManyFailedChecks) as locked:
        await guard.reserve_check(phone)
    # The oldest failure ages out 3600 s after it happened, 30 s ago.
    assert locked.value.retry_after_s == 3570
    await guard.reserve_check("+14155550101")  # other numbers are not affected
    clock.now += 3571
    token = await guard.reserve_check(phone)  # the lock ended by itself
    await guard.check_passed(phone, token)  # a right code is not a failure


async def test_right_codes_never_count_as_failures(make_guard) -> None:  # type: ignore[no-untyped-def]
    guard = make_guard(Clock(), failed_checks_per_number=2)
    for _ in range(10):
        token = await guard.reserve_check("+14155550100")
        await guard.check_passed("+14155550100", token)
