"""OtpService with a real MemoryQueue and MemoryOtpStore: start, verify, policy, rollback."""

from __future__ import annotations

import asyncio
import time
import types

import pytest
from redis.exceptions import RedisError

from smsgw.errors import MaxAttemptsReached, QueueFull, TooManySends, VerificationNotFound
from smsgw.otp import service as service_module
from smsgw.otp.codes import CodeHasher
from smsgw.otp.guard import AbuseGuard, MemoryAbuseCounters, MemoryFailedChecks
from smsgw.otp.service import OtpService, StartedVerification
from smsgw.otp.store import AttemptTarget, MemoryOtpStore
from smsgw.phone import PhoneNumber
from smsgw.queue.memory import MemoryQueue
from smsgw.queue.message import Message
from smsgw.redis_keys import RedisKeys
from smsgw.settings import AbuseSettings, OtpSettings
from tests.helpers import OTP_SECRET, RecordedAudit

pytestmark = pytest.mark.timeout(30)

PHONE = PhoneNumber(e164="+14155550100", country="US")
OTHER = PhoneNumber(e164="+14155550101", country="US")


class FailingQueue(MemoryQueue):
    """A memory queue whose next put raises `fail_next` (a Redis error, a cancellation...)."""

    fail_next: BaseException | None = None

    async def put(self, message: Message) -> None:
        failure, self.fail_next = self.fail_next, None
        if failure is not None:
            raise failure
        await super().put(message)


class Clock:
    """One clock for the service (patched into its module) and the abuse guard."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# Half-way through a 10-minute bucket, and in the middle of a day.
NOON = 1_800_000_000.0 + 43_200 + 300


def make_service(
    queue_size: int = 100,
    *,
    abuse: dict[str, object] | None = None,
    clock: Clock | None = None,
    **otp: object,
) -> tuple[OtpService, FailingQueue, MemoryOtpStore]:
    settings = OtpSettings(secret=OTP_SECRET, **otp)  # type: ignore[arg-type]
    queue = FailingQueue(max_size=queue_size)
    store = MemoryOtpStore()
    hasher = CodeHasher(OTP_SECRET.encode())
    guard = AbuseGuard(
        AbuseSettings(**(abuse or {})),  # type: ignore[arg-type]
        MemoryAbuseCounters(clock or time.monotonic),
        MemoryFailedChecks(),
        RedisKeys(),
        clock or time.time,
    )
    return OtpService(settings, store, queue, hasher, RecordedAudit(), guard), queue, store


def use_clock(monkeypatch: pytest.MonkeyPatch, now: float = NOON) -> Clock:
    clock = Clock(now)
    monkeypatch.setattr(service_module, "time", types.SimpleNamespace(time=clock))
    return clock


async def outcome(service: OtpService, phone: PhoneNumber, queue: MemoryQueue) -> str:
    """ "ok" (and the SMS taken off the queue) or the reason of the refusal."""
    try:
        await service.start(client="app", phone=phone)
    except TooManySends as exc:
        return exc.reason
    message = await queue.get()
    await queue.ack(message)
    return "ok"


def code_of(message: Message) -> str:
    assert message.code_span is not None
    start, end = message.code_span
    return message.body[start:end]


def wrong(code: str) -> str:
    return "".join(str((int(d) + 1) % 10) for d in code)


async def start_and_take(
    service: OtpService, queue: MemoryQueue, client: str = "app", phone: PhoneNumber = PHONE
) -> tuple[StartedVerification, str]:
    started = await service.start(client=client, phone=phone)
    message = await queue.get()
    await queue.ack(message)
    return started, code_of(message)


async def test_start_queues_one_high_priority_message_with_the_code() -> None:
    service, queue, _ = make_service()
    before = time.time()
    started = await service.start(client="app", phone=PHONE)

    assert queue.depth() == 1
    message = await queue.get()
    assert message.priority == "high"
    assert message.to == PHONE.e164
    assert message.country == "US"
    assert message.client == "app"
    assert message.id == started.message_id
    assert message.client_ref == started.id
    assert message.expires_at == started.expires_at
    code = code_of(message)
    assert len(code) == 6
    assert code.isdigit()
    assert message.body == f"Your smsgw code is {code}. It expires in 10 minutes."
    assert code not in message.masked_body()

    assert started.id.startswith("otp_")
    assert started.phone == PHONE.e164
    assert before + 600 <= started.expires_at <= time.time() + 600
    assert started.resend_after == pytest.approx(started.expires_at - 600 + 30)


async def test_start_honours_app_length_locale_and_ttl() -> None:
    service, queue, _ = make_service(templates={"acme:fr": "Code {app} : {code} ({minutes} min)"})
    started = await service.start(
        client="app", phone=PHONE, app="acme", length=8, locale="fr-FR", ttl_s=120
    )
    message = await queue.get()
    code = code_of(message)
    assert len(code) == 8
    assert message.body == f"Code acme : {code} (2 min)"
    assert message.expires_at == started.expires_at
    assert started.expires_at - message.created_at == pytest.approx(120)


async def test_wrong_codes_count_down_then_the_right_one_approves() -> None:
    service, queue, _ = make_service()
    started, code = await start_and_take(service, queue)

    first = await service.check(client="app", code=wrong(code), verification_id=started.id)
    second = await service.check(client="app", code=wrong(code), verification_id=started.id)
    assert (first.valid, first.attempts_left) == (False, 4)
    assert (second.valid, second.attempts_left) == (False, 3)
    assert first.id == started.id

    right = await service.check(client="app", code=code, verification_id=started.id)
    assert right.valid is True
    assert right.id == started.id

    with pytest.raises(VerificationNotFound):
        await service.check(client="app", code=code, verification_id=started.id)


async def test_sixth_check_after_five_wrong_is_max_attempts_even_with_the_right_code() -> None:
    service, queue, _ = make_service()
    started, code = await start_and_take(service, queue)
    lefts = []
    for _ in range(5):
        check = await service.check(client="app", code=wrong(code), verification_id=started.id)
        assert not check.valid
        lefts.append(check.attempts_left)
    assert lefts == [4, 3, 2, 1, 0]
    with pytest.raises(MaxAttemptsReached):
        await service.check(client="app", code=wrong(code), verification_id=started.id)
    with pytest.raises(MaxAttemptsReached):
        await service.check(client="app", code=code, verification_id=started.id)


async def test_verify_by_phone() -> None:
    service, queue, _ = make_service()
    started, code = await start_and_take(service, queue)
    miss = await service.check(client="app", code=wrong(code), phone=PHONE.e164)
    assert not miss.valid
    # A wrong code by phone names (client, phone) opaquely, not the verification: the same
    # answer as when nothing is pending.
    assert miss.id != started.id
    assert miss.id.startswith("otp_")
    hit = await service.check(client="app", code=code, phone=PHONE.e164)
    assert hit.valid
    assert hit.id == started.id
    after = await service.check(client="app", code=code, phone=PHONE.e164)
    assert (after.valid, after.id) == (False, miss.id)


async def test_another_client_cannot_verify() -> None:
    service, queue, _ = make_service()
    started, code = await start_and_take(service, queue, client="app")
    with pytest.raises(VerificationNotFound):
        await service.check(client="intruder", code=code, verification_id=started.id)
    assert not (await service.check(client="intruder", code=code, phone=PHONE.e164)).valid
    # Still pending for its owner.
    assert (await service.check(client="app", code=code, verification_id=started.id)).valid


async def test_unknown_id_is_not_found_and_an_unknown_phone_a_wrong_code() -> None:
    service, _, _ = make_service()
    with pytest.raises(VerificationNotFound):
        await service.check(client="app", code="123456", verification_id="otp_nope")
    check = await service.check(client="app", code="123456", phone=PHONE.e164)
    assert (check.valid, check.attempts_left) == (False, 4)
    other = await service.check(client="other", code="123456", phone=PHONE.e164)
    assert other.id != check.id  # per client: no link between two clients' answers


async def test_new_send_replaces_the_previous_code() -> None:
    service, queue, _ = make_service(resend_cooldown_s=0)
    first, first_code = await start_and_take(service, queue)
    second, second_code = await start_and_take(service, queue)
    assert first.id != second.id
    with pytest.raises(VerificationNotFound):
        await service.check(client="app", code=first_code, verification_id=first.id)
    by_phone = await service.check(client="app", code=second_code, phone=PHONE.e164)
    assert by_phone.id == second.id
    assert by_phone.valid


async def test_resend_cooldown_raises_too_many_sends_with_retry_after() -> None:
    service, queue, _ = make_service()
    await service.start(client="app", phone=PHONE)
    with pytest.raises(TooManySends) as info:
        await service.start(client="app", phone=PHONE)
    assert info.value.reason == "resend-cooldown"
    assert 29 <= info.value.retry_after_s <= 30
    assert isinstance(info.value.retry_after_s, int)
    assert queue.depth() == 1  # nothing queued for the refused send
    # Another number is not affected.
    await service.start(client="app", phone=OTHER)


async def test_send_cap_per_window() -> None:
    service, queue, _ = make_service(resend_cooldown_s=0, max_sends=3, send_window_s=60)
    for _ in range(3):
        await service.start(client="app", phone=PHONE)
    with pytest.raises(TooManySends) as info:
        await service.start(client="app", phone=PHONE)
    assert info.value.reason == "too-many-sends"
    assert 59 <= info.value.retry_after_s <= 60
    assert queue.depth() == 3


async def test_queue_full_rolls_back_the_verification_and_the_send() -> None:
    service, queue, store = make_service(queue_size=1)
    await queue.put(Message(to="+14155550199", country="US", body="bulk", client="x"))

    with pytest.raises(QueueFull):
        await service.start(client="app", phone=PHONE)

    assert queue.depth() == 1
    nothing = await store.reserve_attempt(AttemptTarget("app", phone=PHONE.e164), time.time())
    assert nothing.outcome == "not_found"
    # The failed send is not counted: no cooldown now that the queue has room.
    bulk = await queue.get()
    await queue.ack(bulk)
    started, code = await start_and_take(service, queue)
    assert (await service.check(client="app", code=code, verification_id=started.id)).valid


async def test_queue_full_on_resend_keeps_the_previous_code_valid() -> None:
    service, queue, _ = make_service(queue_size=1, resend_cooldown_s=0)
    first, first_code = await start_and_take(service, queue)
    await queue.put(Message(to="+14155550199", country="US", body="bulk", client="x"))
    with pytest.raises(QueueFull):
        await service.start(client="app", phone=PHONE)
    check = await service.check(client="app", code=first_code, verification_id=first.id)
    assert check.valid


async def test_expired_verification_is_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = types.SimpleNamespace(now=1_700_000_000.0)
    monkeypatch.setattr(service_module, "time", types.SimpleNamespace(time=lambda: clock.now))
    service, queue, _ = make_service(ttl_s=60)
    started, code = await start_and_take(service, queue)
    assert started.expires_at == clock.now + 60

    clock.now += 59.9
    miss = await service.check(client="app", code=wrong(code), verification_id=started.id)
    assert not miss.valid

    clock.now += 0.1
    with pytest.raises(VerificationNotFound):
        await service.check(client="app", code=code, verification_id=started.id)


async def test_concurrent_wrong_checks_count_at_most_max_attempts() -> None:
    service, queue, _ = make_service()
    started, code = await start_and_take(service, queue)

    async def check() -> str:
        try:
            result = await service.check(client="app", code=wrong(code), verification_id=started.id)
        except MaxAttemptsReached:
            return "max"
        return "valid" if result.valid else "wrong"

    outcomes = await asyncio.gather(*(check() for _ in range(50)))
    assert outcomes.count("wrong") == 5
    assert outcomes.count("max") == 45


# -- what the pumping guard counts (issue 12, item 1) --------------------------------------


def gb(n: int) -> PhoneNumber:
    """Numbers of one 7-digit prefix (447946 0...)."""
    return PhoneNumber(e164=f"+4479460{12000 + n:05d}", country="GB")


async def test_starts_the_guard_refused_do_not_count(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = use_clock(monkeypatch)
    service, queue, _ = make_service(abuse={"prefix_floor": 5}, clock=clock, resend_cooldown_s=0)
    outcomes = [await outcome(service, gb(n), queue) for n in range(30)]
    assert outcomes == ["ok"] * 5 + ["suspected-pumping"] * 25
    # Half-way through the next window, half of the last one still counts: 5 sends (2.5),
    # not 30 starts (15), so the range is open again: refusals sent nothing.
    clock.now += 600
    assert await outcome(service, gb(100), queue) == "ok"


async def test_a_start_whose_enqueue_fails_is_not_counted_by_the_guard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_clock(monkeypatch)
    service, queue, _ = make_service(abuse={"prefix_floor": 1})
    queue.fail_next = RedisError("connection lost")
    with pytest.raises(RedisError):
        await service.start(client="app", phone=gb(0))
    assert await outcome(service, gb(1), queue) == "ok"  # the failed start sent nothing


async def test_starts_refused_per_number_do_not_count(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = use_clock(monkeypatch)
    service, queue, _ = make_service(abuse={"prefix_floor": 3}, clock=clock)
    # One sent code, then 39 starts refused by the cooldown: they sent nothing.
    outcomes = [await outcome(service, gb(0), queue) for _ in range(40)]
    assert outcomes == ["ok"] + ["resend-cooldown"] * 39
    assert [await outcome(service, gb(n), queue) for n in (1, 2, 3)] == [
        "ok",
        "ok",
        "suspected-pumping",
    ]


# -- a failed enqueue is undone (issue 12, item 5) ----------------------------------------


@pytest.mark.parametrize(
    "failure",
    [RedisError("connection lost"), asyncio.CancelledError(), RuntimeError("bug")],
    ids=["redis-error", "cancelled", "any-error"],
)
async def test_a_failed_enqueue_keeps_the_previous_code_and_counts_no_send(
    monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    clock = use_clock(monkeypatch)
    service, queue, _ = make_service(clock=clock)
    first, code = await start_and_take(service, queue)
    clock.now += 30
    queue.fail_next = failure
    with pytest.raises(type(failure)):
        await service.start(client="app", phone=PHONE)
    clock.now += 1
    # The code the user holds still works ...
    assert (await service.check(client="app", code=code, verification_id=first.id)).valid
    # ... and the failed start left no cooldown (30 s after the first send, 1 s after it).
    assert await outcome(service, PHONE, queue) == "ok"


# -- the embedded sweep keeps what the daily cap needs (issue 12, item 3) ----------------


@pytest.mark.timeout(60)
async def test_a_day_of_tries_every_30_s_with_sweeps_gets_exactly_the_daily_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = use_clock(monkeypatch)
    service, queue, _ = make_service(clock=clock)  # 30 s cooldown, 5 per 10 min, 10 a day
    sent = 0
    for _ in range(24 * 3600 // 30):
        sent += await outcome(service, PHONE, queue) == "ok"
        service.sweep(clock.now)  # what the app's sweeper does between requests
        clock.now += 30
    assert sent == 10
