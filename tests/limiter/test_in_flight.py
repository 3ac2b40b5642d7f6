"""In-flight caps: MemoryInFlight alone, RedisInFlight as several replicas on a private Redis.

The property: at any instant the sends open across every replica, and the grants in Redis,
add up to at most the cap. Times are measured, not assumed: bounds are loose (noisy machine).
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from smsgw.limiter import InFlightLimits, MemoryInFlight, RedisInFlight
from smsgw.limiter.in_flight import LEASE_S, RENEW_S
from smsgw.redis_keys import RedisKeys
from smsgw.redis_scripts import load_script
from testkit.services import RedisServer

pytestmark = pytest.mark.timeout(30)

P = "twilio"
CAP = 30
KEYS = RedisKeys("test:")
KEY = KEYS.in_flight(P)
_REPO = Path(__file__).resolve().parent.parent.parent


async def _until(check: Callable[[], bool], timeout_s: float, step_s: float = 0.01) -> float:
    """Seconds until check() holds (fails the test after timeout_s)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"condition not met within {timeout_s} s")
        await asyncio.sleep(step_s)
    return time.monotonic() - started


async def _cycle(limits: InFlightLimits, stop: asyncio.Event, done: list[int]) -> None:
    """A dispatcher worker: open, hold a random short while, close, until told to stop."""
    while not stop.is_set():
        await limits.open(P)
        try:
            await asyncio.sleep(random.uniform(0.001, 0.02))
        finally:
            limits.close(P)
        done.append(1)


async def _grants(client: Redis) -> dict[str, int]:
    entries = await client.hgetall(KEY)
    return {field.decode(): int(value.split()[0]) for field, value in entries.items()}


# -- memory ------------------------------------------------------------------------------


async def test_memory_counts_exactly_and_serves_in_order() -> None:
    limits = MemoryInFlight({P: 2, "console": None})
    assert limits.try_open(P)
    assert limits.try_open(P)
    assert not limits.try_open(P)
    order: list[int] = []

    async def wait(n: int) -> None:
        await limits.open(P)
        order.append(n)

    waiters = [asyncio.create_task(wait(n)) for n in range(4)]
    await asyncio.sleep(0.01)
    assert not limits.try_open(P)  # nobody jumps the queue
    assert limits.in_flight(P) == 2
    assert order == []
    for expected in ([0], [0, 1], [0, 1, 2], [0, 1, 2, 3]):
        limits.close(P)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert order == expected
        assert limits.in_flight(P) == 2
    await asyncio.gather(*waiters)
    assert limits.stats["waits"] == 4
    # An unlimited provider (named or not) always has room and is only counted.
    assert all(limits.try_open("console") for _ in range(1000))
    assert limits.in_flight("console") == 1000
    assert limits.limit("console") is None
    assert limits.try_open("unknown")
    assert limits.cap("unknown") is None


async def test_memory_cancelled_waiters_take_no_place() -> None:
    limits = MemoryInFlight({P: 1})
    assert limits.try_open(P)
    doomed = asyncio.create_task(limits.open(P))
    after = asyncio.create_task(limits.open(P))
    await asyncio.sleep(0.01)
    doomed.cancel()
    await asyncio.sleep(0)
    limits.close(P)  # the place goes past the cancelled waiter to the next one
    await asyncio.wait_for(after, 1)
    assert limits.in_flight(P) == 1
    # Cancelled in the same step as it was handed a place: the place comes back.
    late = asyncio.create_task(limits.open(P))
    await asyncio.sleep(0.01)
    limits.close(P)
    late.cancel()
    with pytest.raises(asyncio.CancelledError):
        await late
    assert limits.in_flight(P) == 0
    limits.close(P)  # a stray close mints no place
    assert limits.in_flight(P) == 0
    assert limits.try_open(P)
    assert not limits.try_open(P)


async def test_memory_refusal_lowers_the_share_and_it_recovers() -> None:
    limits = MemoryInFlight({P: 10}, recover_step_s=0.05)
    for _ in range(6):
        assert limits.try_open(P)
    limits.refused(P, retry_after_s=0.2)
    assert limits.limit(P) == 5
    limits.refused(P, None)  # a second answer of the same burst lowers no further
    assert limits.limit(P) == 5
    for _ in range(6):
        limits.close(P)
    holders = [asyncio.create_task(limits.open(P)) for _ in range(10)]
    await asyncio.sleep(0.05)
    assert limits.in_flight(P) == 5  # the lowered share holds during the hold
    # Then one place more per step, waking the waiters, until the cap is back.
    took = await _until(lambda: limits.in_flight(P) == 10, 3)
    await asyncio.gather(*holders)
    assert took >= 0.1  # held at least retry_after, less what passed above
    assert limits.limit(P) == 10
    assert limits.stats["refusals"] == 2
    assert limits.stats["share_changes"] >= 6


# -- Redis -------------------------------------------------------------------------------


@pytest.fixture
async def made(redis_url: str) -> AsyncIterator[Callable[..., Awaitable[RedisInFlight]]]:
    clients: list[Redis] = []
    limits: list[RedisInFlight] = []

    async def make(replica: str, url: str = redis_url, **kwargs: float) -> RedisInFlight:
        client = Redis.from_url(url)
        clients.append(client)
        made = RedisInFlight(client, {P: CAP, "console": None}, KEYS, replica, **kwargs)
        limits.append(made)
        await made.start()
        return made

    yield make
    for made in limits:
        await made.close_all()
    for client in clients:
        await client.aclose()


@pytest.fixture
async def probe(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_script_shares_max_min_fairly(probe: Redis) -> None:
    script = load_script(probe, "smsgw.limiter", "in_flight.lua")

    async def renew(me: str, demand: int, in_use: int = 0) -> list[int]:
        return [int(v) for v in await script(keys=[KEY], args=[me, CAP, demand, in_use, 5000])]

    # Alone: all of it (its demand, and the rest as headroom).
    assert await renew("a", 2) == [30, 30, 1]
    # Both demands met, the 23 spare split as headroom (the odd place to the smaller
    # demand); b may have 16 but gets nothing while a holds all 30.
    assert await renew("b", 5) == [0, 16, 2]
    assert await renew("a", 2) == [14, 14, 2]  # a shrinks to its share...
    assert await renew("b", 5) == [16, 16, 2]  # ... and then b gets its own
    # A big demand: the small ones are met in full, no headroom, the rest to the big one,
    # as far as the others' grants leave free.
    assert await renew("c", 100) == [0, 23, 3]
    assert await renew("a", 2, in_use=4) == [4, 2, 3]  # never below what it has open
    assert await renew("b", 5) == [5, 5, 3]
    assert await renew("c", 100) == [21, 23, 3]
    assert sum((await _grants(probe)).values()) <= CAP
    # An expired entry (a replica that stopped renewing) is dropped and its places return.
    await probe.hset(KEY, "b", "5 5 1")
    _grant, target, live = await renew("c", 100)
    assert live == 2
    assert "b" not in await _grants(probe)
    assert target == 28


async def test_three_replicas_never_exceed_the_cap(
    made: Callable[..., Awaitable[RedisInFlight]], probe: Redis
) -> None:
    replicas = [await made(f"r{n}") for n in range(3)]
    stop = asyncio.Event()
    done: list[int] = []
    workers = [
        asyncio.create_task(_cycle(limits, stop, done)) for limits in replicas for _ in range(25)
    ]
    most_open = most_granted = samples = 0
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        open_now = sum(limits.in_flight(P) for limits in replicas)
        most_open = max(most_open, open_now)
        most_granted = max(most_granted, sum((await _grants(probe)).values()))
        samples += 1
        await asyncio.sleep(0.002)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*workers), 10)  # every worker finishes its send

    print(f"most open {most_open}, most granted {most_granted}, sent {len(done)}")
    assert most_open <= CAP
    assert most_granted <= CAP
    assert most_open >= CAP - 3  # and the cap is used, not just respected
    assert samples > 200
    assert len(done) > 1000  # ~30 open x ~10 ms each: thousands in 2.5 s when unhindered
    assert all(limits.in_flight(P) == 0 for limits in replicas)
    assert all(limits.stats["redis_failures"] == 0 for limits in replicas)


async def test_equal_demand_converges_to_equal_shares(
    made: Callable[..., Awaitable[RedisInFlight]],
) -> None:
    # Started one after another: the first takes everything and must give two thirds back.
    replicas: list[RedisInFlight] = []
    stop = asyncio.Event()
    done: list[int] = []
    workers = []
    for n in range(3):
        limits = await made(f"r{n}")
        replicas.append(limits)
        workers += [asyncio.create_task(_cycle(limits, stop, done)) for _ in range(20)]
        await asyncio.sleep(0.3)
    took = await _until(lambda: [r.limit(P) for r in replicas] == [10, 10, 10], 3)
    held = [0, 0, 0]
    for _ in range(200):
        for n, limits in enumerate(replicas):
            held[n] += limits.in_flight(P)
        await asyncio.sleep(0.005)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*workers), 10)
    assert took < 2.0
    assert all(7 <= total / 200 <= 10 for total in held), held


async def test_a_killed_replicas_share_comes_back_after_its_lease(
    made: Callable[..., Awaitable[RedisInFlight]], probe: Redis, redis_url: str
) -> None:
    survivors = [await made("a"), await made("b")]
    stop = asyncio.Event()
    done: list[int] = []
    workers = [
        asyncio.create_task(_cycle(limits, stop, done)) for limits in survivors for _ in range(25)
    ]
    # A real replica process that takes its share, holds it and is SIGKILLed.
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _DOOMED_REPLICA, redis_url, cwd=_REPO, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 15)
        assert line.strip() == b"holding 10"
        await _until(lambda: [r.limit(P) for r in survivors] == [10, 10], 3)
        child.kill()
        await child.wait()
        killed_at = time.monotonic()
        most_granted = 0

        def back() -> bool:
            return sum(r.limit(P) or 0 for r in survivors) == CAP

        while not back():
            most_granted = max(most_granted, sum((await _grants(probe)).values()))
            assert time.monotonic() - killed_at < LEASE_S + 3, "its share never came back"
            await asyncio.sleep(0.01)
        took = time.monotonic() - killed_at
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), 10)
    # Not before its lease could have run out (renewed at most RENEW_S before the kill),
    # and within the lease plus a renewal.
    print(f"killed replica: share back after {took:.3f} s")
    assert LEASE_S - RENEW_S - 0.15 <= took < LEASE_S + 1.0, took
    assert most_granted <= CAP


_DOOMED_REPLICA = f"""
import asyncio, sys
from redis.asyncio import Redis
from smsgw.limiter import RedisInFlight
from smsgw.redis_keys import RedisKeys

async def main():
    redis = Redis.from_url(sys.argv[1])
    limits = RedisInFlight(redis, {{"{P}": {CAP}}}, RedisKeys("test:"), "doomed")
    await limits.start()
    holders = [asyncio.create_task(limits.open("{P}")) for _ in range(30)]
    while limits.in_flight("{P}") < 10:  # its fair share beside two busy replicas
        await asyncio.sleep(0.01)
    print("holding", limits.in_flight("{P}"), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_unreachable_redis_fails_closed_after_the_lease(
    made: Callable[..., Awaitable[RedisInFlight]], tmp_path: Path
) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        limits = await made("alone", server.url, lease_s=1.5)
        await _until(lambda: limits.limit(P) == CAP, 3)
        for _ in range(5):
            assert limits.try_open(P)
        server.stop()
        stopped_at = time.monotonic()
        # Until the lease runs out it may keep what it had open, and open nothing more:
        # an unanswered call may have left a grant of just those 5 in Redis.
        await asyncio.sleep(0.4)
        assert limits.limit(P) == 5
        assert not limits.try_open(P)
        took = await _until(lambda: limits.limit(P) == 0, 3)
        took += 0.4
        print(f"fail closed after {took:.3f} s")
        assert 1.5 - RENEW_S - 0.15 <= took <= 1.5 + 0.5, took
        assert limits.stats["fail_closed"] == 1
        assert limits.stats["redis_failures"] >= 2
        for _ in range(5):
            limits.close(P)  # never raises, Redis or not
        assert not limits.try_open(P)
        assert time.monotonic() - stopped_at < 3
        assert limits.try_open("console")  # unlimited providers never needed Redis

        server.start()
        await _until(lambda: limits.limit(P) == CAP, 5)
        await asyncio.wait_for(limits.open(P), 1)
        limits.close(P)
    finally:
        server.stop()


async def test_refusal_gives_the_share_to_the_others_and_recovers(
    made: Callable[..., Awaitable[RedisInFlight]],
) -> None:
    a = await made("a", recover_step_s=0.05)
    b = await made("b")
    stop = asyncio.Event()
    done: list[int] = []
    workers = [asyncio.create_task(_cycle(r, stop, done)) for r in (a, b) for _ in range(25)]
    try:
        await _until(lambda: a.limit(P) == b.limit(P) == 15, 3)
        while a.in_flight(P) < 12:  # refused while it had most of its share open
            await asyncio.sleep(0.001)
        a.refused(P, retry_after_s=0.5)
        lowered = a.limit(P)
        assert lowered is not None
        assert lowered < a.in_flight(P) <= 15
        # b takes what a gave up, at its next renewals...
        await _until(lambda: (b.limit(P) or 0) > 15, 2)
        # ... and gives it back when a's bound has grown back (after the hold).
        took = await _until(lambda: a.limit(P) == b.limit(P) == 15, 5)
        assert a.stats["refusals"] == 1
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), 10)
    assert took > 0.1


async def test_close_all_hands_back_an_idle_grant_and_unlimited_never_touch_redis(
    made: Callable[..., Awaitable[RedisInFlight]], probe: Redis
) -> None:
    a = await made("a")
    await _until(lambda: a.limit(P) == CAP, 3)
    assert "a" in await _grants(probe)
    assert 0 < await probe.pttl(KEY) <= LEASE_S * 1000  # the key goes with the last lease
    await a.close_all()
    assert "a" not in await _grants(probe)
    b = await made("b")
    await _until(lambda: b.limit(P) == CAP, 3)  # all of it, at once
    assert await probe.keys("test:inflight:{console}*") == []
