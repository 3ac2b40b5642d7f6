"""The send path of issue 14 through the real TwilioProvider and the fake Twilio (real HTTP on
loopback, answering after a delay, counting requests open and refusing over its cap):
concurrency refusals are re-sent and cost no attempt, a shared cap keeps the provider from
refusing at all, a provider that refuses everything does not starve another, and the
limiter is charged what the provider counts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from smsgw.dispatch.dispatcher import Dispatcher
from smsgw.dispatch.lane import MIN_READY_AHEAD
from smsgw.dispatch.router import Route, Router
from smsgw.limiter.in_flight import MemoryInFlight
from smsgw.limiter.memory import MemoryLimiter
from smsgw.providers.twilio import TwilioProvider
from smsgw.queue.memory import MemoryQueue
from smsgw.queue.message import Message
from smsgw.segments import segment
from smsgw.settings import DispatchSettings, RateUnit, TwilioProviderSettings
from testkit.fake_provider import FakeTwilio, Faults
from tests.helpers import RecordedAudit

pytestmark = pytest.mark.timeout(60)

SID = "AC" + "5e9d" * 8
TOKEN = "send-path-token"
SETTINGS = DispatchSettings(max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.05)


@dataclass
class Gateway:
    queue: MemoryQueue
    dispatcher: Dispatcher
    fakes: dict[str, FakeTwilio]

    async def send(self, *messages: Message, timeout_s: float = 20.0) -> None:
        for message in messages:
            await self.queue.put(message)
        assert await self.dispatcher.drain(timeout_s), self.dispatcher.stats.as_dict()

    @property
    def stats(self) -> dict[str, int]:
        return self.dispatcher.stats.as_dict()


Build = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def build(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> AsyncIterator[Build]:
    async with contextlib.AsyncExitStack() as stack:

        async def make(
            faults: Mapping[str, Faults],
            *,
            caps: Mapping[str, int | None] | None = None,
            countries: Mapping[str, tuple[str, ...]] | None = None,
            rates: Mapping[str, float | None] | None = None,
            rate_units: Mapping[str, RateUnit] | None = None,
            limiter: Any = None,
        ) -> Gateway:
            fakes, routes = {}, []
            for name, fault in faults.items():
                fake = FakeTwilio(SID, TOKEN, faults=fault, seed=1)
                server = await aiohttp_server(fake.make_app())
                provider = TwilioProvider(
                    TwilioProviderSettings(
                        name=name,
                        account_sid=SID,
                        auth_token=TOKEN,
                        from_="+15005550006",
                        base_url=str(server.make_url("")),
                    )
                )
                await provider.start()
                stack.push_async_callback(provider.close)
                fakes[name] = fake
                routes.append(Route(provider, 1.0, frozenset((countries or {}).get(name, ()))))
            queue = MemoryQueue(max_size=10_000)
            all_rates = {name: (rates or {}).get(name) for name in faults}
            pacer = limiter if limiter is not None else MemoryLimiter(all_rates)
            stack.push_async_callback(pacer.close)
            in_flight = MemoryInFlight({name: (caps or {}).get(name) for name in faults})
            await in_flight.start()
            stack.push_async_callback(in_flight.close_all)
            dispatcher = Dispatcher(
                queue,
                Router(routes),
                pacer,
                SETTINGS,
                RecordedAudit(),
                in_flight=in_flight,
                rates=all_rates,
                rate_units=rate_units,
            )
            dispatcher.start()
            stack.push_async_callback(dispatcher.stop)
            return Gateway(queue, dispatcher, fakes)

        yield make


def sms(n: int, body: str = "hello", country: str = "US") -> Message:
    seg = segment(body)
    return Message(
        to=f"+1415555{n:04d}",
        country=country,
        body=body,
        client="app",
        segments=seg.segments,
        encoding=seg.encoding,
    )


async def test_concurrency_refusals_are_sent_again_without_an_attempt(build: Build) -> None:
    # The provider takes 4 open requests; the dispatcher, uncapped, opens more at once.
    gw = await build({"twilio": Faults(latency_ms=50, max_concurrent=4)})
    messages = [sms(n) for n in range(40)]
    await gw.send(*messages)

    fake = gw.fakes["twilio"]
    assert fake.concurrency_429 > 0  # the premise: the provider did refuse
    assert sorted(a.to for a in fake.accepted) == sorted(m.to for m in messages)  # each once
    assert gw.stats["sent"] == 40
    assert gw.stats["concurrency_refusals"] == fake.concurrency_429
    assert gw.stats["failed"] == gw.stats["retried"] == gw.stats["throttled"] == 0
    assert all(m.attempts == 1 for m in messages)  # a refusal is not an attempt
    lane = gw.dispatcher.lanes["twilio"]
    assert lane.refusals == fake.concurrency_429
    assert lane.open_now == 0
    assert lane.held == 0


async def test_a_shared_cap_keeps_the_provider_from_refusing(build: Build) -> None:
    gw = await build({"twilio": Faults(latency_ms=30, max_concurrent=5)}, caps={"twilio": 5})
    await gw.send(*(sms(n) for n in range(60)))

    fake = gw.fakes["twilio"]
    assert len(fake.accepted) == 60
    assert fake.concurrency_429 == 0
    assert fake.in_flight_peak == 5  # the cap is used, never passed


async def test_a_provider_refusing_everything_does_not_starve_another(build: Build) -> None:
    # "stuck" serves every country, holds its one open request for 3 s and refuses every
    # other for concurrency; "healthy" serves GB only. US messages can only wait for "stuck";
    # GB ones are routed to both, and while "stuck" refuses they go to "healthy".
    gw = await build(
        {"stuck": Faults(max_concurrent=1, latency_ms=3000), "healthy": Faults(latency_ms=5)},
        countries={"healthy": ("GB",)},
    )
    stuck = [sms(n) for n in range(300)]
    for message in stuck:
        await gw.queue.put(message)
    await asyncio.sleep(0.3)  # the stuck lane fills up
    healthy = [sms(n, country="GB") for n in range(50)]
    started = time.monotonic()
    for message in healthy:
        await gw.queue.put(message)
    fake = gw.fakes["healthy"]
    while len(fake.accepted) < 50:
        assert time.monotonic() - started < 10, gw.stats
        await asyncio.sleep(0.02)
    assert len(gw.fakes["stuck"].accepted) <= 1
    assert gw.fakes["stuck"].concurrency_429 > 0
    # The provider recovers: nothing it refused was lost or failed.
    gw.fakes["stuck"].configure({"max_concurrent": None, "latency_ms": 0})
    assert await gw.dispatcher.drain(20), gw.stats
    assert sorted(a.to for a in gw.fakes["stuck"].accepted) == sorted(m.to for m in stuck)
    assert gw.stats["failed"] == 0
    assert gw.stats["sent"] == 350


class _RecordingLimiter(MemoryLimiter):
    def __init__(self, rates: Mapping[str, float | None]) -> None:
        super().__init__(rates)
        self.units: dict[str, list[int]] = {}

    async def acquire(self, provider: str, units: int = 1) -> float:
        self.units.setdefault(provider, []).append(units)
        return await super().acquire(provider, units)


@pytest.mark.parametrize(("unit", "charged"), [("segments", [1, 2, 3]), ("requests", [1, 1, 1])])
async def test_the_limiter_is_charged_what_the_provider_counts(
    build: Build, unit: RateUnit, charged: list[int]
) -> None:
    limiter = _RecordingLimiter({"twilio": None})
    gw = await build({"twilio": Faults()}, rate_units={"twilio": unit}, limiter=limiter)
    for n, body in enumerate(["short", "a" * 161, "Ж" * 140]):
        await gw.send(sms(n, body))
    assert limiter.units["twilio"] == charged


async def test_every_send_measures_its_decision_to_write_delay(build: Build) -> None:
    gw = await build({"twilio": Faults()}, rates={"twilio": 200})
    await gw.send(*(sms(n) for n in range(20)))
    metrics = gw.dispatcher.metrics
    samples = {
        s.name: s.value
        for family in metrics.decision_delay.collect()
        for s in family.samples
        if s.labels.get("provider") == "twilio"
    }
    assert samples["smsgw_send_decision_delay_seconds_count"] == 20
    # The write follows the slot at once: far below a millisecond each on average.
    assert samples["smsgw_send_decision_delay_seconds_sum"] / 20 < 0.005


async def test_sends_waiting_for_their_slot_hold_few_connections(build: Build) -> None:
    # 200/s: 80 messages wait up to 0.4 s for their slots. Only 16 (READY_AHEAD_S of the
    # rate, at least MIN_READY_AHEAD) may hold a connection meanwhile; without the bound
    # every waiting message opened one.
    gw = await build({"twilio": Faults()}, rates={"twilio": 200})
    await gw.send(*(sms(n) for n in range(80)))
    assert gw.stats["sent"] == 80
    provider = gw.dispatcher.lanes["twilio"].provider
    stats = provider.pool_stats()  # type: ignore[attr-defined]
    assert stats is not None
    assert stats.connects <= MIN_READY_AHEAD + 2
