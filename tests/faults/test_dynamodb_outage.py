"""DynamoDB (dynalite) down for 30 s under load: SMS keep flowing, audit events go to the
spool and are replayed once it is back, so every recorded event ends up in the table
(read with plain aiobotocore) and every message's trail is complete."""

from __future__ import annotations

import asyncio

import pytest

from tests.faults.scenarios import FaultResult, dynamodb_outage

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> FaultResult:
    return asyncio.run(
        dynamodb_outage(
            tmp_path_factory.mktemp("dynamodb-outage"),
            rate=100.0,
            before_s=3.0,
            outage_s=30.0,
            after_s=3.0,
        )
    )


def test_sms_keep_flowing(result: FaultResult) -> None:
    assert result.accepted >= 3000
    assert result.lost == 0, result.lost_keys[:20]


def test_the_outage_went_through_the_spool(result: FaultResult) -> None:
    assert result.details["store_failures"] >= 1, result.details
    assert result.details["spooled"] > 0, result.details
    assert result.details["replayed"] == result.details["spooled"], result.details
    assert result.recover_s is not None, "the spool was never replayed"


def test_no_audit_event_is_lost(result: FaultResult) -> None:
    assert result.audit_lost == 0, result.details
    assert result.details["lifecycle_gaps"] == 0, result.details
