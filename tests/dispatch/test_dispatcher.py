"""Dispatcher with the real TwilioProvider (each on a scripted local HTTP server), MemoryQueue
and MemoryLimiter: outcomes, retries, throttling, expiry and failover."""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from smsgw.dispatch.dispatcher import Dispatcher
from smsgw.dispatch.router import Route, Router
from smsgw.limiter.memory import MemoryLimiter
from smsgw.providers.twilio import TwilioProvider
from smsgw.queue.memory import MemoryQueue
from smsgw.queue.message import Message, Priority
from smsgw.settings import BreakerSettings, DispatchSettings, TwilioProviderSettings
from tests.helpers import Recorded, RecordedAudit, Reply, ScriptedHttp

pytestmark = pytest.mark.timeout(30)

SID = "AC" + "feedbeef" * 4
TOKEN = "dispatch-test-token"
FAST = DispatchSettings(concurrency=4, max_attempts=5, backoff_base_s=0.01, backoff_max_s=0.05)

OK = (201, {"sid": "SMok", "status": "queued"}, None)
SERVER_ERROR = (500, {"code": 20500, "message": "Internal Server Error"}, None)
INVALID_TO = (400, {"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400}, None)
Answer = tuple[int, dict[str, Any], dict[str, str] | None]


def throttled(retry_after: str) -> Answer:
    # A rate refusal (14107), not 20429: that one is a concurrency refusal (test_send_path.py).
    return (429, {"code": 14107, "message": "Too Many Requests"}, {"Retry-After": retry_after})


def too_many_open() -> Answer:
    return (429, {"code": 20429, "message": "Too many concurrent requests"}, {})


MESSAGES_PATH = f"/2010-04-01/Accounts/{SID}/Messages.json"


@dataclass
class Call:
    wall: float
    mono: float
    form: dict[str, str]


@dataclass
class FakeTwilio:
    """Answers one provider's Messages endpoint from a script; the last answer repeats."""

    name: str
    answers: list[Answer]
    calls: list[Call] = field(default_factory=list)

    def respond(self, request: Recorded) -> Reply:
        form = {key: values[0] for key, values in request.form().items()}
        self.calls.append(Call(request.wall, request.mono, form))
        status, payload, headers = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return Reply(status=status, payload=payload, headers=headers or {})


@dataclass
class Rig:
    queue: MemoryQueue
    limiter: MemoryLimiter
    dispatcher: Dispatcher
    fakes: dict[str, FakeTwilio]
    providers: list[TwilioProvider]
    audit: RecordedAudit

    async def run(self, *messages: Message, timeout_s: float = 5.0) -> None:
        for message in messages:
            await self.queue.put(message)
        self.dispatcher.start()
        assert await self.dispatcher.drain(timeout_s), "dispatcher did not finish in time"

    @property
    def stats(self) -> dict[str, int]:
        return self.dispatcher.stats.as_dict()


MakeRig = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig() -> AsyncIterator[MakeRig]:
    rigs: list[Rig] = []
    async with contextlib.AsyncExitStack() as servers:

        async def make(
            answers: dict[str, Sequence[Answer]],
            *,
            settings: DispatchSettings = FAST,
            rates: dict[str, float | None] | None = None,
            weights: dict[str, float] | None = None,
            countries: dict[str, tuple[str, ...]] | None = None,
            breaker: BreakerSettings | None = None,
        ) -> Rig:
            fakes: dict[str, FakeTwilio] = {}
            providers: list[TwilioProvider] = []
            routes: list[Route] = []
            for name, script in answers.items():
                fake = FakeTwilio(name, list(script))
                # One server per provider, as each is its own origin.
                http = await servers.enter_async_context(ScriptedHttp())
                http.script(MESSAGES_PATH, fake.respond)
                fakes[name] = fake
                provider = TwilioProvider(
                    TwilioProviderSettings(
                        name=name,
                        account_sid=SID,
                        auth_token=TOKEN,
                        from_="+15005550006",
                        base_url=http.url,
                    )
                )
                await provider.start()
                providers.append(provider)
                routes.append(
                    Route(
                        provider=provider,
                        weight=(weights or {}).get(name, 1.0),
                        countries=frozenset((countries or {}).get(name, ())),
                    )
                )
            queue = MemoryQueue(max_size=1000)
            limiter = MemoryLimiter(rates or dict.fromkeys(answers))
            router = Router(routes, rng=random.Random(0), breaker=breaker)
            audit = RecordedAudit()
            rig = Rig(
                queue,
                limiter,
                Dispatcher(queue, router, limiter, settings, audit),
                fakes,
                providers,
                audit,
            )
            rigs.append(rig)
            return rig

        yield make

        for rig in rigs:
            await rig.dispatcher.stop()
            await rig.limiter.close()
            for provider in rig.providers:
                await provider.close()


def sms(
    body: str = "hello",
    *,
    expires_in: float | None = None,
    priority: Priority = "normal",
    country: str = "US",
    id: str | None = None,
) -> Message:
    message = Message(
        to="+14155550100",
        country=country,
        body=body,
        client="app",
        priority=priority,
        expires_at=None if expires_in is None else time.time() + expires_in,
    )
    if id is not None:
        message.id = id
    return message


async def test_201_is_sent(make_rig: MakeRig) -> None:
    rig = await make_rig({"twilio": [OK]})
    message = sms("Your code is 123456")
    await rig.run(message)

    assert rig.stats == {
        "sent": 1,
        "failed": 0,
        "expired": 0,
        "retried": 0,
        "throttled": 0,
        "possible_duplicates": 0,
        "late_slots": 0,
        "duplicates_skipped": 0,
        "circuit_waits": 0,
        "lane_full_waits": 0,
        "concurrency_refusals": 0,
    }
    [call] = rig.fakes["twilio"].calls
    assert call.form["To"] == "+14155550100"
    assert call.form["Body"] == "Your code is 123456"
    assert "ValidityPeriod" not in call.form  # not an OTP: no expiry
    assert message.attempts == 1
    assert rig.queue.depth() == 0
    assert rig.audit.kinds(message.id) == ["sending", "sent"]
    (_, _, sending), (_, _, sent) = rig.audit.events
    assert sending == {"provider": "twilio", "attempt": 1, "possible_duplicate": False}
    assert sent["provider_message_id"].startswith("SM")
    assert sent["attempt"] == 1


async def test_otp_remaining_life_becomes_validity_period(make_rig: MakeRig) -> None:
    rig = await make_rig({"twilio": [OK]})
    await rig.run(sms(expires_in=120))
    [call] = rig.fakes["twilio"].calls
    assert 115 <= int(call.form["ValidityPeriod"]) <= 120


async def test_permanent_error_fails_after_one_attempt(make_rig: MakeRig) -> None:
    rig = await make_rig({"twilio": [INVALID_TO, OK]})
    message = sms()
    await rig.run(message)

    assert rig.stats["failed"] == 1
    assert rig.stats["sent"] == 0
    assert rig.stats["retried"] == 0
    assert len(rig.fakes["twilio"].calls) == 1
    assert message.attempts == 1
    assert rig.audit.kinds(message.id) == ["sending", "failed"]
    assert rig.audit.events[-1][2]["provider"] == "twilio"


async def test_server_error_is_retried_then_sent(make_rig: MakeRig) -> None:
    rig = await make_rig({"twilio": [SERVER_ERROR, OK]})
    message = sms()
    await rig.run(message)

    assert rig.stats["sent"] == 1
    assert rig.stats["retried"] == 1
    assert rig.stats["possible_duplicates"] == 1
    assert rig.stats["failed"] == 0
    assert len(rig.fakes["twilio"].calls) == 2
    assert message.attempts == 2
    assert rig.audit.kinds(message.id) == ["sending", "retry", "sending", "sent"]
    retry = rig.audit.events[1][2]
    assert retry["possible_duplicate"] is True
    assert retry["attempt"] == 1


async def test_throttle_pauses_the_provider_and_keeps_the_attempt_count(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig(
        {"twilio": [throttled("0.3"), OK, OK]},
        settings=DispatchSettings(concurrency=1, backoff_base_s=0.01, backoff_max_s=0.05),
    )
    first, second = sms(id="msg_first"), sms(id="msg_second")
    await rig.run(first, second)

    assert rig.stats["throttled"] == 1
    assert rig.stats["sent"] == 2
    assert rig.stats["retried"] == 0
    assert rig.stats["possible_duplicates"] == 0
    assert first.attempts == 1  # the throttled try did not count
    assert rig.audit.kinds("msg_first") == ["sending", "retry", "sending", "sent"]
    assert rig.audit.events[1][2]["reason"].startswith("throttled")
    calls = rig.fakes["twilio"].calls
    assert len(calls) == 3
    # The second message was ready at once, but the paused provider held it back too.
    assert min(call.mono for call in calls[1:]) - calls[0].mono >= 0.28


async def test_expired_otp_is_dropped_without_any_http_call(make_rig: MakeRig) -> None:
    rig = await make_rig({"twilio": [OK]})
    message = sms("Your code is 123456", expires_in=-1)
    await rig.run(message)

    assert rig.audit.kinds(message.id) == ["expired"]
    assert rig.stats["expired"] == 1
    assert rig.stats["sent"] == 0
    assert rig.stats["failed"] == 0
    assert rig.fakes["twilio"].calls == []


async def test_otp_that_expires_while_waiting_for_the_limiter_is_not_sent(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig(
        {"twilio": [OK]},
        rates={"twilio": 1},
        settings=DispatchSettings(concurrency=2, backoff_base_s=0.01, backoff_max_s=0.05),
    )
    await rig.run(sms(id="msg_bulk"), sms(id="msg_otp", expires_in=0.3))

    assert rig.stats["sent"] == 1
    assert rig.stats["expired"] == 1
    [call] = rig.fakes["twilio"].calls
    assert "ValidityPeriod" not in call.form  # the bulk one went, the OTP did not


async def test_retries_never_go_beyond_validity(make_rig: MakeRig) -> None:
    rig = await make_rig(
        {"twilio": [SERVER_ERROR]},
        settings=DispatchSettings(
            concurrency=2, max_attempts=50, backoff_base_s=0.05, backoff_max_s=1.0
        ),
    )
    message = sms(expires_in=0.5)
    assert message.expires_at is not None
    await rig.run(message)

    assert rig.stats["expired"] == 1
    assert rig.stats["sent"] == 0
    assert rig.stats["failed"] == 0
    calls = rig.fakes["twilio"].calls
    assert len(calls) >= 2
    assert all(call.wall < message.expires_at for call in calls)
    for call in calls:
        remaining = message.expires_at - call.wall
        assert int(call.form["ValidityPeriod"]) <= max(1, math.ceil(remaining))


async def test_retry_that_could_only_come_after_expiry_is_expired_at_once(
    make_rig: MakeRig,
) -> None:
    """The backoff (>= 10 s) outlasts the OTP (5 s): no point parking it in the queue."""
    rig = await make_rig(
        {"twilio": [SERVER_ERROR, OK]},
        settings=DispatchSettings(concurrency=1, backoff_base_s=20.0, backoff_max_s=40.0),
    )
    await rig.run(sms(expires_in=5), timeout_s=2.0)

    assert rig.stats["expired"] == 1
    assert rig.stats["retried"] == 0
    assert len(rig.fakes["twilio"].calls) == 1


async def test_max_attempts_is_respected(make_rig: MakeRig) -> None:
    rig = await make_rig(
        {"twilio": [SERVER_ERROR]},
        settings=DispatchSettings(
            concurrency=2, max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.05
        ),
    )
    message = sms()
    await rig.run(message)

    assert len(rig.fakes["twilio"].calls) == 3
    assert rig.stats["failed"] == 1
    assert rig.stats["retried"] == 2
    assert rig.stats["sent"] == 0
    assert message.attempts == 3


async def test_possible_duplicates_counts_only_retries(make_rig: MakeRig) -> None:
    rig = await make_rig(
        {"twilio": [SERVER_ERROR]},
        settings=DispatchSettings(
            concurrency=1, max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.05
        ),
    )
    await rig.run(sms())
    assert rig.stats["retried"] == 2
    assert rig.stats["possible_duplicates"] == 2


async def test_retry_fails_over_to_another_provider(make_rig: MakeRig) -> None:
    # The seeded router picks "primary" first (weight 1000:1); the retry must avoid it.
    rig = await make_rig(
        {"primary": [SERVER_ERROR], "backup": [OK]},
        weights={"primary": 1000, "backup": 1},
    )
    message = sms()
    await rig.run(message)

    assert len(rig.fakes["primary"].calls) == 1
    assert len(rig.fakes["backup"].calls) == 1
    assert rig.stats["sent"] == 1
    assert message.failed_providers == ("primary",)


async def test_no_provider_for_the_country_fails_without_sending(make_rig: MakeRig) -> None:
    rig = await make_rig({"twilio": [OK]}, countries={"twilio": ("US",)})
    message = sms(country="FR")
    await rig.run(message)

    assert rig.stats["failed"] == 1
    assert rig.fakes["twilio"].calls == []
    assert rig.audit.kinds(message.id) == ["rejected"]


async def test_high_priority_is_dispatched_first(make_rig: MakeRig) -> None:
    rig = await make_rig(
        {"twilio": [OK]},
        settings=DispatchSettings(concurrency=1, backoff_base_s=0.01, backoff_max_s=0.05),
    )
    await rig.run(sms("bulk 1"), sms("bulk 2"), sms("otp", priority="high"), sms("bulk 3"))
    bodies = [call.form["Body"] for call in rig.fakes["twilio"].calls]
    assert bodies == ["otp", "bulk 1", "bulk 2", "bulk 3"]


async def test_many_messages_all_get_an_outcome(make_rig: MakeRig) -> None:
    rig = await make_rig({"twilio": [OK]}, settings=DispatchSettings(concurrency=16))
    await rig.run(*(sms(f"m{i}") for i in range(200)))
    assert rig.stats["sent"] == 200
    bodies = sorted(call.form["Body"] for call in rig.fakes["twilio"].calls)
    assert bodies == sorted(f"m{i}" for i in range(200))


async def test_an_open_circuit_takes_a_failing_provider_out_of_routing(
    make_rig: MakeRig,
) -> None:
    # "primary" always answers 500; after 3 failures in a row its circuit opens and every
    # later message goes to "backup" without trying "primary" first.
    rig = await make_rig(
        {"primary": [SERVER_ERROR], "backup": [OK]},
        weights={"primary": 1000, "backup": 1},
        breaker=BreakerSettings(failure_threshold=3, cooldown_s=60.0),
        settings=DispatchSettings(concurrency=1, backoff_base_s=0.01, backoff_max_s=0.02),
    )
    await rig.run(*(sms(id=f"msg_{n}") for n in range(20)))

    assert len(rig.fakes["primary"].calls) == 3
    assert len(rig.fakes["backup"].calls) == 20
    assert rig.stats["sent"] == 20
    assert rig.dispatcher._router.breaker_states() == {"primary": "open", "backup": "closed"}


async def test_when_every_circuit_is_open_messages_wait_instead_of_failing(
    make_rig: MakeRig,
) -> None:
    rig = await make_rig(
        {"only": [SERVER_ERROR]},
        breaker=BreakerSettings(failure_threshold=1, cooldown_s=60.0),
        settings=DispatchSettings(
            concurrency=1, max_attempts=5, backoff_base_s=0.01, backoff_max_s=0.02
        ),
    )
    otp = sms(id="msg_otp", expires_in=1.8)
    await rig.run(otp, timeout_s=4.0)

    assert len(rig.fakes["only"].calls) == 1  # the circuit opened at the first failure
    assert rig.stats["circuit_waits"] >= 1
    reasons = [d.get("reason") for mid, kind, d in rig.audit.events if kind == "retry"]
    assert "every provider's circuit is open" in reasons
    assert rig.stats["expired"] == 1
    assert rig.stats["failed"] == 0
    assert rig.audit.kinds("msg_otp")[-1] == "expired"


async def test_a_message_that_cannot_go_out_for_too_long_expires(make_rig: MakeRig) -> None:
    rig = await make_rig(
        {"twilio": [throttled("0.05")]},
        settings=DispatchSettings(concurrency=1, max_age_s=0.5),
    )
    message = sms(id="msg_bulk")  # no validity of its own
    await rig.run(message, timeout_s=3.0)

    assert rig.stats["throttled"] >= 2
    assert rig.stats["expired"] == 1
    assert rig.audit.kinds("msg_bulk")[-1] == "expired"
