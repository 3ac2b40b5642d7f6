"""The fake Twilio server: auth, validation, faults, control endpoints, records."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from testkit.fake_provider import HUNG, FakeTwilio, Faults, max_in_sliding_window
from testkit.processes import start_process, stop_process

pytestmark = pytest.mark.timeout(30)

SID = "AC" + "1234abcd" * 4
TOKEN = "secret-token"
TO = "+14155550100"
FROM = "+15005550006"

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


def basic(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


def message(**overrides: str | None) -> dict[str, str]:
    """A valid form; an override of None drops the field."""
    form: dict[str, str | None] = {"To": TO, "From": FROM, "Body": "Your code is 123456"}
    form.update(overrides)
    return {key: value for key, value in form.items() if value is not None}


@pytest.fixture
def fake() -> FakeTwilio:
    return FakeTwilio(SID, TOKEN, seed=7)


@pytest.fixture
async def client(fake: FakeTwilio, aiohttp_client: MakeClient) -> Client:
    return await aiohttp_client(fake.make_app())


async def send(
    client: Client,
    form: Mapping[str, str],
    *,
    authorization: str | None = None,
    account_sid: str = SID,
    timeout: float | None = None,
) -> tuple[int, Any, Mapping[str, str]]:
    headers = {"Authorization": authorization or basic(SID, TOKEN)}
    path = f"/2010-04-01/Accounts/{account_sid}/Messages.json"
    client_timeout = aiohttp.ClientTimeout(total=timeout) if timeout else None
    async with client.post(path, data=dict(form), headers=headers, timeout=client_timeout) as r:
        return r.status, await r.json(), r.headers


# -- authentication ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "account_sid"),
    [
        (basic(SID, "wrong"), SID),
        (basic("AC" + "0" * 32, TOKEN), SID),
        ("Bearer " + TOKEN, SID),
        ("Basic not-base64!", SID),
        (basic(SID, TOKEN), "AC" + "f" * 32),  # right credentials, someone else's account
    ],
)
async def test_bad_credentials_are_401_20003(
    client: Client, fake: FakeTwilio, authorization: str, account_sid: str
) -> None:
    status, body, headers = await send(
        client, message(), authorization=authorization, account_sid=account_sid
    )
    assert status == 401
    assert body == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }
    assert headers["WWW-Authenticate"].startswith("Basic")
    assert fake.by_status == {401: 1}
    assert fake.accepted == []


async def test_missing_authorization_is_401(client: Client) -> None:
    async with client.post(f"/2010-04-01/Accounts/{SID}/Messages.json", data=message()) as r:
        assert r.status == 401
        assert (await r.json())["code"] == 20003


async def test_other_spellings_of_basic_auth_are_accepted(client: Client) -> None:
    encoded = base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    status, _, _ = await send(client, message(), authorization=f"basic  {encoded}")
    assert status == 201


# -- validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"To": None}, 21604),
        ({"To": ""}, 21604),
        ({"Body": None}, 21602),
        ({"From": None}, 21603),
        ({"MessagingServiceSid": "MG" + "0" * 32}, 21603),  # both senders
        ({"Body": "x" * 1601}, 21617),
        ({"To": "14155550100"}, 21211),
        ({"To": "+04155550100"}, 21211),
        ({"To": "+12345"}, 21211),
        ({"To": "+1415555010012345"}, 21211),
    ],
)
async def test_invalid_messages_are_400_with_twilio_codes(
    client: Client, fake: FakeTwilio, overrides: dict[str, str | None], code: int
) -> None:
    status, body, _ = await send(client, message(**overrides))
    assert status == 400
    assert body["code"] == code
    assert body["status"] == 400
    assert body["more_info"].endswith(f"/{code}")
    assert fake.accepted == []
    assert fake.by_status == {400: 1}


# -- success ------------------------------------------------------------------------


async def test_valid_message_is_201_and_recorded(client: Client, fake: FakeTwilio) -> None:
    before = time.monotonic()
    status, body, _ = await send(client, message())
    after = time.monotonic()

    assert status == 201
    assert re.fullmatch(r"SM[0-9a-f]{32}", body["sid"])
    assert body["status"] == "queued"
    assert (body["to"], body["from"], body["body"]) == (TO, FROM, "Your code is 123456")
    assert body["account_sid"] == SID
    assert body["error_code"] is None
    assert body["num_segments"] == "1"
    assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000", body["date_created"])
    assert body["uri"] == f"/2010-04-01/Accounts/{SID}/Messages/{body['sid']}.json"

    [accepted] = fake.accepted
    assert (accepted.to, accepted.body, accepted.sid) == (TO, "Your code is 123456", body["sid"])
    assert before <= accepted.at <= after
    assert fake.arrivals == [accepted.at]
    assert fake.records[0].status == 201


async def test_messaging_service_message_is_accepted(client: Client) -> None:
    form = message(From=None, MessagingServiceSid="MG" + "0" * 32)
    status, body, _ = await send(client, form)
    assert status == 201
    assert body["status"] == "accepted"
    assert body["from"] is None


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("a" * 160, "1"),
        ("a" * 161, "2"),
        ("a" * 306, "2"),
        ("a" * 307, "3"),
        ("[" * 80, "1"),
        ("é" * 160, "1"),
        ("✓" * 71, "2"),
        ("✓" * 134, "2"),
        ("😀" * 35, "1"),
        ("😀" * 36, "2"),
        # An escape pair (or a surrogate pair) never straddles two parts: here it opens
        # part 2, which then overflows into a third.
        ("a" * 152 + "€" + "a" * 152, "3"),
        ("✓" * 66 + "😀" + "✓" * 66, "3"),
        ("a" * 200 + "`", "3"),  # backtick: ASCII, not GSM-7
    ],
)
async def test_segments_follow_gsm7_and_ucs2(client: Client, text: str, segments: str) -> None:
    _, body, _ = await send(client, message(Body=text))
    assert body["num_segments"] == segments


# -- injected faults ----------------------------------------------------------------


async def test_fail_5xx_answers_500_20500(aiohttp_client: MakeClient) -> None:
    fake = FakeTwilio(SID, TOKEN, faults=Faults(fail_5xx=1.0))
    client = await aiohttp_client(fake.make_app())
    status, body, _ = await send(client, message())
    assert (status, body["code"]) == (500, 20500)
    assert fake.accepted == []
    assert fake.by_status == {500: 1}


async def test_throttle_429_carries_retry_after(aiohttp_client: MakeClient) -> None:
    fake = FakeTwilio(SID, TOKEN, faults=Faults(throttle_429=1.0, retry_after_s=3))
    client = await aiohttp_client(fake.make_app())
    status, body, headers = await send(client, message())
    assert (status, body["code"], body["message"]) == (429, 20429, "Too Many Requests")
    assert headers["Retry-After"] == "3"
    assert fake.accepted == []


async def test_reject_numbers_is_permanent_21211(aiohttp_client: MakeClient) -> None:
    rejected = "+14155550199"
    fake = FakeTwilio(SID, TOKEN, faults=Faults(reject_numbers=frozenset({rejected})))
    client = await aiohttp_client(fake.make_app())
    status, body, _ = await send(client, message(To=rejected))
    assert (status, body["code"]) == (400, 21211)
    assert rejected in body["message"]
    status, _, _ = await send(client, message())
    assert status == 201
    assert [a.to for a in fake.accepted] == [TO]


async def test_hang_never_answers(aiohttp_client: MakeClient) -> None:
    fake = FakeTwilio(SID, TOKEN, faults=Faults(hang=1.0))
    client = await aiohttp_client(fake.make_app())
    with pytest.raises(asyncio.TimeoutError):  # aiohttp's timeouts subclass it
        await send(client, message(), timeout=0.2)
    assert fake.by_status == {HUNG: 1}
    assert fake.accepted == []


async def test_latency_delays_the_answer(aiohttp_client: MakeClient) -> None:
    fake = FakeTwilio(SID, TOKEN, faults=Faults(latency_ms=150))
    client = await aiohttp_client(fake.make_app())
    started = time.monotonic()
    status, _, _ = await send(client, message())
    elapsed = time.monotonic() - started
    assert status == 201
    assert 0.15 <= elapsed < 0.6
    # Arrival is stamped before the delay: it is when the provider saw the request.
    assert fake.arrivals[0] - started < 0.1


async def test_fault_draws_are_reproducible_with_a_seed(aiohttp_client: MakeClient) -> None:
    async def statuses(seed: int) -> list[int]:
        fake = FakeTwilio(SID, TOKEN, faults=Faults(fail_5xx=0.3, throttle_429=0.3), seed=seed)
        client = await aiohttp_client(fake.make_app())
        for _ in range(100):
            await send(client, message())
        return [record.status for record in fake.records]

    first = await statuses(1)
    assert first == await statuses(1)
    assert first != await statuses(2)
    # Mutually exclusive outcomes from one draw, each near its probability.
    assert 15 <= first.count(429) <= 45
    assert 15 <= first.count(500) <= 45
    assert first.count(201) + first.count(429) + first.count(500) == 100


@pytest.mark.parametrize(
    "changes",
    [
        {"fail_5xx": 1.5},
        {"latency_ms": -1},
        {"fail_5xx": 0.6, "throttle_429": 0.6},
        {"retry_after_s": 0.5},
        {"reject_numbers": "+14155550100"},
        {"hang": True},
        {"nonsense": 1},
        {"seed": "x"},
        {"jitter_ms": -5},
        {"jitter_dist": "poisson"},
        {"jitter_dist": 1},
        {"max_concurrent": 0},
        {"max_concurrent": 2.5},
        {"max_concurrent": True},
        {"limit_segments": -1},
        {"limit_segments": "1000"},
    ],
)
def test_invalid_fault_settings_are_refused(changes: dict[str, object]) -> None:
    fake = FakeTwilio(SID, TOKEN)
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        fake.configure(changes)
    assert fake.faults == Faults()


# -- control, stats and reset endpoints ---------------------------------------------


async def test_control_changes_behaviour_at_runtime(client: Client) -> None:
    async with client.post("/_control", json={"fail_5xx": 1.0, "seed": 3}) as r:
        assert r.status == 200
        assert (await r.json())["fail_5xx"] == 1.0
    assert (await send(client, message()))[0] == 500

    async with client.post(
        "/_control", json={"fail_5xx": 0, "reject_numbers": [TO], "retry_after_s": 2}
    ) as r:
        assert r.status == 200
    assert (await send(client, message()))[0] == 400

    async with client.get("/_control") as r:
        settings = await r.json()
    assert settings["reject_numbers"] == [TO]
    assert settings["retry_after_s"] == 2


@pytest.mark.parametrize("payload", [b"[1]", b"not json", b'{"throttle_429": 2}'])
async def test_control_rejects_bad_payloads(client: Client, payload: bytes) -> None:
    async with client.post("/_control", data=payload) as r:
        assert r.status == 400
        assert "error" in await r.json()


async def test_stats_and_reset(client: Client, fake: FakeTwilio) -> None:
    await send(client, message())
    await send(client, message(To="bad"))
    await send(client, message(), authorization=basic(SID, "nope"))

    async with client.get("/_stats") as r:
        stats = await r.json()
    assert stats["count"] == 3
    assert stats["by_status"] == {"201": 1, "400": 1, "401": 1}
    assert stats["arrivals"] == sorted(stats["arrivals"])
    assert len(stats["arrivals"]) == 3
    [accepted] = stats["accepted"]
    assert set(accepted) == {"to", "body", "sid", "at", "segments"}
    assert accepted["sid"] == fake.accepted[0].sid
    assert accepted["segments"] == 1

    records = fake.accepted
    async with client.post("/_reset") as r:
        assert r.status == 204
    assert records == []  # cleared in place
    async with client.get("/_stats") as r:
        assert await r.json() == {
            "count": 0,
            "by_status": {},
            "in_flight": 0,
            "in_flight_peak": 0,
            "concurrency_429": 0,
            "segments_total": 0,
            "max_segments_in_sliding_second": 0,
            "limit_segments": None,
            "arrivals_over_segment_limit": None,
            "arrivals": [],
            "accepted": [],
        }


# -- max_in_sliding_window ----------------------------------------------------------


@pytest.mark.parametrize(
    ("times", "window", "expected"),
    [
        ([], 1.0, 0),
        ([5.0], 1.0, 1),
        ([0.0, 1.0], 1.0, 1),  # exactly one window apart: [0, 1) and [1, 2)
        ([0.0, 0.999, 1.0], 1.0, 2),
        ([0.0, 0.5, 1.0, 1.5, 2.0], 1.0, 2),
        ([0.0, 0.1, 0.2, 0.3, 5.0, 5.05], 1.0, 4),
        ([3.0, 0.2, 0.1, 3.5, 0.0], 1.0, 3),  # unsorted input
        ([0.0, 0.0, 0.0], 1.0, 3),
        ([0.0, 0.25, 0.5, 0.75], 0.5, 2),
    ],
)
def test_max_in_sliding_window(times: list[float], window: float, expected: int) -> None:
    assert max_in_sliding_window(times, window) == expected


def test_max_in_sliding_window_counts_a_steady_rate() -> None:
    # 128/s for 3 s: any one-second window holds exactly 128. (A power of two keeps
    # the times exact; with i / 100, 1.01 - 0.01 < 1.0 and a window would hold 101.)
    times = [i / 128 for i in range(3 * 128)]
    assert max_in_sliding_window(times) == 128


def test_max_in_sliding_window_needs_a_positive_window() -> None:
    with pytest.raises(ValueError, match="window_s"):
        max_in_sliding_window([1.0], 0)


# -- script mode --------------------------------------------------------------------


async def test_script_mode_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    argv = ["python", "-m", "testkit.fake_provider", "--account-sid", SID, "--auth-token", TOKEN]
    argv += ["--latency-ms", "2", "--jitter-ms", "1", "--jitter-dist", "normal"]
    argv += ["--max-concurrent", "7", "--limit-segments", "1000"]
    proc, port = await asyncio.to_thread(start_process, argv, tmp_path / "fake.port")
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/2010-04-01/Accounts/{SID}/Messages.json"
            headers = {"Authorization": basic(SID, TOKEN)}
            async with session.post(url, data=message(), headers=headers) as r:
                assert r.status == 201
                assert r.headers["Twilio-Concurrent-Requests"] == "1"
            async with session.get(f"http://127.0.0.1:{port}/_stats") as r:
                stats = await r.json()
            assert stats["by_status"] == {"201": 1}
            assert (stats["segments_total"], stats["limit_segments"]) == (1, 1000)
            async with session.get(f"http://127.0.0.1:{port}/_control") as r:
                control = await r.json()
            assert (control["latency_ms"], control["jitter_ms"]) == (2, 1)
            assert (control["jitter_dist"], control["max_concurrent"]) == ("normal", 7)
    finally:
        code = await asyncio.to_thread(stop_process, proc)
    assert code == 0
    assert f"listening on http://127.0.0.1:{port}" in (tmp_path / "fake.port.log").read_text()
