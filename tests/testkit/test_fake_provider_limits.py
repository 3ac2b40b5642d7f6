"""The fake provider as a real one behaves where pacing is judged: per-request latency with
jitter, Twilio's concurrency limit (429/20429), segments per sliding second."""

from __future__ import annotations

import asyncio
import base64
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import hypothesis
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import strategies as st

from testkit.fake_provider import (
    CONCURRENT_HEADER,
    HUNG,
    FakeProvider,
    FakeTwilio,
    Faults,
    SlidingSegments,
    VonageAccount,
    max_in_sliding_window,
    segments_in_sliding_window,
)

pytestmark = pytest.mark.timeout(30)

SID = "AC" + "1234abcd" * 4
TOKEN = "secret-token"
TO = "+14155550100"
PATH = f"/2010-04-01/Accounts/{SID}/Messages.json"
HEADERS = {"Authorization": "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()}
THREE_SEGMENTS = "a" * 152 + "€" + "a" * 152  # the escape pair opens part 2

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


def form(body: str = "Your code is 123456", to: str = TO) -> dict[str, str]:
    return {"To": to, "From": "+15005550006", "Body": body}


async def send(
    client: Client, data: Mapping[str, str] | None = None, **kwargs: Any
) -> tuple[int, Any, Mapping[str, str], float]:
    """(status, JSON body, headers, seconds until answered)."""
    started = time.monotonic()
    async with client.post(PATH, data=dict(data or form()), headers=HEADERS, **kwargs) as r:
        return r.status, await r.json(), r.headers, time.monotonic() - started


async def start(
    aiohttp_client: MakeClient, faults: Faults, seed: int = 7
) -> tuple[FakeProvider, Client]:
    fake = FakeTwilio(SID, TOKEN, faults=faults, seed=seed)
    return fake, await aiohttp_client(fake.make_app())


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


# -- latency with jitter ------------------------------------------------------------


def test_uniform_jitter_spreads_delays_over_latency_plus_minus_jitter() -> None:
    fake = FakeTwilio(faults=Faults(latency_ms=250, jitter_ms=80), seed=1)
    delays = [fake.draw_delay_s() for _ in range(5000)]
    assert 0.170 <= min(delays) < 0.172
    assert 0.328 < max(delays) <= 0.330
    assert statistics.fmean(delays) == pytest.approx(0.250, abs=0.003)
    # Uniform: each quarter of the range holds about a quarter of the draws.
    quarter = sum(0.170 <= d < 0.210 for d in delays) / len(delays)
    assert quarter == pytest.approx(0.25, abs=0.03)


def test_normal_jitter_takes_the_spread_as_standard_deviation() -> None:
    fake = FakeTwilio(faults=Faults(latency_ms=250, jitter_ms=80, jitter_dist="normal"), seed=1)
    delays = [fake.draw_delay_s() for _ in range(5000)]
    assert statistics.fmean(delays) == pytest.approx(0.250, abs=0.005)
    assert statistics.stdev(delays) == pytest.approx(0.080, rel=0.06)
    beyond = sum(abs(d - 0.250) > 0.080 for d in delays) / len(delays)
    assert beyond == pytest.approx(0.317, abs=0.03)  # a bell: ~32% beyond one sigma


@pytest.mark.parametrize("dist", ["uniform", "normal"])
def test_delays_are_clipped_at_zero(dist: str) -> None:
    fake = FakeTwilio(faults=Faults(latency_ms=20, jitter_ms=80, jitter_dist=dist), seed=1)
    delays = [fake.draw_delay_s() for _ in range(2000)]
    assert min(delays) == 0.0
    zero = sum(d == 0.0 for d in delays) / len(delays)
    # P(draw < -20 ms): 60/160 for uniform ±80, Phi(-0.25) = 0.40 for normal sigma 80.
    assert zero == pytest.approx(0.375 if dist == "uniform" else 0.40, abs=0.04)


async def test_each_request_waits_its_own_delay_after_being_stamped(
    aiohttp_client: MakeClient,
) -> None:
    fake, client = await start(aiohttp_client, Faults(latency_ms=150, jitter_ms=100))
    started = time.monotonic()
    answers = await asyncio.gather(*(send(client) for _ in range(20)))
    elapsed = sorted(answer[3] for answer in answers)
    assert all(answer[0] == 201 for answer in answers)
    # 50..250 ms each, drawn per request: answered spread out, not together.
    assert elapsed[0] >= 0.05
    assert elapsed[-1] < 0.45
    assert elapsed[-1] - elapsed[0] > 0.08
    # Stamped on receipt, before the delay.
    assert all(at - started < 0.1 for at in fake.arrivals)


# -- the concurrency cap ------------------------------------------------------------


async def test_requests_over_max_concurrent_are_refused_at_once_with_20429(
    aiohttp_client: MakeClient,
) -> None:
    fake, client = await start(aiohttp_client, Faults(latency_ms=400, max_concurrent=3))
    held = [asyncio.create_task(send(client, form(f"message {i}"))) for i in range(3)]
    await until(lambda: fake.in_flight == 3)

    for _ in range(2):
        status, body, headers, elapsed = await send(client)
        assert status == 429
        assert body == {
            "code": 20429,
            "message": "Too Many Requests",
            "more_info": "https://www.twilio.com/docs/errors/20429",
            "status": 429,
        }
        assert headers[CONCURRENT_HEADER] == "4"  # the three open and this one
        assert elapsed < 0.2  # at once, not after the latency
    assert fake.concurrency_429 == 2
    assert fake.by_status == {201: 3, 429: 2}
    assert [r.status for r in fake.records[3:]] == [429, 429]
    assert [r.segments for r in fake.records[3:]] == [0, 0]

    answers = await asyncio.gather(*held)
    assert [answer[0] for answer in answers] == [201, 201, 201]
    # Answered in the order they came, each counting the requests open when it is
    # answered, itself included: 3, then 2, then 1.
    header_of = {answer[1]["body"]: answer[2][CONCURRENT_HEADER] for answer in answers}
    assert [header_of[a.body] for a in fake.accepted] == ["3", "2", "1"]
    assert {a.body for a in fake.accepted} == {"message 0", "message 1", "message 2"}
    assert fake.in_flight == 0
    assert fake.in_flight_peak == 4

    status, _, headers, _ = await send(client)  # room again
    assert (status, headers[CONCURRENT_HEADER]) == (201, "1")
    assert fake.concurrency_429 == 2


async def test_every_twilio_answer_carries_the_concurrency_header(
    aiohttp_client: MakeClient,
) -> None:
    fake, client = await start(aiohttp_client, Faults(throttle_429=0.5), seed=3)
    statuses = set()
    for data in (form(), form(to="bad"), form(body="")):
        for _ in range(4):
            status, _, headers, _ = await send(client, data)
            statuses.add(status)
            assert headers[CONCURRENT_HEADER] == "1"
    async with client.post(PATH, data=form()) as r:  # no credentials
        assert (r.status, r.headers[CONCURRENT_HEADER]) == (401, "1")
    assert statuses == {201, 400, 429}
    # Injected throttling is not the concurrency limit.
    assert fake.concurrency_429 == 0


async def test_peak_in_flight_is_recorded_without_a_cap(aiohttp_client: MakeClient) -> None:
    fake, client = await start(aiohttp_client, Faults(latency_ms=200))
    answers = await asyncio.gather(*(send(client) for _ in range(6)))
    assert [answer[0] for answer in answers] == [201] * 6
    assert fake.in_flight_peak == 6
    assert fake.in_flight == 0
    assert fake.concurrency_429 == 0


async def test_a_held_request_is_open_until_its_client_leaves(aiohttp_client: MakeClient) -> None:
    fake, client = await start(aiohttp_client, Faults(hang=1.0, max_concurrent=1))
    with pytest.raises(asyncio.TimeoutError):
        await send(client, timeout=aiohttp.ClientTimeout(total=0.3))
    assert fake.by_status == {HUNG: 1}
    await until(lambda: fake.in_flight == 0, timeout=2.0)
    assert fake.in_flight_peak == 1


async def test_vonage_requests_count_as_open_but_are_never_refused(
    aiohttp_client: MakeClient,
) -> None:
    vonage = VonageAccount()
    fake = FakeProvider(SID, TOKEN, faults=Faults(latency_ms=300, max_concurrent=1), seed=7)
    client = await aiohttp_client(fake.make_app())
    twilio = asyncio.create_task(send(client))
    await until(lambda: fake.in_flight == 1)
    vonage_form = {
        "api_key": vonage.api_key,
        "api_secret": vonage.api_secret,
        "from": "AcmeInc",
        "to": "447911123456",
        "text": "a" * 161,
    }
    async with client.post("/sms/json", data=vonage_form) as r:
        body = await r.json()
    assert [m["status"] for m in body["messages"]] == ["0", "0"]
    assert (await twilio)[0] == 201
    assert fake.in_flight_peak == 2
    assert fake.concurrency_429 == 0
    assert fake.segments.total == 3  # 1 Twilio + 2 Vonage parts


async def test_control_sets_the_cap_and_reset_clears_the_counts(client_and_fake: Any) -> None:
    fake, client = client_and_fake
    async with client.post("/_control", json={"max_concurrent": 1, "latency_ms": 300}) as r:
        assert (await r.json())["max_concurrent"] == 1
    held = asyncio.create_task(send(client))
    await until(lambda: fake.in_flight == 1)
    assert (await send(client))[0] == 429
    assert (await held)[0] == 201
    async with client.post("/_reset") as r:
        assert r.status == 204
    assert (fake.in_flight_peak, fake.concurrency_429) == (0, 0)
    async with client.post("/_control", json={"max_concurrent": None, "latency_ms": 0}) as r:
        assert (await r.json())["max_concurrent"] is None


@pytest.fixture
async def client_and_fake(aiohttp_client: MakeClient) -> tuple[FakeProvider, Client]:
    return await start(aiohttp_client, Faults())


# -- segments per sliding second ----------------------------------------------------


async def test_accepted_messages_count_their_segments_per_sliding_second(
    aiohttp_client: MakeClient,
) -> None:
    fake, client = await start(aiohttp_client, Faults(limit_segments=3))
    for body in ("a" * 160, "a" * 161, THREE_SEGMENTS):
        assert (await send(client, form(body)))[0] == 201
    assert (await send(client, form(THREE_SEGMENTS, to="bad")))[0] == 400  # not counted

    assert [a.segments for a in fake.accepted] == [1, 2, 3]
    assert [r.segments for r in fake.records] == [1, 2, 3, 0]
    async with client.get("/_stats", params={"summary": "1"}) as r:
        stats = await r.json()
    assert "arrivals" not in stats
    assert "accepted" not in stats
    assert stats["segments_total"] == 6
    assert stats["max_segments_in_sliding_second"] == 6  # all within one second
    assert stats["limit_segments"] == 3
    # Windows closed by each arrival hold 1, 3 and 6 segments: only the last is over 3.
    assert stats["arrivals_over_segment_limit"] == 1
    assert (stats["in_flight_peak"], stats["concurrency_429"]) == (1, 0)

    # The same figures from the records, for any limit, afterwards.
    times = [a.at for a in fake.accepted]
    weights = [a.segments for a in fake.accepted]
    assert segments_in_sliding_window(times, weights, limit=3) == (6, 1)
    assert segments_in_sliding_window(times, weights, limit=0) == (6, 3)


async def test_segments_in_different_seconds_are_counted_apart(aiohttp_client: MakeClient) -> None:
    fake, client = await start(aiohttp_client, Faults(limit_segments=3))
    fake.segments = SlidingSegments(window_s=0.2)  # a short window keeps the test quick
    await send(client, form(THREE_SEGMENTS))
    await asyncio.sleep(0.25)
    await send(client, form(THREE_SEGMENTS))
    assert (fake.segments.total, fake.segments.max, fake.segments.over) == (6, 3, 0)


@pytest.mark.parametrize(
    ("times", "weights", "limit", "expected"),
    [
        ([], [], 1, (0, 0)),
        ([0.0], [3], 2, (3, 1)),
        ([0.0, 1.0], [2, 2], 3, (2, 0)),  # exactly a window apart: two windows
        ([0.0, 0.999, 1.0], [1, 2, 3], 4, (5, 1)),
        ([0.0, 0.5, 1.0, 1.5], [1, 1, 1, 1], 1, (2, 3)),
        ([3.0, 0.2, 0.1], [1, 5, 1], 5, (6, 1)),  # unsorted input
        ([0.0, 0.0, 0.0], [2, 2, 2], 5, (6, 1)),
        ([0.0, 0.1], [1, 1], None, (2, 0)),
    ],
)
def test_segments_in_sliding_window(
    times: list[float], weights: list[int], limit: int | None, expected: tuple[int, int]
) -> None:
    assert segments_in_sliding_window(times, weights, limit=limit) == expected


def _brute_force(times: list[float], weights: list[int], limit: int) -> tuple[int, int]:
    pairs = sorted(zip(times, weights, strict=True), key=lambda pair: pair[0])
    sums = [
        sum(w for j, (t, w) in enumerate(pairs) if j <= k and end - t < 1.0)
        for k, (end, _) in enumerate(pairs)
    ]
    return max(sums, default=0), sum(total > limit for total in sums)


@hypothesis.settings(max_examples=300, deadline=None, derandomize=True, database=None)
@hypothesis.given(
    st.lists(
        st.tuples(
            st.floats(0.0, 5.0, allow_nan=False).map(lambda t: round(t, 3)),
            st.integers(1, 11),
        ),
        max_size=60,
    ),
    st.integers(1, 40),
)
def test_sliding_segments_match_a_brute_force_count(
    arrivals: list[tuple[float, int]], limit: int
) -> None:
    times = [t for t, _ in arrivals]
    weights = [w for _, w in arrivals]
    assert segments_in_sliding_window(times, weights, limit=limit) == _brute_force(
        times, weights, limit
    )
    assert segments_in_sliding_window(times, [1] * len(times))[0] == max_in_sliding_window(times)
