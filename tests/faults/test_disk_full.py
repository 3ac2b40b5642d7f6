"""The disk under the SQLite audit and its spool fills up under load (a small tmpfs, filled
to the last byte, then freed): a clear error in the log, SMS unaffected, and no event lost
silently: held in memory while nothing can be written, stored once space is back."""

from __future__ import annotations

import asyncio

import pytest

from testkit.scenarios import FaultResult, disk_full

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> FaultResult:
    try:
        outcome = asyncio.run(
            disk_full(tmp_path_factory.mktemp("disk-full"), rate=100.0, full_s=6.0)
        )
    except PermissionError as exc:  # mounting a tmpfs needs root (CI and scripts/test are)
        pytest.skip(str(exc))
    return outcome


def test_a_clear_error_names_the_full_disk(result: FaultResult) -> None:
    errors = result.details["errors_logged"]
    assert any("No space left on device" in e or "disk is full" in e for e in errors), errors
    assert result.details["spool_failures"] >= 1, result.details


def test_sms_are_unaffected(result: FaultResult) -> None:
    assert result.accepted >= 1000
    assert result.lost == 0, result.lost_keys[:20]


def test_no_audit_event_is_lost(result: FaultResult) -> None:
    assert result.recover_s is not None, "the audit never caught up after space came back"
    assert result.audit_lost == 0, result.details
    assert result.details["lifecycle_gaps"] == 0, result.details
