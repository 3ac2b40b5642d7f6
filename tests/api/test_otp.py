"""The OTP flow through the HTTP API, with the console provider standing in for the phone."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

import smsgw.otp.service as otp_service
from testkit.fake_provider import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeTwilio, Faults
from tests.helpers import app_client, code_in, read_sms, wait_sms

PHONE = "+14155550100"
OTHER_PHONE = "+14155550101"
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
PROBLEM = "application/problem+json"

Client = TestClient[Any, Any]


async def start(client: Client, phone: str = PHONE, **fields: Any) -> dict[str, Any]:
    response = await client.post("/v1/otp", json={"phone": phone, **fields})
    payload: dict[str, Any] = await response.json(content_type=None)
    assert response.status == 202, payload
    return payload


async def verify(client: Client, code: str, **target: str) -> tuple[int, dict[str, Any]]:
    response = await client.post("/v1/otp/verify", json={**target, "code": code})
    payload: dict[str, Any] = await response.json(content_type=None)
    return response.status, payload


async def sms_for(path: Path, message_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        for sms in read_sms(path):
            if sms["message_id"] == message_id:
                return sms
        await asyncio.sleep(0.01)
    raise AssertionError(f"no SMS with message_id {message_id} in {read_sms(path)}")


def wrong(code: str) -> str:
    """A code of the same length that is certainly not `code`."""
    return "".join(str((int(d) + 1) % 10) for d in code)


def problem_slug(payload: dict[str, Any]) -> str:
    problem_type = payload["type"]
    assert isinstance(problem_type, str)
    return problem_type.rsplit(":", 1)[-1]


def parse_time(value: str) -> float:
    assert RFC3339_UTC.match(value), value
    return datetime.fromisoformat(value).timestamp()


# -- the happy path ------------------------------------------------------------------------


async def test_start_answers_202_with_the_contract_fields(client: Client, sms_path: Path) -> None:
    before = time.time()
    response = await client.post("/v1/otp", json={"phone": "+1 (415) 555-0100"})
    assert response.status == 202
    assert response.content_type == "application/json"
    payload = await response.json()
    assert set(payload) == {"id", "status", "phone", "expires_at", "resend_after", "message_id"}
    assert payload["status"] == "pending"
    assert payload["phone"] == PHONE  # normalised to E.164
    assert isinstance(payload["id"], str)
    assert payload["id"]
    assert isinstance(payload["message_id"], str)
    assert payload["message_id"]
    expires_at = parse_time(payload["expires_at"])
    resend_after = parse_time(payload["resend_after"])
    assert before + 600 - 2 <= expires_at <= time.time() + 600 + 1
    assert before + 30 - 2 <= resend_after <= time.time() + 30 + 1

    sms = await sms_for(sms_path, payload["message_id"])
    assert sms["to"] == PHONE
    code = code_in(sms["body"])
    assert len(code) == 6
    assert sms["body"] == f"Your smsgw code is {code}. It expires in 10 minutes."


async def test_verify_by_id_approves(client: Client, sms_path: Path) -> None:
    started = await start(client)
    code = code_in((await sms_for(sms_path, started["message_id"]))["body"])
    status, payload = await verify(client, code, id=started["id"])
    assert status == 200
    assert payload == {"id": started["id"], "status": "approved", "valid": True, "attempts_left": 4}


@pytest.mark.parametrize("phone_form", [PHONE, "+1 415-555-0100", "+1 (415) 555 0100"])
async def test_verify_by_phone_approves(client: Client, sms_path: Path, phone_form: str) -> None:
    started = await start(client)
    code = code_in((await sms_for(sms_path, started["message_id"]))["body"])
    status, payload = await verify(client, code, phone=phone_form)
    assert status == 200
    assert payload["id"] == started["id"]
    assert payload["status"] == "approved"
    assert payload["valid"] is True


async def test_ttl_from_the_request_sets_expiry_and_the_minutes(
    client: Client, sms_path: Path
) -> None:
    before = time.time()
    started = await start(client, ttl_s=90)
    expires_at = parse_time(started["expires_at"])
    assert before + 90 - 2 <= expires_at <= time.time() + 90 + 1
    body = (await sms_for(sms_path, started["message_id"]))["body"]
    assert body.endswith("It expires in 2 minutes.")


# -- wrong codes and the attempt counter ---------------------------------------------------


async def test_wrong_codes_count_down_then_429(client: Client, sms_path: Path) -> None:
    started = await start(client)
    code = code_in((await sms_for(sms_path, started["message_id"]))["body"])
    for left in (4, 3, 2, 1, 0):
        status, payload = await verify(client, wrong(code), id=started["id"])
        assert status == 200, payload
        assert payload == {
            "id": started["id"],
            "status": "pending",
            "valid": False,
            "attempts_left": left,
        }
    for target in ({"id": started["id"]}, {"phone": PHONE}):
        for attempt in (wrong(code), code):  # the right code is dead too
            response = await client.post("/v1/otp/verify", json={**target, "code": attempt})
            assert response.status == 429
            assert response.content_type == PROBLEM
            payload = await response.json(content_type=None)
            assert payload["type"].endswith("max-attempts-reached")
            assert payload["status"] == 429
            assert payload["title"]


async def test_50_concurrent_wrong_checks_count_exactly_5(client: Client, sms_path: Path) -> None:
    started = await start(client)
    code = code_in((await sms_for(sms_path, started["message_id"]))["body"])
    bad = wrong(code)
    results = await asyncio.gather(*(verify(client, bad, id=started["id"]) for _ in range(50)))
    statuses = Counter(status for status, _ in results)
    assert statuses == {200: 5, 429: 45}
    checked = [payload for status, payload in results if status == 200]
    assert all(p["valid"] is False and p["status"] == "pending" for p in checked)
    assert sorted(p["attempts_left"] for p in checked) == [0, 1, 2, 3, 4]
    refused = [payload for status, payload in results if status == 429]
    assert all(p["type"].endswith("max-attempts-reached") for p in refused)
    status, payload = await verify(client, code, id=started["id"])
    assert status == 429, payload


async def test_concurrent_right_codes_approve_once(client: Client, sms_path: Path) -> None:
    started = await start(client)
    code = code_in((await sms_for(sms_path, started["message_id"]))["body"])
    results = await asyncio.gather(*(verify(client, code, id=started["id"]) for _ in range(10)))
    statuses = Counter(status for status, _ in results)
    assert statuses == {200: 1, 404: 9}
    approved = next(payload for status, payload in results if status == 200)
    assert approved["status"] == "approved"
    assert approved["valid"] is True


# -- 404: unknown, approved, expired -------------------------------------------------------


async def test_already_approved_is_404_by_id_and_a_wrong_code_by_phone(
    client: Client, sms_path: Path
) -> None:
    started = await start(client)
    code = code_in((await sms_for(sms_path, started["message_id"]))["body"])
    assert (await verify(client, code, id=started["id"]))[0] == 200
    for attempt in (code, wrong(code)):
        response = await client.post("/v1/otp/verify", json={"id": started["id"], "code": attempt})
        assert response.status == 404
        assert response.content_type == PROBLEM
        payload = await response.json(content_type=None)
        assert payload["status"] == 404
        assert problem_slug(payload) == "verification-not-found"
        # By phone, nothing pending answers like a wrong code (no oracle of pending codes).
        status, payload = await verify(client, attempt, phone=PHONE)
        assert status == 200
        assert (payload["status"], payload["valid"]) == ("pending", False)


@pytest.mark.parametrize(
    "verification_id",
    [
        "",
        "nope",
        "otp_" + "0" * 32,
        "otp_" + "abcdef0123456789" * 2,
        "OTP_" + "ABCDEF0123456789" * 2,
        "x" * 100,
        "x" * 128,
        "../../etc/passwd",
        "otp_\u00e9\u00e8\u4e2d",
        "msg_" + "0" * 32,
    ],
)
async def test_unknown_id_of_any_shape_is_404(
    client: Client, sms_path: Path, verification_id: str
) -> None:
    await start(client)  # a real pending verification exists: it must not be found by accident
    response = await client.post("/v1/otp/verify", json={"id": verification_id, "code": "123456"})
    assert response.status == 404
    assert response.content_type == PROBLEM
    payload = await response.json(content_type=None)
    assert problem_slug(payload) == "verification-not-found"


@pytest.mark.parametrize("length", [129, 1000])
async def test_unknown_long_id_is_404(client: Client, sms_path: Path, length: int) -> None:
    response = await client.post("/v1/otp/verify", json={"id": "x" * length, "code": "123456"})
    assert response.status == 404


async def test_message_id_is_not_a_verification_id(client: Client, sms_path: Path) -> None:
    started = await start(client)
    code = code_in((await sms_for(sms_path, started["message_id"]))["body"])
    status, _ = await verify(client, code, id=started["message_id"])
    assert status == 404


async def test_unknown_phone_answers_like_a_wrong_code(client: Client, sms_path: Path) -> None:
    await start(client)
    status, payload = await verify(client, "123456", phone=OTHER_PHONE)
    assert status == 200
    assert set(payload) == {"id", "status", "valid", "attempts_left"}
    assert (payload["status"], payload["valid"], payload["attempts_left"]) == ("pending", False, 4)


async def test_expired_is_404_clock_moved(
    client: Client, sms_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = await start(client, ttl_s=30)
    code = code_in((await sms_for(sms_path, started["message_id"]))["body"])
    real_time = time.time
    # Only the OTP service's clock jumps: the server and the dispatcher keep the real one.
    monkeypatch.setattr(otp_service, "time", SimpleNamespace(time=lambda: real_time() + 31))
    status, payload = await verify(client, code, id=started["id"])
    assert status == 404, payload
    assert problem_slug(payload) == "verification-not-found"
    status, payload = await verify(client, code, phone=PHONE)  # as if nothing was pending
    assert (status, payload["valid"]) == (200, False), payload


async def test_not_yet_expired_still_works_clock_moved(
    client: Client, sms_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = await start(client, ttl_s=30)
    code = code_in((await sms_for(sms_path, started["message_id"]))["body"])
    real_time = time.time
    monkeypatch.setattr(otp_service, "time", SimpleNamespace(time=lambda: real_time() + 25))
    status, payload = await verify(client, code, id=started["id"])
    assert status == 200
    assert payload["status"] == "approved"


async def test_expired_is_404_real_wait(aiohttp_client: Any, sms_path: Path) -> None:
    client = await app_client(aiohttp_client, sms_path, otp={"ttl_s": 1})
    started = await start(client)
    # expires_at is shown in whole seconds; the verification lives 1 s from its start.
    expires_by = time.time() + 1
    sms = await wait_sms(sms_path, 1)
    assert len(sms) == 1
    code = code_in(sms[0]["body"])
    await asyncio.sleep(max(0.0, expires_by - time.time()) + 0.05)
    status, payload = await verify(client, code, id=started["id"])
    assert status == 404, payload
    assert problem_slug(payload) == "verification-not-found"


# -- send policy: cooldown, per-number cap, replacement ------------------------------------


async def test_resend_cooldown_is_429_with_retry_after(client: Client, sms_path: Path) -> None:
    await start(client)
    response = await client.post("/v1/otp", json={"phone": PHONE})
    assert response.status == 429
    assert response.content_type == PROBLEM
    payload = await response.json(content_type=None)
    assert problem_slug(payload) == "resend-cooldown"
    assert payload["status"] == 429
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 30
    # Another number is not affected.
    await start(client, OTHER_PHONE)
    sms = await wait_sms(sms_path, 2)
    await asyncio.sleep(0.05)
    assert sorted(s["to"] for s in read_sms(sms_path)) == [PHONE, OTHER_PHONE]
    assert len(sms) == 2


async def test_sixth_send_in_the_window_is_429(aiohttp_client: Any, sms_path: Path) -> None:
    client = await app_client(aiohttp_client, sms_path, otp={"resend_cooldown_s": 0})
    first_at = time.time()
    answers = [await start(client) for _ in range(5)]
    # After the fifth send, the next one is only possible when the first leaves the window.
    last_resend = parse_time(answers[-1]["resend_after"])
    assert first_at + 600 - 2 <= last_resend <= time.time() + 600 + 1
    response = await client.post("/v1/otp", json={"phone": PHONE})
    assert response.status == 429
    payload = await response.json(content_type=None)
    assert problem_slug(payload) == "too-many-sends"
    assert 590 <= int(response.headers["Retry-After"]) <= 600
    assert len(await wait_sms(sms_path, 5)) == 5
    await start(client, OTHER_PHONE)
    assert len(await wait_sms(sms_path, 6)) == 6


async def test_a_new_send_replaces_the_previous_code(aiohttp_client: Any, sms_path: Path) -> None:
    client = await app_client(aiohttp_client, sms_path, otp={"resend_cooldown_s": 0})
    first = await start(client, length=10)
    first_code = code_in((await sms_for(sms_path, first["message_id"]))["body"])
    second = await start(client, length=10)
    second_code = code_in((await sms_for(sms_path, second["message_id"]))["body"])
    assert first["id"] != second["id"]
    assert first_code != second_code  # 10 random digits: equal with probability 1e-10

    status, _ = await verify(client, first_code, id=first["id"])
    assert status == 404
    status, payload = await verify(client, first_code, phone=PHONE)
    assert status == 200
    assert payload["id"] not in (first["id"], second["id"])  # by phone: an opaque id
    assert payload["valid"] is False
    status, payload = await verify(client, second_code, id=second["id"])
    assert status == 200
    assert payload["status"] == "approved"


# -- code length and templates -------------------------------------------------------------


@pytest.mark.parametrize("length", [4, 6, 10])
async def test_requested_length_is_honoured(client: Client, sms_path: Path, length: int) -> None:
    started = await start(client, length=length)
    code = code_in((await sms_for(sms_path, started["message_id"]))["body"])
    assert re.fullmatch(rf"\d{{{length}}}", code)
    status, payload = await verify(client, code, id=started["id"])
    assert status == 200
    assert payload["status"] == "approved"


async def test_configured_default_length(aiohttp_client: Any, sms_path: Path) -> None:
    client = await app_client(aiohttp_client, sms_path, otp={"length": 8})
    started = await start(client)
    code = code_in((await sms_for(sms_path, started["message_id"]))["body"])
    assert len(code) == 8


TEMPLATES = {
    "default": "Code {code} for {app}.",
    "shop": "Shop code: {code}",
    "shop:fr": "Votre code {app} est {code}",
    "de": "Ihr Code lautet {code}. Gueltig {minutes} Minuten.",
}


@pytest.mark.parametrize(
    ("app", "locale", "expected"),
    [
        (None, None, "Code {code} for smsgw."),
        ("blog", None, "Code {code} for blog."),
        ("shop", None, "Shop code: {code}"),
        ("shop", "fr", "Votre code shop est {code}"),
        ("shop", "fr-CA", "Votre code shop est {code}"),
        ("shop", "de", "Shop code: {code}"),
        ("blog", "de", "Ihr Code lautet {code}. Gueltig 10 Minuten."),
        ("blog", "de-AT", "Ihr Code lautet {code}. Gueltig 10 Minuten."),
        (None, "en", "Code {code} for smsgw."),
    ],
)
async def test_template_per_app_and_locale(
    aiohttp_client: Any, sms_path: Path, app: str | None, locale: str | None, expected: str
) -> None:
    client = await app_client(aiohttp_client, sms_path, otp={"templates": TEMPLATES})
    fields = {k: v for k, v in (("app", app), ("locale", locale)) if v is not None}
    started = await start(client, **fields)
    body = (await sms_for(sms_path, started["message_id"]))["body"]
    match = re.search(r"(?<!\d)\d{6}(?!\d)", body)
    assert match, body
    code = match.group(0)
    assert body == expected.format(code=code)
    status, payload = await verify(client, code, id=started["id"])
    assert status == 200
    assert payload["status"] == "approved"


async def test_app_name_setting_in_the_default_template(
    aiohttp_client: Any, sms_path: Path
) -> None:
    client = await app_client(aiohttp_client, sms_path, otp={"app_name": "Acme"})
    started = await start(client)
    body = (await sms_for(sms_path, started["message_id"]))["body"]
    assert body.startswith("Your Acme code is ")


# -- queue full: the send is not counted ---------------------------------------------------


async def test_queue_full_start_is_503_and_does_not_count_as_a_send(
    aiohttp_client: Any, aiohttp_server: Any, sms_path: Path
) -> None:
    # A slow provider and one worker: one message in flight, one waiting fills the queue.
    fake = FakeTwilio(faults=Faults(latency_ms=400))
    server = await aiohttp_server(fake.make_app())
    provider = {
        "name": "twilio",
        "kind": "twilio",
        "account_sid": DEFAULT_ACCOUNT_SID,
        "auth_token": DEFAULT_AUTH_TOKEN,
        "from": "+15005550006",
        "base_url": str(server.make_url("")),
    }
    client = await app_client(
        aiohttp_client,
        sms_path,
        providers=[provider],
        queue={"max_size": 1},
        dispatch={"concurrency": 1},
    )
    statuses = []
    for i in range(5):
        response = await client.post(
            "/v1/messages", json={"to": OTHER_PHONE, "body": f"filler {i}"}
        )
        statuses.append(response.status)
        if response.status == 503:
            break
    assert statuses[-1] == 503, statuses

    response = await client.post("/v1/otp", json={"phone": PHONE})
    assert response.status == 503
    payload = await response.json(content_type=None)
    assert problem_slug(payload) == "queue-full"
    assert response.headers["Retry-After"].isdigit()

    # Once there is room, the same number gets a code at once: no cooldown was recorded.
    deadline = time.monotonic() + 5
    while True:
        response = await client.post("/v1/otp", json={"phone": PHONE})
        if response.status != 503 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    assert response.status == 202, await response.text()
    started = await response.json()
    deadline = time.monotonic() + 5
    while not any(a.to == PHONE for a in fake.accepted) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    otp_sms = [a for a in fake.accepted if a.to == PHONE]
    assert len(otp_sms) == 1
    status, payload = await verify(client, code_in(otp_sms[0].body), id=started["id"])
    assert status == 200
    assert payload["status"] == "approved"


# -- times in answers ----------------------------------------------------------------------


async def test_a_resend_at_resend_after_is_allowed(
    client: Client, sms_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = {"now": 1_900_000_000.7}
    monkeypatch.setattr(otp_service, "time", SimpleNamespace(time=lambda: clock["now"]))
    started = await start(client)
    clock["now"] = parse_time(started["resend_after"])
    response = await client.post("/v1/otp", json={"phone": PHONE})
    assert response.status == 202, await response.text()


async def test_a_resend_after_the_cooldown_is_allowed(
    client: Client, sms_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same, one second later: the policy itself lets the resend through.
    clock = {"now": 1_900_000_000.7}
    monkeypatch.setattr(otp_service, "time", SimpleNamespace(time=lambda: clock["now"]))
    first = await start(client)
    clock["now"] = parse_time(first["resend_after"]) + 1
    second = await start(client)
    assert second["id"] != first["id"]


# -- the app name cannot carry a link into the SMS ---------------------------------------


@pytest.mark.parametrize(
    "app",
    [
        "evil.com",
        "login.evil.co.uk",
        "www.x",
        "evil.com.",
        "10.0.0.1",
        "a/b",
        "x:y",
        "me@evil",
        "Call 18005550199",
        "Call 800 555 0199",
    ],
)
async def test_an_app_name_a_phone_would_linkify_is_refused(
    client: Client, sms_path: Path, app: str
) -> None:
    response = await client.post("/v1/otp", json={"phone": PHONE, "app": app})
    assert response.status == 400
    payload = await response.json(content_type=None)
    assert [e["pointer"] for e in payload["errors"]] == ["#/app"]
    await asyncio.sleep(0.05)
    assert read_sms(sms_path) == []


@pytest.mark.parametrize("app", ["Acme", "Acme Inc.", "St. Mary", "my-app_2", "App 2024"])
async def test_plain_app_names_are_accepted(client: Client, sms_path: Path, app: str) -> None:
    started = await start(client, app=app)
    body = (await sms_for(sms_path, started["message_id"]))["body"]
    assert body.startswith(f"Your {app} code is ")


# -- an enqueue that fails on a stopped Redis is undone (issue 12, item 5) ---------------


@pytest.mark.timeout(60)
async def test_a_start_that_cannot_reach_a_stopped_redis_is_undone(
    aiohttp_client: Any,
    sms_path: Path,
    redis_url: str,
    redis_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # OTP state in memory, the queue in Redis: the only step that fails is the enqueue.
    client = await app_client(
        aiohttp_client, sms_path, redis={"url": redis_url}, otp={"store": "memory"}
    )
    first = await start(client)
    code = code_in((await sms_for(sms_path, first["message_id"]))["body"])
    real_time = time.time
    monkeypatch.setattr(otp_service, "time", SimpleNamespace(time=lambda: real_time() + 31))
    redis_server.stop()
    try:
        failed = await client.post("/v1/otp", json={"phone": PHONE})
        assert failed.status == 503, await failed.text()
    finally:
        redis_server.start()
    # The user's code still works, and the failed start left no cooldown behind.
    status, payload = await verify(client, code, id=first["id"])
    assert (status, payload["status"]) == (200, "approved"), payload
    # Right after the restart the client's pooled Redis connections may still be the dead
    # ones (503, itself undone); a left-over cooldown would be a 429, never a 503.
    deadline = time.monotonic() + 10
    again = await client.post("/v1/otp", json={"phone": PHONE})
    while again.status == 503 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        again = await client.post("/v1/otp", json={"phone": PHONE})
    assert again.status == 202, await again.text()


# -- verify by phone tells nothing about a pending code (issue 12, item 10) --------------


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings sections for the embedded state, or for all of it in a private Redis."""
    if request.param == "memory":
        return {}
    return {"redis": {"url": request.getfixturevalue("redis_url")}}


def shape(status: int, payload: dict[str, Any]) -> tuple[int, list[tuple[str, str]]]:
    """What an answer looks like without its values: the status, each key and its type."""
    return status, sorted((key, type(value).__name__) for key, value in payload.items())


async def test_verify_by_phone_does_not_tell_whether_a_code_is_pending(
    aiohttp_client: Any, sms_path: Path, backend: dict[str, Any]
) -> None:
    client = await app_client(
        aiohttp_client, sms_path, abuse={"failed_checks_per_number": 3}, **backend
    )
    started = await start(client, PHONE)  # OTHER_PHONE has no code pending
    bad = wrong(code_in((await sms_for(sms_path, started["message_id"]))["body"]))
    seen: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for phone in (PHONE, OTHER_PHONE):
        seen[phone] = [await verify(client, bad, phone=phone) for _ in range(4)]
    pending, nothing = seen[PHONE], seen[OTHER_PHONE]
    assert [shape(*a) for a in pending] == [shape(*a) for a in nothing]
    assert [s for s, _ in pending] == [200, 200, 200, 429]
    for (_, one), (_, other) in zip(pending[:3], nothing[:3], strict=True):
        assert (one["status"], one["valid"]) == (other["status"], other["valid"])
        assert (one["status"], one["valid"]) == ("pending", False)
        assert one["attempts_left"] == other["attempts_left"]
        assert re.fullmatch(r"otp_[0-9a-f]{32}", one["id"])
        assert re.fullmatch(r"otp_[0-9a-f]{32}", other["id"])
    # Both cost a failed check: the fourth is refused alike.
    assert problem_slug(pending[3][1]) == problem_slug(nothing[3][1]) == "too-many-failed-checks"
    # The id in the answer does not tell either: by id, both are unknown.
    for answers in (pending, nothing):
        status, _ = await verify(client, bad, id=answers[0][1]["id"])
        assert status == 404
