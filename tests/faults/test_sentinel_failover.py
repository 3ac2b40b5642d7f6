"""The Redis primary SIGKILLed under load, Sentinel promoting a replica: two `smsgw serve`
replicas follow it without a restart, keep to the provider's rate in every sliding second
across it, and lose no accepted message; a copy the new primary hands out again is not sent
twice; a coordinated failover (SENTINEL FAILOVER) keeps the rate too. With the replication
cut just before the kill, min_replicas_ack decides whether
what the old primary alone had was accepted (and lost) or refused (and retried)."""

from __future__ import annotations

import asyncio

import pytest

from testkit.scenarios import FaultResult, sentinel_failover

PROVIDER_RATE = 200.0

pytestmark = pytest.mark.timeout(150)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> FaultResult:
    return asyncio.run(
        sentinel_failover(
            tmp_path_factory.mktemp("sentinel-failover"),
            replica_acks=1,
            redis_replicas=1,  # so the promoted primary has none: acks wait for none then
            otp_per_tick=1,  # and 10 OTP starts a second: their state is in Redis too
            rate=300.0,
            provider_rate=PROVIDER_RATE,
            seconds=7.0,
            kill_at=3.0,
        )
    )


@pytest.fixture(scope="module", params=[0, 1], ids=["acks-0", "acks-1"])
def lagging(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> FaultResult:
    return asyncio.run(
        sentinel_failover(
            tmp_path_factory.mktemp("sentinel-lagging"),
            replica_acks=request.param,
            rate=300.0,
            provider_rate=PROVIDER_RATE,
            seconds=6.0,
            kill_at=3.0,
            replication_stall_s=0.3,
        )
    )


@pytest.fixture(scope="module")
def coordinated(tmp_path_factory: pytest.TempPathFactory) -> FaultResult:
    return asyncio.run(
        sentinel_failover(
            tmp_path_factory.mktemp("sentinel-coordinated"),
            replica_acks=1,
            rate=600.0,
            provider_rate=2 * PROVIDER_RATE,
            seconds=7.0,
            kill_at=2.5,
            coordinated=True,
        )
    )


def test_no_accepted_message_is_lost_or_sent_twice(result: FaultResult) -> None:
    assert result.accepted > 0
    assert result.details["otps_accepted"] > 0
    assert result.lost == 0, result.lost_keys[:20]
    assert result.duplicated <= result.possible_duplicates, result.details
    assert result.audit_lost == 0, result.details
    assert result.details["lifecycle_gaps"] == 0, result.details


def test_the_gateway_answers_again_soon_after_the_failover(result: FaultResult) -> None:
    assert result.details["replicas_alive"]
    assert result.details["primary_changes"] == 2  # each replica saw it, neither restarted
    assert set(result.details["statuses"]) <= {202, 503}, result.details
    # Answering (202) again within the failover plus 2 s; sending again once the
    # limiter's hold after the change (look-ahead + 2 s) has run.
    assert result.details["answering_again_s"] <= result.details["failover_s"] + 2.0, result
    assert result.recover_s is not None, result
    assert result.recover_s <= result.details["failover_s"] + 3.0, result
    # Accepted without a replica's ack once none was left to promote, and counted.
    assert result.details["unreplicated_puts"] > 0, result.details


def test_the_provider_rate_holds_across_the_failover(result: FaultResult) -> None:
    assert result.details["max_sends_in_1s"] <= PROVIDER_RATE, result.details


def test_what_only_the_old_primary_had_is_refused_with_acks_and_lost_without(
    lagging: FaultResult,
) -> None:
    acks = lagging.fault.rsplit(" ", 1)[-1]
    if acks == "1":
        assert lagging.lost == 0, lagging.lost_keys[:20]
    else:
        # Accepted (202) from the primary alone, then gone with it: the point of acks.
        assert lagging.lost > 0, lagging
    # Copies of what was read or finished during the cut are skipped, not sent again.
    assert lagging.duplicated <= lagging.possible_duplicates, lagging.details
    assert lagging.details["max_sends_in_1s"] <= PROVIDER_RATE, lagging.details


def test_a_coordinated_failover_keeps_the_rate_too(coordinated: FaultResult) -> None:
    """SENTINEL FAILOVER: the old primary goes on taking writes until it is demoted, from
    replicas that have not seen the change yet (and from connections still open to it):
    without the longer hold and closing those connections, 482-613 arrivals came in one
    second at rate 400."""
    assert coordinated.details["max_sends_in_1s"] <= 2 * PROVIDER_RATE, coordinated.details
    assert coordinated.duplicated <= coordinated.possible_duplicates, coordinated.details
    # Not asserted: lost. Writes the old primary takes between the promotion and its own
    # demotion are dropped when it resyncs (0 and 8 of ~3000 in two runs): a known gap.
