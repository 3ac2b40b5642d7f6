"""A provider that accepts connections and never answers (Twilio, of Twilio and Vonage):
messages and OTPs fail over to Vonage within the timeout + 1 s, the dispatcher keeps sending
to Vonage at the offered rate (hung sends do not starve it), nothing is lost, and each
timed-out send is counted as a possible duplicate."""

from __future__ import annotations

import asyncio

import pytest

from testkit.scenarios import FaultResult, hung_provider

TIMEOUT_S = 2.0
# Batches leave the client every 0.1 s, about half of each for Vonage before failover: a
# longer pause in Vonage's sends means the dispatcher had no free worker.
MAX_PAUSE_S = 0.25

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> FaultResult:
    return asyncio.run(
        hung_provider(
            tmp_path_factory.mktemp("hung-provider"),
            rate=200.0,
            seconds=10.0,
            fault_at=3.0,
            timeout_s=TIMEOUT_S,
            otp_per_tick=1,
        )
    )


def test_nothing_is_lost_or_sent_twice(result: FaultResult) -> None:
    assert result.accepted >= 1900
    assert result.lost == 0, result.lost_keys[:20]
    assert result.duplicated == 0, result


def test_failover_within_the_timeout_plus_one_second(result: FaultResult) -> None:
    assert result.details["hung_requests"] > 0, "the fault never bit"
    assert result.details["breaker_opened"] >= 1, result.details
    assert result.details["max_latency_s"] <= TIMEOUT_S + 1.0, result.details
    assert result.details["max_otp_latency_s"] <= TIMEOUT_S + 1.0, result.details


def test_hung_sends_do_not_starve_the_dispatcher(result: FaultResult) -> None:
    # Sends to Twilio hang for TIMEOUT_S each; the dispatcher's workers must not all end up
    # waiting on them while Vonage's share of the traffic waits in the queue.
    assert result.details["vonage_longest_pause_s"] <= MAX_PAUSE_S, result.details
    # And once failover had time to happen, Vonage gets the whole offered load every second.
    floor = 0.8 * result.details["offered_per_s"]
    assert result.details["vonage_min_per_s"] >= floor, result.details


def test_every_timed_out_send_is_counted_as_a_possible_duplicate(result: FaultResult) -> None:
    assert result.possible_duplicates == result.details["hung_requests"], result


def test_no_audit_event_is_lost(result: FaultResult) -> None:
    assert result.audit_lost == 0, result.details
    assert result.details["lifecycle_gaps"] == 0, result.details
