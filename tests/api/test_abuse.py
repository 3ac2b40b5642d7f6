"""Abuse protection through the real app: geo permissions, the per-number daily cap, the
SMS-pumping guard, the per-number failed-check cap (also across replicas on Redis), and API
key rotation."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from smsgw.app import create_app
from tests.helpers import app_client, code_in, make_settings, read_sms, wait_sms

PHONE = "+14155550100"
FR_PHONE = "+33612345678"
SHOP_KEY = "shop-key-0123456789abcdef"
OLD_KEY = "old-shop-key-0123456789ab"
OPEN_OTP = {"max_sends": 100, "resend_cooldown_s": 0}

Client = TestClient[Any, Any]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def problem_type(response: Any) -> str:
    payload = await response.json()
    return str(payload["type"]).rsplit(":", 1)[-1]


async def test_a_client_sends_only_to_its_countries(aiohttp_client: Any, sms_path: Path) -> None:
    clients = [
        {"name": "shop", "key": SHOP_KEY, "countries": ["US"]},
        {"name": "global", "key": "global-key-0123456789ab"},
    ]
    client = await app_client(
        aiohttp_client, sms_path, clients=clients, abuse={"countries": ["US", "FR"]}
    )
    refused = await client.post("/v1/otp", json={"phone": FR_PHONE}, headers=auth(SHOP_KEY))
    assert refused.status == 403
    assert await problem_type(refused) == "country-not-allowed"
    batch = {"messages": [{"to": PHONE, "body": "a"}, {"to": FR_PHONE, "body": "b"}]}
    refused = await client.post("/v1/messages/batch", json=batch, headers=auth(SHOP_KEY))
    assert refused.status == 403
    assert (await refused.json())["errors"][0]["pointer"] == "#/messages/1/to"
    # Without a list of its own, a client gets the default list.
    other = await client.post(
        "/v1/messages",
        json={"to": "+4915123456789", "body": "x"},
        headers=auth("global-key-0123456789ab"),
    )
    assert other.status == 403
    allowed = await client.post(
        "/v1/messages", json={"to": FR_PHONE, "body": "x"}, headers=auth("global-key-0123456789ab")
    )
    assert allowed.status == 202
    await asyncio.sleep(0.1)
    assert [sms["to"] for sms in read_sms(sms_path)] == [FR_PHONE]  # nothing else was queued


async def test_one_number_gets_at_most_its_daily_cap(aiohttp_client: Any, sms_path: Path) -> None:
    client = await app_client(
        aiohttp_client, sms_path, otp=OPEN_OTP, abuse={"daily_sends_per_number": 3}
    )
    answers = [(await client.post("/v1/otp", json={"phone": PHONE})) for _ in range(4)]
    assert [a.status for a in answers] == [202, 202, 202, 429]
    assert await problem_type(answers[3]) == "daily-cap"
    assert 86_000 < int(answers[3].headers["Retry-After"]) <= 86_400


async def test_a_pumping_burst_to_one_range_is_refused_and_counted(
    aiohttp_client: Any, sms_path: Path
) -> None:
    client = await app_client(aiohttp_client, sms_path, otp=OPEN_OTP, abuse={"prefix_floor": 5})
    answers = []
    for n in range(8):
        response = await client.post("/v1/otp", json={"phone": f"+4479460{12000 + n:05d}"})
        answers.append(response.status)
        if response.status == 429:
            assert await problem_type(response) == "suspected-pumping"
            assert int(response.headers["Retry-After"]) >= 1
    assert answers == [202] * 5 + [429] * 3
    assert len(read_sms(sms_path)) <= 5
    text = await (await client.get("/metrics")).text()
    assert 'smsgw_pumping_refusals_total{country="GB",scope="prefix"} 3.0' in text
    assert 'smsgw_otp_starts_total{result="suspected-pumping"} 3.0' in text


async def test_new_verifications_do_not_buy_new_guesses(
    aiohttp_client: Any, sms_path: Path
) -> None:
    client = await app_client(
        aiohttp_client,
        sms_path,
        otp=OPEN_OTP,
        abuse={"failed_checks_per_number": 3, "failed_check_window_s": 600},
    )
    first = await (await client.post("/v1/otp", json={"phone": PHONE})).json()
    for _ in range(3):
        wrong = await client.post("/v1/otp/verify", json={"id": first["id"], "code": "000000"})
        assert (await wrong.json())["valid"] is False
    second = await (await client.post("/v1/otp", json={"phone": PHONE})).json()
    sms = await wait_sms(sms_path, 2)
    right_code = code_in(sms[-1]["body"])
    locked = await client.post("/v1/otp/verify", json={"id": second["id"], "code": right_code})
    assert locked.status == 429
    assert await problem_type(locked) == "too-many-failed-checks"
    assert 590 <= int(locked.headers["Retry-After"]) <= 600  # bounded by the window


@pytest.mark.timeout(60)
async def test_the_failed_check_cap_holds_across_replicas(
    aiohttp_client: Any, sms_path: Path, redis_url: str
) -> None:
    # Six client apps each start a verification for one number: six live verifications,
    # 30 guesses by their own caps, but the number allows 10 wrong codes in all.
    keys = [f"app-{n}-key-0123456789abcdef" for n in range(6)]
    settings = make_settings(
        sms_path,
        redis={"url": redis_url},
        otp=OPEN_OTP,
        abuse={"failed_checks_per_number": 10},
        clients=[{"name": f"app{n}", "key": key} for n, key in enumerate(keys)],
    )
    replicas = [await aiohttp_client(create_app(settings)) for _ in range(3)]
    ids = []
    for n, key in enumerate(keys):
        started = await replicas[n % 3].post("/v1/otp", json={"phone": PHONE}, headers=auth(key))
        assert started.status == 202
        ids.append((await started.json())["id"])
    # 60 wrong guesses at once, spread over the six verifications and three replicas.
    guesses = [
        replicas[n % 3].post(
            "/v1/otp/verify", json={"id": ids[n % 6], "code": "000000"}, headers=auth(keys[n % 6])
        )
        for n in range(60)
    ]
    answers = await asyncio.gather(*guesses)
    outcomes: Counter[str] = Counter()
    for answer in answers:
        if answer.status == 200:
            outcomes["compared"] += 1
        else:
            outcomes[await problem_type(answer)] += 1
    assert outcomes["compared"] == 10
    assert set(outcomes) == {"compared", "max-attempts-reached", "too-many-failed-checks"}


async def test_a_rotated_key_and_its_predecessor_both_work(
    aiohttp_client: Any, sms_path: Path
) -> None:
    clients = [{"name": "shop", "key": SHOP_KEY, "previous_key": OLD_KEY}]
    client = await app_client(aiohttp_client, sms_path, clients=clients)
    for key in (SHOP_KEY, OLD_KEY):
        response = await client.post(
            "/v1/messages", json={"to": PHONE, "body": "x"}, headers=auth(key)
        )
        assert response.status == 202
    wrong = await client.post(
        "/v1/messages", json={"to": PHONE, "body": "x"}, headers=auth("x" * 24)
    )
    assert wrong.status == 401


async def test_otp_secret_rotation_keeps_codes_in_flight_valid(
    aiohttp_client: Any, sms_path: Path, redis_url: str
) -> None:
    old, new = "old-otp-secret-0123456789", "new-otp-secret-0123456789"
    redis = {"url": redis_url}
    before = await aiohttp_client(
        create_app(make_settings(sms_path, redis=redis, otp={"secret": old}))
    )
    started = await (await before.post("/v1/otp", json={"phone": PHONE})).json()
    (sms,) = await wait_sms(sms_path, 1)
    code = code_in(sms["body"])
    # The replicas are restarted with the new secret; one of them forgot the old one.
    forgot = await aiohttp_client(
        create_app(make_settings(sms_path, redis=redis, otp={"secret": new}))
    )
    refused = await forgot.post("/v1/otp/verify", json={"id": started["id"], "code": code})
    assert (await refused.json())["valid"] is False
    rotated = await aiohttp_client(
        create_app(
            make_settings(sms_path, redis=redis, otp={"secret": new, "previous_secret": old})
        )
    )
    accepted = await rotated.post("/v1/otp/verify", json={"id": started["id"], "code": code})
    assert (await accepted.json())["status"] == "approved"


# -- what the pumping guard counts, and who it spares (issue 12, item 1) -----------------


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings sections for the embedded state, or for all of it in a private Redis."""
    if request.param == "memory":
        return {}
    return {"redis": {"url": request.getfixturevalue("redis_url")}}


def gb_number(n: int) -> str:
    return f"+4479460{12000 + n:05d}"  # one 7-digit prefix: 4479460


async def test_cooldown_refused_starts_do_not_lock_the_range(
    aiohttp_client: Any, sms_path: Path, backend: dict[str, Any]
) -> None:
    # One caller, one number, 31 starts in a few seconds: one code, 30 cooldown refusals.
    client = await app_client(aiohttp_client, sms_path, **backend)
    answers = [await client.post("/v1/otp", json={"phone": gb_number(0)}) for _ in range(31)]
    assert [a.status for a in answers] == [202] + [429] * 30
    assert {await problem_type(a) for a in answers[1:]} == {"resend-cooldown"}
    # Nothing was pumped: the other numbers of the range still get their codes.
    for n in (1, 2):
        other = await client.post("/v1/otp", json={"phone": gb_number(n)})
        assert other.status == 202, await other.text()
    assert len(await wait_sms(sms_path, 3)) == 3


async def test_a_verified_number_still_gets_a_code_while_its_range_is_refused(
    aiohttp_client: Any, sms_path: Path, backend: dict[str, Any]
) -> None:
    client = await app_client(
        aiohttp_client, sms_path, otp=OPEN_OTP, abuse={"prefix_floor": 5}, **backend
    )
    regular = gb_number(0)
    started = await (await client.post("/v1/otp", json={"phone": regular})).json()
    (sms,) = await wait_sms(sms_path, 1)
    approved = await client.post(
        "/v1/otp/verify", json={"id": started["id"], "code": code_in(sms["body"])}
    )
    assert (await approved.json())["status"] == "approved"
    # A burst to the range: four more codes reach the floor, then the range is refused ...
    statuses = [
        (await client.post("/v1/otp", json={"phone": gb_number(n)})).status for n in range(1, 8)
    ]
    assert statuses == [202] * 4 + [429] * 3
    # ... but not for the number that proved to be someone's phone; new numbers stay refused.
    again = await client.post("/v1/otp", json={"phone": regular})
    assert again.status == 202, await again.text()
    refused = await client.post("/v1/otp", json={"phone": gb_number(9)})
    assert await problem_type(refused) == "suspected-pumping"
