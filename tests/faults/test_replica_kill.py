"""A replica SIGKILLed under load while both replicas take batches (Redis queue).

Every message the gateway accepted reaches the provider at least once; the messages the dead
replica held are taken over by the survivor after the visibility timeout; a copy sent twice
can only be one the survivor took over, and smsgw must count it as a possible duplicate.
"""

from __future__ import annotations

import asyncio

import pytest

from testkit.scenarios import FaultResult, replica_sigkill

RATE = 300.0
VISIBILITY_S = 2.0
FLUSH_INTERVAL_S = 0.2

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> FaultResult:
    # 200 ms provider latency: the killed replica always has sends in flight.
    return asyncio.run(
        replica_sigkill(
            tmp_path_factory.mktemp("replica-kill"),
            rate=RATE,
            seconds=6.0,
            kill_at=2.5,
            visibility_timeout_s=VISIBILITY_S,
            latency_ms=200.0,
        )
    )


def test_no_accepted_message_is_lost(result: FaultResult) -> None:
    assert result.accepted >= RATE * 5
    assert result.lost == 0, result.lost_keys[:20]


def test_the_survivor_takes_over_what_the_dead_replica_held(result: FaultResult) -> None:
    assert result.details["claimed"] >= 1, result
    # Taken over after the visibility timeout (plus a claim interval), not much later.
    assert result.recover_s is not None
    assert result.recover_s <= VISIBILITY_S * 2 + 1.0, result


def test_only_taken_over_messages_are_sent_twice(result: FaultResult) -> None:
    assert result.duplicated <= result.details["claimed"], result


def test_every_duplicate_is_counted_by_smsgw(result: FaultResult) -> None:
    # The dead replica may have sent what it held (here: it had, the provider took them before
    # the kill): each copy the survivor sends again is a possible duplicate, and the metric
    # smsgw_dispatch_events_total{event="possible_duplicates"} must say so.
    assert result.duplicated <= result.possible_duplicates, (
        f"{result.duplicated} SMS sent twice after the kill, smsgw counted "
        f"{result.possible_duplicates} possible duplicates ({result.details})"
    )


def test_audit_loses_at_most_the_unflushed_events(result: FaultResult) -> None:
    # Documented: a crash loses at most the events of the last two flush intervals (the
    # buffer and a write younger than one interval): four per message at most, for the
    # dead replica's half of the load, plus a margin.
    bound = 4 * (RATE / 2) * (2 * FLUSH_INTERVAL_S + 0.1)
    assert result.audit_lost is not None
    assert result.audit_lost <= bound, result
