"""DynamoDB (dynalite) down for a few seconds under load: SMS keep flowing, audit events go to the
spool and are replayed once it is back, so every recorded event ends up in the table
(read with plain aiobotocore) and every message's trail is complete."""

from __future__ import annotations

import asyncio

import pytest

from testkit.scenarios import FaultResult, dynamodb_outage

pytestmark = pytest.mark.timeout(180)

RATE = 100.0
BEFORE_S = 3.0
# Long enough for many flushes (every 0.2 s) to fail and spool, and for the replay to back
# off more than once (0.25 s doubling); a failed write fails at once (connection refused),
# so a longer outage only adds events, not cases. `bench.faults_table` runs 30 s.
OUTAGE_S = 5.0
AFTER_S = 3.0


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> FaultResult:
    return asyncio.run(
        dynamodb_outage(
            tmp_path_factory.mktemp("dynamodb-outage"),
            rate=RATE,
            before_s=BEFORE_S,
            outage_s=OUTAGE_S,
            after_s=AFTER_S,
        )
    )


def test_sms_keep_flowing(result: FaultResult) -> None:
    # Five sixths of the load offered, as 3000 of 3600 were with a 30 s outage.
    assert result.accepted >= RATE * (BEFORE_S + OUTAGE_S + AFTER_S) * 5 / 6
    assert result.lost == 0, result.lost_keys[:20]


def test_the_outage_went_through_the_spool(result: FaultResult) -> None:
    assert result.details["store_failures"] >= 1, result.details
    assert result.details["spooled"] > 0, result.details
    assert result.details["replayed"] == result.details["spooled"], result.details
    assert result.recover_s is not None, "the spool was never replayed"


def test_no_audit_event_is_lost(result: FaultResult) -> None:
    assert result.audit_lost == 0, result.details
    assert result.details["lifecycle_gaps"] == 0, result.details
