"""MemoryLimiter: never more than `rate` grants (units) in any 1 s window, pauses, cancellation."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsgw.limiter.memory import COLD_PACE, MemoryLimiter, _Pacer
from tests.helpers import max_units_in_window

pytestmark = pytest.mark.timeout(30)


def max_in_window(times: Sequence[float], window: float = 1.0) -> int:
    """Most grants in any half-open window [t, t + window) of the given length."""
    ordered = sorted(times)
    best = 0
    start = 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_window_counter_itself() -> None:
    assert max_in_window([]) == 0
    assert max_in_window([0.0, 0.5, 0.999]) == 3
    assert max_in_window([0.0, 0.5, 1.0]) == 2  # 1.0 is outside [0, 1)
    assert max_in_window([0.0, 1.0, 1.5, 1.9, 2.0]) == 3


async def run_acquirers(
    limiter: MemoryLimiter, provider: str, workers: int, duration_s: float
) -> list[float]:
    """`workers` tasks acquire in a loop for `duration_s`; returns every grant's time."""
    grants: list[float] = []
    deadline = time.monotonic() + duration_s

    async def worker() -> None:
        while time.monotonic() < deadline:
            await limiter.acquire(provider)
            grants.append(time.monotonic())

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    await asyncio.sleep(duration_s)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return grants


@pytest.fixture
async def limiters() -> AsyncIterator[list[MemoryLimiter]]:
    made: list[MemoryLimiter] = []
    yield made
    for limiter in made:
        await limiter.close()


async def test_no_window_holds_more_than_rate(limiters: list[MemoryLimiter]) -> None:
    rate = 200
    limiter = MemoryLimiter({"twilio": rate})
    limiters.append(limiter)
    grants = await run_acquirers(limiter, "twilio", workers=100, duration_s=1.5)

    assert max_in_window(grants) <= rate
    # Saturated, it still gets a fair share through (loose: machines are noisy).
    assert max_in_window(grants) >= rate * 0.5
    assert len(grants) >= rate * 0.75


async def test_sliding_log_binds_even_when_pacing_would_allow_more(
    limiters: list[MemoryLimiter],
) -> None:
    """With pacing at 4x the rate and a 1 s burst allowance, only the log enforces the rate."""
    rate = 50
    limiter = MemoryLimiter({"p": rate}, pace=4.0, burst_s=1.0)
    limiters.append(limiter)
    grants = await run_acquirers(limiter, "p", workers=80, duration_s=1.5)
    assert max_in_window(grants) <= rate
    assert max_in_window(grants) >= rate * 0.5


async def test_fractional_rate_rounds_down(limiters: list[MemoryLimiter]) -> None:
    limiter = MemoryLimiter({"p": 2.5}, pace=10.0, burst_s=1.0)
    limiters.append(limiter)
    grants = await run_acquirers(limiter, "p", workers=5, duration_s=1.2)
    assert 1 <= max_in_window(grants) <= 2


async def test_rates_are_per_provider(limiters: list[MemoryLimiter]) -> None:
    limiter = MemoryLimiter({"slow": 5, "fast": 100})
    limiters.append(limiter)
    slow, fast = await asyncio.gather(
        run_acquirers(limiter, "slow", workers=10, duration_s=1.2),
        run_acquirers(limiter, "fast", workers=10, duration_s=1.2),
    )
    assert max_in_window(slow) <= 5
    assert max_in_window(fast) <= 100
    assert len(fast) > 5 * len(slow) > 0


async def test_unlimited_and_unknown_providers_pass_at_once(
    limiters: list[MemoryLimiter],
) -> None:
    limiter = MemoryLimiter({"console": None})
    limiters.append(limiter)
    started = time.monotonic()
    for _ in range(5000):
        await limiter.acquire("console")
        await limiter.acquire("not-configured")
    assert time.monotonic() - started < 2.0


async def test_pause_holds_grants_for_the_pause(limiters: list[MemoryLimiter]) -> None:
    limiter = MemoryLimiter({"p": 1000})
    limiters.append(limiter)
    await limiter.acquire("p")
    started = time.monotonic()
    await limiter.pause("p", 0.3)
    await asyncio.wait_for(limiter.acquire("p"), 2)
    assert time.monotonic() - started >= 0.28


async def test_pause_blocks_waiters_already_queued(limiters: list[MemoryLimiter]) -> None:
    limiter = MemoryLimiter({"p": 1000})
    limiters.append(limiter)
    await limiter.pause("p", 0.3)
    started = time.monotonic()
    times: list[float] = []

    async def one() -> None:
        await limiter.acquire("p")
        times.append(time.monotonic() - started)

    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(10))), 2)
    assert min(times) >= 0.28


async def test_pause_applies_to_unlimited_providers(limiters: list[MemoryLimiter]) -> None:
    limiter = MemoryLimiter({"console": None})
    limiters.append(limiter)
    await limiter.pause("console", 0.2)
    started = time.monotonic()
    await asyncio.wait_for(limiter.acquire("console"), 2)
    assert time.monotonic() - started >= 0.18


async def test_pause_of_one_provider_leaves_others_alone(limiters: list[MemoryLimiter]) -> None:
    limiter = MemoryLimiter({"a": 1000, "b": 1000})
    limiters.append(limiter)
    await limiter.pause("a", 5)
    await asyncio.wait_for(limiter.acquire("b"), 0.5)
    await limiter.pause("unknown", 5)  # no error for a provider it does not know


async def test_shorter_pause_does_not_shorten_a_longer_one(
    limiters: list[MemoryLimiter],
) -> None:
    limiter = MemoryLimiter({"p": 1000})
    limiters.append(limiter)
    started = time.monotonic()
    await limiter.pause("p", 0.3)
    await limiter.pause("p", 0.05)
    await asyncio.wait_for(limiter.acquire("p"), 2)
    assert time.monotonic() - started >= 0.28


async def test_cancelled_waiter_does_not_break_the_limiter(
    limiters: list[MemoryLimiter],
) -> None:
    limiter = MemoryLimiter({"p": 10})  # one grant every ~0.1 s
    limiters.append(limiter)
    await limiter.acquire("p")
    first = asyncio.create_task(limiter.acquire("p"))
    second = asyncio.create_task(limiter.acquire("p"))
    await asyncio.sleep(0.01)
    assert not first.done()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    # The next waiter still gets its turn, and later callers too.
    await asyncio.wait_for(second, 1)
    await asyncio.wait_for(limiter.acquire("p"), 1)


async def test_all_waiters_cancelled_then_new_acquire_works(
    limiters: list[MemoryLimiter],
) -> None:
    limiter = MemoryLimiter({"p": 5})
    limiters.append(limiter)
    await limiter.acquire("p")
    waiters = [asyncio.create_task(limiter.acquire("p")) for _ in range(5)]
    await asyncio.sleep(0.01)
    for task in waiters:
        task.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    await asyncio.sleep(0.3)  # the release loop finds only cancelled waiters and stops
    await asyncio.wait_for(limiter.acquire("p"), 1)
    # And the rate still holds afterwards.
    grants = await run_acquirers(limiter, "p", workers=5, duration_s=1.1)
    assert max_in_window(grants) <= 5


async def test_wait_for_timeouts_under_load_keep_the_rate(
    limiters: list[MemoryLimiter],
) -> None:
    """Acquirers that give up (timeouts) while others wait must not open extra room."""
    rate = 50
    limiter = MemoryLimiter({"p": rate})
    limiters.append(limiter)
    grants: list[float] = []
    deadline = time.monotonic() + 1.3

    async def impatient() -> None:
        while time.monotonic() < deadline:
            try:
                await asyncio.wait_for(limiter.acquire("p"), 0.03)
            except TimeoutError:
                continue
            grants.append(time.monotonic())

    await asyncio.gather(*(impatient() for _ in range(40)))
    assert max_in_window(grants) <= rate
    assert len(grants) > 0


async def test_close_cancels_pending_acquires() -> None:
    limiter = MemoryLimiter({"p": 1})
    await limiter.acquire("p")
    pending = asyncio.create_task(limiter.acquire("p"))
    await asyncio.sleep(0.01)
    await limiter.close()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(pending, 1)


# -- units (a long SMS's segments) ----------------------------------------------------


def test_units_window_counter_itself() -> None:
    assert max_units_in_window([]) == 0
    assert max_units_in_window([(0.0, 3), (0.5, 2), (0.999, 1)]) == 6
    assert max_units_in_window([(0.0, 3), (1.0, 2), (1.5, 4)]) == 6


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.integers(1, 12),
    attempts=st.lists(st.tuples(st.integers(0, 4000), st.integers(1, 15)), min_size=1, max_size=80),
)
def test_pacer_log_grants_exactly_what_fits(capacity: int, attempts: list[tuple[int, int]]) -> None:
    """With pacing out of the way (a huge burst allowance), the log alone decides: a grant
    is refused exactly when its units (at most the whole window) would not fit."""
    pacer = _Pacer(capacity, pace=1.0, burst_s=1e9)
    granted: list[tuple[float, int]] = []
    for millis, units in sorted(attempts):
        now = millis / 1000  # whole ms, so window edges are exact
        charge = min(units, capacity)
        held = sum(u for at, u in granted if at > now - 1.0)
        assert pacer.try_grant(now, units) == (held + charge <= capacity)
        if held + charge <= capacity:
            granted.append((now, charge))
            assert pacer.next_chance(now, 1) >= 0.0
    assert max_units_in_window(granted) <= capacity


def test_pacer_next_chance_is_when_the_window_makes_room() -> None:
    pacer = _Pacer(10, pace=1.0, burst_s=1e9)
    assert pacer.try_grant(0.0, 4)
    assert pacer.try_grant(0.5, 6)
    assert pacer.next_chance(0.6, 4) == pytest.approx(0.4)  # the 4 at 0.0 leave at 1.0
    assert pacer.next_chance(0.6, 5) == pytest.approx(0.9)  # and the 6 at 0.5 at 1.5
    assert not pacer.try_grant(0.999, 4)
    assert pacer.try_grant(1.0, 4)


def test_pacer_pacing_moves_on_by_the_units() -> None:
    pacer = _Pacer(100, pace=1.0, burst_s=0.0)  # one unit per 10 ms, no burst
    assert pacer.try_grant(5.0, 3)
    # (cold for its first second: 1 / (100 x COLD_PACE) per unit)
    assert pacer.next_chance(5.0, 1) == pytest.approx(3 / (100 * COLD_PACE))


def _mixed_units(rng: random.Random) -> int:
    """Segments per message: mostly 1 to 3, now and then up to 10."""
    draw = rng.random()
    if draw < 0.58:
        return 1
    if draw < 0.83:
        return 2
    if draw < 0.97:
        return 3
    return rng.randint(4, 10)


async def run_unit_acquirers(
    limiter: MemoryLimiter, provider: str, workers: int, duration_s: float, seed: int = 1
) -> list[tuple[float, int]]:
    """Like run_acquirers, each acquire for a random number of units; returns (the grant
    time acquire() returned, units) of every grant."""
    rng = random.Random(seed)
    grants: list[tuple[float, int]] = []
    deadline = time.monotonic() + duration_s

    async def worker() -> None:
        while time.monotonic() < deadline:
            units = _mixed_units(rng)
            grants.append((await limiter.acquire(provider, units), units))

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    await asyncio.sleep(duration_s)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return grants


async def test_mixed_units_never_exceed_the_rate(limiters: list[MemoryLimiter]) -> None:
    rate = 400
    limiter = MemoryLimiter({"p": rate})
    limiters.append(limiter)
    grants = await run_unit_acquirers(limiter, "p", workers=60, duration_s=2.0)

    cap = math.floor(rate * 0.99)
    assert max_units_in_window(grants) <= cap
    assert max(units for _, units in grants) > 3  # the long messages were in the mix
    # The rate is used in units, not messages (loose: the first second paces colder).
    assert sum(units for _, units in grants) >= 0.8 * cap * 2.0
    assert len(grants) < 0.7 * sum(units for _, units in grants)


async def test_mixed_units_sliding_log_binds_when_pacing_would_allow_more(
    limiters: list[MemoryLimiter],
) -> None:
    rate = 60
    limiter = MemoryLimiter({"p": rate}, pace=4.0, burst_s=1.0)
    limiters.append(limiter)
    grants = await run_unit_acquirers(limiter, "p", workers=40, duration_s=1.5, seed=2)
    assert max_units_in_window(grants) <= rate
    assert max_units_in_window(grants) >= rate * 0.8


async def test_more_units_than_a_window_holds_are_still_granted(
    limiters: list[MemoryLimiter],
) -> None:
    limiter = MemoryLimiter({"p": 8})  # the window holds floor(8 x 0.99) = 7 units
    limiters.append(limiter)
    first = await asyncio.wait_for(limiter.acquire("p", 10), 1)
    # It took the whole window, and the pacing charged all 10 units.
    second = await asyncio.wait_for(limiter.acquire("p", 1), 3)
    assert second - first >= 1.0


async def test_a_long_message_at_the_head_is_not_starved(
    limiters: list[MemoryLimiter],
) -> None:
    """Short messages keep the limiter saturated; a 10-unit one still goes through, and
    nothing queued after it passes it."""
    limiter = MemoryLimiter({"p": 200})
    limiters.append(limiter)
    asked: list[tuple[float, float]] = []  # (acquire called, granted) of 1-unit acquires
    stop = asyncio.Event()

    async def short() -> None:
        while not stop.is_set():
            called = time.monotonic()
            asked.append((called, await limiter.acquire("p")))

    shorts = [asyncio.create_task(short()) for _ in range(30)]
    try:
        await asyncio.sleep(0.3)
        big = asyncio.create_task(limiter.acquire("p", 10))
        await asyncio.sleep(0)  # its first step (queueing it) runs before we resume
        queued = time.monotonic()  # so any acquire called after this is behind it
        granted = await asyncio.wait_for(big, 3)
        await asyncio.sleep(0.2)  # the short ones queued behind it get theirs
    finally:
        stop.set()
        for task in shorts:
            task.cancel()
        await asyncio.gather(*shorts, return_exceptions=True)
    later = [got for called, got in asked if called > queued]
    assert later, "the short messages kept coming"
    assert min(later) >= granted
