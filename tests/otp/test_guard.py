"""The abuse guard, on memory and on a private Redis: SMS pumping trips on a burst to one
prefix and not on normal traffic spread over many countries; refused starts count nothing and
a start can be taken back; concurrent starts are admitted exactly up to the limit; a verified
number is exempt; failed checks lock a number for a bounded time; an operator's allowed prefix
is exempt; the memory state is swept."""

from __future__ import annotations

import asyncio
import time
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
            counters = MemoryAbuseCounters(clock)
            return AbuseGuard(abuse, counters, MemoryFailedChecks(), keys, clock)
        return AbuseGuard(
            # Time driven by the test's clock (the replicas' own read Redis' clock: see
            # test_failed_checks_are_counted_on_redis_clock).
            abuse,
            RedisAbuseCounters(redis),
            RedisFailedChecks(redis, keys, trust_caller_time=True),
            keys,
            clock,
        )

    yield make
    if redis is not None:
        await redis.aclose()


async def starts(guard: AbuseGuard, numbers: list[str], tag: str | None = None) -> list[str]:
    """The outcome of one OTP start per number: "ok" or the refusal's reason."""
    return [await start(guard, number, tag) for number in numbers]


async def start(guard: AbuseGuard, number: str, tag: str | None = None) -> str:
    try:
        await guard.admit_start(parse_phone(number), tag)
    except TooManySends as exc:
        return exc.reason
    return "ok"


def gb(n: int) -> str:
    return f"+4479460{12000 + n:05d}"  # one 7-digit prefix


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


async def test_refused_starts_count_nothing(make_guard) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    guard = make_guard(clock, prefix_floor=5)
    outcomes = await starts(guard, [gb(n) for n in range(50)])
    assert outcomes == ["ok"] * 5 + ["suspected-pumping"] * 45
    # Half-way through the next window: 5 x 0.5 = 2.5 starts carried over, not 25.
    clock.now += 600
    assert (
        await starts(guard, [gb(n) for n in range(50, 54)])
        == ["ok"] * 2 + ["suspected-pumping"] * 2
    )


async def test_refused_starts_do_not_raise_tomorrows_baseline(make_guard) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    guard = make_guard(clock, prefix_floor=5, spike_factor=10.0)
    # An attack of 20 000 starts today: before, these counted, and tomorrow's limit for the
    # range became 10 x 20 000 / 144 per window, far above the floor.
    numbers = [gb(n % 1000) for n in range(2000)]
    assert (await starts(guard, numbers)).count("ok") == 5
    clock.now += 86_400
    assert (await starts(guard, [gb(n) for n in range(10)])).count("ok") == 5


async def test_a_cancelled_start_is_taken_back(make_guard) -> None:  # type: ignore[no-untyped-def]
    guard = make_guard(Clock(), prefix_floor=2)
    for n in range(10):
        ticket = await guard.admit_start(parse_phone(gb(n)))
        await guard.cancel_start(ticket)  # e.g. the queue was full: nothing sent
    assert await starts(guard, [gb(n) for n in range(3)]) == ["ok", "ok", "suspected-pumping"]


async def test_concurrent_starts_are_admitted_exactly_up_to_the_floor(make_guard) -> None:  # type: ignore[no-untyped-def]
    guard = make_guard(Clock(), prefix_floor=30)

    async def one(n: int) -> str:
        await asyncio.sleep(0)  # let all start before any runs
        return await start(guard, gb(n))

    outcomes = await asyncio.gather(*(one(n) for n in range(100)))
    assert outcomes.count("ok") == 30
    assert outcomes.count("suspected-pumping") == 70
    assert guard.pumping_refusals[("prefix", "GB")] == 70


async def test_a_verified_number_is_counted_but_never_refused(make_guard) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    guard = make_guard(clock, prefix_floor=3, verified_exempt_s=30 * 86_400)
    await guard.mark_verified("tag-of-gb0")
    assert await starts(guard, [gb(0)] * 5, tag="tag-of-gb0") == ["ok"] * 5
    # Its starts were counted: the range is refused for numbers without a mark.
    assert await start(guard, gb(1), tag="tag-of-gb1") == "suspected-pumping"
    clock.now += 30 * 86_400 + 1  # the mark ages out (memory: on the guard's clock)
    if isinstance(guard._counters, MemoryAbuseCounters):
        assert await start(guard, gb(0), tag="tag-of-gb0") == "ok"  # a new day, a new window
        assert await starts(guard, [gb(0)] * 3, tag="tag-of-gb0") == [
            "ok",
            "ok",
            "suspected-pumping",
        ]


async def test_no_exemption_when_it_is_switched_off(make_guard) -> None:  # type: ignore[no-untyped-def]
    guard = make_guard(Clock(), prefix_floor=1, verified_exempt_s=0)
    await guard.mark_verified("tag")
    assert await starts(guard, [gb(0)] * 2, tag="tag") == ["ok", "suspected-pumping"]


async def test_the_memory_sweep_forgets_failed_checks_and_marks_that_aged_out() -> None:
    clock = Clock()
    counters, failed = MemoryAbuseCounters(clock), MemoryFailedChecks()
    settings = AbuseSettings(failed_check_window_s=3600, verified_exempt_s=86_400)
    guard = AbuseGuard(settings, counters, failed, RedisKeys("sweep:"), clock)
    for n in range(100):
        token = await guard.reserve_check(f"+1415555{n:04d}")
        if n % 2:
            await guard.check_passed(f"+1415555{n:04d}", token)  # an empty history stays
        await guard.mark_verified(f"tag-{n}")
    await starts(guard, [gb(0)])
    assert (len(failed), len(counters)) == (100, 104)
    clock.now += 3600
    # Every number's failures left the window, and so did the start's two bucket counters.
    assert guard.sweep() == 102
    assert len(failed) == 0
    clock.now += 2 * 86_400
    assert guard.sweep() == 102  # the marks, and the start's two day counters
    assert len(counters) == 0


async def test_failed_checks_are_counted_on_redis_clock(redis_url: str) -> None:
    # Two replicas whose clocks are more than the window apart share one lock: the script
    # reads Redis' TIME, not the `now` a replica passes.
    redis = Redis.from_url(redis_url)
    keys = RedisKeys("guard-skew:")
    abuse = AbuseSettings(failed_checks_per_number=2, failed_check_window_s=3600)

    def replica(offset_s: float) -> AbuseGuard:
        clock = Clock(time.time() + offset_s)
        failed = RedisFailedChecks(redis, keys)  # as the replicas make it
        return AbuseGuard(abuse, RedisAbuseCounters(redis), failed, keys, clock)

    on_time, ahead = replica(0.0), replica(3700.0)
    phone = "+14155550100"
    await on_time.reserve_check(phone)
    await on_time.reserve_check(phone)
    with pytest.raises(TooManyFailedChecks) as locked:
        await ahead.reserve_check(phone)
    assert 3590 <= locked.value.retry_after_s <= 3600
    await redis.aclose()
