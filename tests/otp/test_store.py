"""OTP stores (memory, and Redis against a private redis-server): the send policy, one pending
verification per (client, phone), atomic attempt counting, expiry and approval. Time is passed
in explicitly, never slept; T0 is now, because Redis expires keys on its own clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from smsgw.otp.redis_store import RedisOtpStore
from smsgw.otp.store import AttemptTarget, MemoryOtpStore, OtpStore, SendPolicy, Verification
from smsgw.redis_keys import RedisKeys

pytestmark = pytest.mark.timeout(30)

PHONE = "+14155550100"
OTHER_PHONE = "+14155550101"
POLICY = SendPolicy(max_sends=5, window_s=600, cooldown_s=30)
T0 = float(int(time.time()))


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[OtpStore]:
    if request.param == "memory":
        yield MemoryOtpStore()
        return
    redis = Redis.from_url(request.getfixturevalue("redis_url"))
    # These tests drive time through the `now` arguments; the replicas' own store reads
    # Redis' clock (test_redis_store_judges_sends_and_expiry_on_redis_clock).
    yield RedisOtpStore(redis, RedisKeys("test:"), trust_caller_time=True)
    await redis.aclose()


def verification(
    vid: str = "otp_1",
    client: str = "app",
    phone: str = PHONE,
    expires_at: float = T0 + 600,
    max_attempts: int = 5,
) -> Verification:
    return Verification(
        id=vid,
        client=client,
        phone=phone,
        code_hash=b"h" * 32,
        created_at=T0,
        expires_at=expires_at,
        max_attempts=max_attempts,
    )


# --- send policy --------------------------------------------------------------------------


async def test_first_send_is_allowed_and_sets_the_cooldown(store: OtpStore) -> None:
    reservation = await store.reserve_send(PHONE, T0, POLICY)
    assert reservation.allowed
    assert reservation.retry_after_s == 0
    assert reservation.next_send_at == T0 + 30


async def test_resend_within_cooldown_is_refused_with_the_remaining_wait(store: OtpStore) -> None:
    await store.reserve_send(PHONE, T0, POLICY)
    refused = await store.reserve_send(PHONE, T0 + 10, POLICY)
    assert not refused.allowed
    assert refused.reason == "resend-cooldown"
    assert refused.retry_after_s == pytest.approx(20)
    # The refusal recorded nothing: the cooldown still ends 30 s after the first send.
    assert (await store.reserve_send(PHONE, T0 + 30, POLICY)).allowed


async def test_five_sends_per_window_then_refused_until_the_first_ages_out(store: OtpStore) -> None:
    times = [T0 + 30 * i for i in range(5)]
    reservations = [await store.reserve_send(PHONE, t, POLICY) for t in times]
    assert all(r.allowed for r in reservations)
    assert [r.next_send_at for r in reservations[:4]] == [t + 30 for t in times[:4]]
    # After the fifth, the next send is possible only when the first leaves the window.
    assert reservations[4].next_send_at == T0 + 600

    refused = await store.reserve_send(PHONE, T0 + 150, POLICY)
    assert not refused.allowed
    assert refused.reason == "too-many-sends"
    assert refused.retry_after_s == pytest.approx(450)

    still = await store.reserve_send(PHONE, T0 + 599, POLICY)
    assert not still.allowed
    assert still.retry_after_s == pytest.approx(1)

    assert (await store.reserve_send(PHONE, T0 + 600, POLICY)).allowed


async def test_send_history_is_per_number(store: OtpStore) -> None:
    await store.reserve_send(PHONE, T0, POLICY)
    assert (await store.reserve_send(OTHER_PHONE, T0 + 1, POLICY)).allowed
    assert not (await store.reserve_send(PHONE, T0 + 1, POLICY)).allowed


async def test_release_send_forgets_the_reservation(store: OtpStore) -> None:
    await store.reserve_send(PHONE, T0, POLICY)
    await store.reserve_send(PHONE, T0 + 30, POLICY)
    await store.release_send(PHONE, T0 + 30)
    # Without the released send, only the one at T0 counts: its cooldown is over.
    again = await store.reserve_send(PHONE, T0 + 31, POLICY)
    assert again.allowed


async def test_release_send_only_forgets_the_given_time(store: OtpStore) -> None:
    await store.reserve_send(PHONE, T0, POLICY)
    await store.release_send(PHONE, T0 + 5)  # nothing recorded then
    await store.release_send(OTHER_PHONE, T0)  # unknown number
    assert not (await store.reserve_send(PHONE, T0 + 10, POLICY)).allowed


async def test_zero_cooldown_only_counts_sends(store: OtpStore) -> None:
    policy = SendPolicy(max_sends=3, window_s=60, cooldown_s=0)
    results = [(await store.reserve_send(PHONE, T0, policy)).allowed for _ in range(4)]
    assert results == [True, True, True, False]


async def test_daily_cap_holds_beside_the_short_window(store: OtpStore) -> None:
    # 2 per 10 minutes, 5 per day: after the short window passes, the daily cap still holds.
    policy = SendPolicy(max_sends=2, window_s=600, cooldown_s=0, daily_max=5)
    day = 86400
    answers = []
    for n in range(8):
        at = T0 - day + 1 + n * 700  # each 700 s apart: the short window never fills
        answers.append(await store.reserve_send(PHONE, at, policy))
    assert [a.allowed for a in answers] == [True] * 5 + [False] * 3
    assert {a.reason for a in answers[5:]} == {"daily-cap"}
    # The first send ages out of the day exactly one day after it.
    refused = answers[5]
    assert refused.retry_after_s == pytest.approx((T0 - day + 1 + day) - (T0 - day + 1 + 5 * 700))
    assert answers[4].next_send_at == pytest.approx(T0 - day + 1 + day)
    later = await store.reserve_send(PHONE, T0 + 2, policy)
    assert later.allowed


async def test_without_a_daily_cap_only_the_short_window_counts(store: OtpStore) -> None:
    policy = SendPolicy(max_sends=2, window_s=60, cooldown_s=0)
    results = [(await store.reserve_send(PHONE, T0 + n * 61, policy)).allowed for n in range(20)]
    assert all(results)


# --- pending verifications ----------------------------------------------------------------


async def test_save_replaces_the_pending_verification_of_the_same_client_and_phone(
    store: OtpStore,
) -> None:
    await store.save(verification("otp_old"))
    await store.save(verification("otp_new"))

    old = await store.reserve_attempt(AttemptTarget("app", verification_id="otp_old"), T0)
    assert old.outcome == "not_found"
    by_phone = await store.reserve_attempt(AttemptTarget("app", phone=PHONE), T0)
    assert by_phone.outcome == "reserved"
    assert by_phone.verification is not None
    assert by_phone.verification.id == "otp_new"


async def test_save_returns_the_verification_it_replaced(store: OtpStore) -> None:
    old = verification("otp_old")
    assert await store.save(old) is None
    assert await store.save(verification("otp_new")) == old
    assert await store.save(verification("otp_other", client="other")) is None


async def test_save_does_not_touch_another_clients_verification(store: OtpStore) -> None:
    await store.save(verification("otp_a", client="a"))
    await store.save(verification("otp_b", client="b"))

    a = await store.reserve_attempt(AttemptTarget("a", phone=PHONE), T0)
    b = await store.reserve_attempt(AttemptTarget("b", phone=PHONE), T0)
    assert a.verification is not None
    assert b.verification is not None
    assert (a.verification.id, b.verification.id) == ("otp_a", "otp_b")


async def test_another_client_cannot_use_a_verification_id(store: OtpStore) -> None:
    await store.save(verification("otp_a", client="a"))
    result = await store.reserve_attempt(AttemptTarget("b", verification_id="otp_a"), T0)
    assert result.outcome == "not_found"
    # And the stranger's try did not cost the owner an attempt.
    own = await store.reserve_attempt(AttemptTarget("a", verification_id="otp_a"), T0)
    assert own.verification is not None
    assert own.verification.attempts == 1


async def test_unknown_lookups_are_not_found(store: OtpStore) -> None:
    await store.save(verification())
    for vid, phone in [("otp_x", None), (None, OTHER_PHONE), (None, None), ("", None)]:
        result = await store.reserve_attempt(
            AttemptTarget("app", verification_id=vid, phone=phone), T0
        )
        assert result.outcome == "not_found"


async def test_attempts_are_counted_then_exhausted(store: OtpStore) -> None:
    await store.save(verification(max_attempts=3))
    results = [
        await store.reserve_attempt(AttemptTarget("app", verification_id="otp_1"), T0)
        for _ in range(5)
    ]
    assert [r.outcome for r in results] == ["reserved"] * 3 + ["exhausted"] * 2
    assert [r.verification.attempts for r in results[:3] if r.verification] == [1, 2, 3]


async def test_concurrent_attempts_reserve_exactly_max_attempts(store: OtpStore) -> None:
    await store.save(verification(max_attempts=5))

    async def attempt() -> str:
        await asyncio.sleep(0)  # let all 50 start before any runs
        result = await store.reserve_attempt(AttemptTarget("app", verification_id="otp_1"), T0)
        return result.outcome

    outcomes = await asyncio.gather(*(attempt() for _ in range(50)))
    assert outcomes.count("reserved") == 5
    assert outcomes.count("exhausted") == 45


async def test_expired_verification_is_not_found_and_gone(store: OtpStore) -> None:
    await store.save(verification(expires_at=T0 + 600))
    live = await store.reserve_attempt(AttemptTarget("app", verification_id="otp_1"), T0 + 599)
    assert live.outcome == "reserved"
    expired = await store.reserve_attempt(AttemptTarget("app", verification_id="otp_1"), T0 + 600)
    assert expired.outcome == "not_found"
    # Dropped, not just hidden: even an earlier clock no longer finds it, nor does the phone.
    again = await store.reserve_attempt(AttemptTarget("app", phone=PHONE), T0)
    assert again.outcome == "not_found"


async def test_approve_once(store: OtpStore) -> None:
    await store.save(verification())
    assert await store.approve(verification()) is True
    assert await store.approve(verification()) is False
    after = await store.reserve_attempt(AttemptTarget("app", verification_id="otp_1"), T0)
    assert after.outcome == "not_found"
    assert await store.approve(verification("otp_never")) is False


async def test_undo_save_removes_the_verification_and_its_phone_index(store: OtpStore) -> None:
    await store.save(verification())
    await store.undo_save(verification(), None)
    result = await store.reserve_attempt(AttemptTarget("app", phone=PHONE), T0)
    assert result.outcome == "not_found"


async def test_undo_save_puts_back_what_the_save_replaced(store: OtpStore) -> None:
    old = verification("otp_old")
    await store.save(old)
    assert await store.reserve_attempt(AttemptTarget("app", verification_id="otp_old"), T0)
    replaced = await store.save(verification("otp_new"))
    assert replaced is not None
    assert replaced.attempts == 1
    await store.undo_save(verification("otp_new"), replaced)
    new = await store.reserve_attempt(AttemptTarget("app", verification_id="otp_new"), T0)
    assert new.outcome == "not_found"
    back = await store.reserve_attempt(AttemptTarget("app", phone=PHONE), T0)
    assert back.verification is not None
    assert (back.verification.id, back.verification.attempts) == ("otp_old", 2)


async def test_undo_save_keeps_a_later_start_in_its_place(store: OtpStore) -> None:
    await store.save(verification("otp_old"))
    replaced = await store.save(verification("otp_mine"))
    await store.save(verification("otp_later"))  # another start, whose SMS went out
    await store.undo_save(verification("otp_mine"), replaced)  # my SMS could not be queued
    result = await store.reserve_attempt(AttemptTarget("app", phone=PHONE), T0)
    assert result.verification is not None
    assert result.verification.id == "otp_later"
    for gone in ("otp_old", "otp_mine"):
        lookup = await store.reserve_attempt(AttemptTarget("app", verification_id=gone), T0)
        assert lookup.outcome == "not_found"


async def test_undo_save_of_a_replaced_verification_keeps_the_new_one(store: OtpStore) -> None:
    await store.save(verification("otp_old"))
    await store.save(verification("otp_new"))
    await store.undo_save(verification("otp_old"), None)  # e.g. a late rollback of the old one
    result = await store.reserve_attempt(AttemptTarget("app", phone=PHONE), T0)
    assert result.verification is not None
    assert result.verification.id == "otp_new"


# --- a placeholder when nothing is pending (checks by phone tell nothing) -----------------


async def test_a_placeholder_is_checked_when_nothing_is_pending(store: OtpStore) -> None:
    placeholder = verification("otp_placeholder", max_attempts=2)
    answers = [
        await store.reserve_attempt(AttemptTarget("app", phone=PHONE, placeholder=placeholder), T0)
        for _ in range(3)
    ]
    assert [a.outcome for a in answers] == ["reserved", "reserved", "exhausted"]
    assert [a.verification.attempts for a in answers[:2] if a.verification] == [1, 2]
    # By id it is a verification like any other (its id is never shown to anyone).
    by_id = await store.reserve_attempt(AttemptTarget("app", verification_id="otp_placeholder"), T0)
    assert by_id.outcome == "exhausted"
    # A start replaces it, as it would replace a real pending code.
    assert await store.save(verification("otp_real")) == answers[1].verification


async def test_a_placeholder_takes_the_place_of_an_expired_one_only(store: OtpStore) -> None:
    await store.save(verification("otp_real", expires_at=T0 + 600))
    placeholder = verification("otp_placeholder")
    live = await store.reserve_attempt(
        AttemptTarget("app", phone=PHONE, placeholder=placeholder), T0
    )
    assert live.verification is not None
    assert live.verification.id == "otp_real"
    expired = await store.reserve_attempt(
        AttemptTarget("app", phone=PHONE, placeholder=placeholder), T0 + 600
    )
    assert expired.verification is not None
    assert expired.verification.id == "otp_placeholder"
    # Never by id, and never for another client.
    by_id = await store.reserve_attempt(
        AttemptTarget("app", verification_id="otp_x", placeholder=placeholder), T0
    )
    assert by_id.outcome == "not_found"


async def test_concurrent_checks_by_phone_share_one_placeholder(store: OtpStore) -> None:
    async def attempt(n: int) -> str:
        await asyncio.sleep(0)
        result = await store.reserve_attempt(
            AttemptTarget(
                "app", phone=PHONE, placeholder=verification(f"otp_p{n}", max_attempts=5)
            ),
            T0,
        )
        return result.outcome

    outcomes = await asyncio.gather(*(attempt(n) for n in range(50)))
    assert outcomes.count("reserved") == 5
    assert outcomes.count("exhausted") == 45


# --- the embedded sweep -------------------------------------------------------------------


async def test_sweep_drops_expired_verifications_and_stale_send_history() -> None:
    store = MemoryOtpStore()  # Redis needs no sweeping: every key has a TTL
    await store.save(verification("otp_dead", phone=PHONE, expires_at=T0 + 100))
    await store.save(verification("otp_live", phone=OTHER_PHONE, expires_at=T0 + 1000))
    await store.reserve_send(PHONE, T0, POLICY)  # stale by T0 + 700
    await store.reserve_send(OTHER_PHONE, T0 + 650, POLICY)  # still in the window

    assert store.sweep(T0 + 700, POLICY) == 2  # one verification, one history

    dead = await store.reserve_attempt(AttemptTarget("app", verification_id="otp_dead"), T0)
    assert dead.outcome == "not_found"
    live = await store.reserve_attempt(AttemptTarget("app", verification_id="otp_live"), T0 + 700)
    assert live.outcome == "reserved"
    # The kept history still enforces the cooldown.
    assert not (await store.reserve_send(OTHER_PHONE, T0 + 660, POLICY)).allowed
    assert store.sweep(T0 + 700, POLICY) == 0


async def test_sweep_keeps_a_send_history_as_long_as_the_daily_cap_needs_it() -> None:
    store = MemoryOtpStore()
    policy = SendPolicy(max_sends=5, window_s=600, cooldown_s=0, daily_max=5)
    for n in range(5):
        assert (await store.reserve_send(PHONE, T0 + n, policy)).allowed
    assert store.sweep(T0 + 3600, policy) == 0  # an hour on: the day still counts them
    assert (await store.reserve_send(PHONE, T0 + 3600, policy)).reason == "daily-cap"
    assert store.sweep(T0 + 4 + 86_400, policy) == 1  # a day after the last: gone


# --- Redis' clock, not the replica's ------------------------------------------------------


async def test_redis_store_judges_sends_and_expiry_on_redis_clock(redis_url: str) -> None:
    # Two replicas whose clocks are an hour apart see the same sends and the same expiry:
    # the scripts read Redis' TIME, the `now` a replica passes is not trusted.
    redis = Redis.from_url(redis_url)
    store = RedisOtpStore(redis, RedisKeys("skew:"))
    now = time.time()
    first = await store.reserve_send(PHONE, now, POLICY)
    assert first.allowed
    # An hour later by its own clock, a second replica is still inside the 30 s cooldown.
    again = await store.reserve_send(PHONE, now + 3600, POLICY)
    assert not again.allowed
    assert again.reason == "resend-cooldown"
    # The recorded send is released by the time the store reported, whatever clock asks.
    await store.release_send(PHONE, first.sent_at)
    assert (await store.reserve_send(PHONE, now - 3600, POLICY)).allowed
    # Made to live 600 s: neither a replica far ahead nor one far behind changes that.
    await store.save(verification(expires_at=now + 600))
    ahead = await store.reserve_attempt(AttemptTarget("app", verification_id="otp_1"), now + 3600)
    assert ahead.outcome == "reserved"
    await store.save(verification("otp_2", phone=OTHER_PHONE, expires_at=now - 1))
    behind = await store.reserve_attempt(AttemptTarget("app", verification_id="otp_2"), now - 3600)
    assert behind.outcome == "not_found"
    await redis.aclose()
