"""After a Redis primary change the limiters keep clear of what the old primary handed out.

A promoted replica may hold a schedule (or in-flight grants) older than the old primary's:
replication is asynchronous. Here one real Redis plays both primaries: the test puts back
state read a moment before (what a lagging replica would have) and tells the client's
PrimaryWatch that the address changed, as the Sentinel pool does when it finds the new one.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

import smsgw.limiter.in_flight as in_flight_module
import smsgw.limiter.redis as limiter_module
from smsgw.limiter import RedisLimiter
from smsgw.limiter.in_flight import RedisInFlight
from smsgw.redis_connect import PrimaryWatch
from smsgw.redis_keys import RedisKeys
from smsgw.settings import LimiterSettings
from tests.helpers import max_units_in_window

pytestmark = pytest.mark.timeout(30)

RATE = 200.0
KEYS = RedisKeys("hold:")
P = "twilio"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def grants_across_a_stale_failover(
    client: Redis, monkeypatch: pytest.MonkeyPatch, *, seen: bool
) -> tuple[list[float], float]:
    """Slots granted for 4.5 s under excess demand; at 1.5 s the schedule goes back to what
    it was at 1.0 s and (if `seen`) the watch reports a new primary."""
    watch = PrimaryWatch(address="127.0.0.1:1")
    monkeypatch.setattr(limiter_module, "primary_watch", lambda _: watch if seen else None)
    # A long look-ahead makes the overlap a stale schedule allows (rate x look-ahead) large.
    limiter = RedisLimiter(client, {P: RATE}, KEYS, LimiterSettings(lookahead_s=0.2))
    grants: list[float] = []
    started = time.monotonic()

    async def sender() -> None:
        while time.monotonic() - started < 4.5:
            grants.append(await limiter.acquire(P))

    senders = [asyncio.create_task(sender()) for _ in range(20)]
    await asyncio.sleep(1.0)
    stale = await client.get(KEYS.limiter(P))
    assert stale is not None
    await asyncio.sleep(0.5)
    await client.set(KEYS.limiter(P), stale, px=60_000)
    watch.seen("127.0.0.1", 2)
    changed_at = time.monotonic()
    await asyncio.gather(*senders)
    await limiter.close()
    return grants, changed_at


async def test_slots_keep_clear_of_the_old_primarys_after_a_change(
    client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    grants, changed = await grants_across_a_stale_failover(client, monkeypatch, seen=True)
    assert max_units_in_window([(t, 1) for t in grants]) <= math.floor(0.985 * RATE)
    # Held for the look-ahead plus 2 s (what was leased before reaches the look-ahead),
    # then at the rate again.
    assert not [t for t in grants if changed + 0.25 < t < changed + 2.0]
    assert len([t for t in grants if t > changed + 2.1]) > 0.5 * RATE


async def test_without_the_hold_a_stale_schedule_goes_over_the_rate(
    client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The case the hold exists for (so the test above can fail)."""
    grants, _ = await grants_across_a_stale_failover(client, monkeypatch, seen=False)
    assert max_units_in_window([(t, 1) for t in grants]) > RATE


async def test_in_flight_grants_do_not_grow_for_a_lease_after_a_change(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replica a holds the whole cap; the new primary lost its entry. Replica b, which
    wants places, gets none until a's renewals have put its grant back."""
    watches = {"a": PrimaryWatch(address="127.0.0.1:1"), "b": PrimaryWatch(address="127.0.0.1:1")}
    made: list[tuple[Redis, RedisInFlight]] = []

    async def replica(name: str) -> RedisInFlight:
        client = Redis.from_url(redis_url)
        monkeypatch.setattr(in_flight_module, "primary_watch", lambda _: watches[name])
        limits = RedisInFlight(client, {P: 10}, KEYS, name, lease_s=1.0, renew_s=0.1)
        made.append((client, limits))
        await limits.start()
        return limits

    try:
        a = await replica("a")
        for _ in range(10):
            await a.open(P)
        b = await replica("b")
        waiting = [asyncio.create_task(b.open(P)) for _ in range(5)]
        await asyncio.sleep(0.3)
        assert b.in_flight(P) == 0  # a holds the cap
        probe = made[0][0]
        await probe.delete(KEYS.in_flight(P))  # the promoted replica never saw a's grant
        for watch in watches.values():
            watch.seen("127.0.0.1", 2)
        for _ in range(8):  # through the lease (1 s) after the change
            await asyncio.sleep(0.1)
            assert a.in_flight(P) + b.in_flight(P) <= 10
        assert b.in_flight(P) == 0
        for _ in range(5):
            a.close(P)
        await asyncio.wait_for(asyncio.gather(*waiting), 5)  # a's places, once it gives them
        assert b.in_flight(P) == 5
    finally:
        for client, limits in made:
            await limits.close_all()
            await client.aclose()
