"""Redis restarted under load (append-only file, as production runs it): two replicas keep
to the provider's rate in every sliding second, answer 503 only while Redis is away, recover
without a restart of their own, and lose no accepted message."""

from __future__ import annotations

import asyncio

import pytest

from testkit.scenarios import FaultResult, redis_restart

PROVIDER_RATE = 200.0

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> FaultResult:
    # Offered at twice the provider's rate: a backlog sits in the Redis stream at the restart.
    return asyncio.run(
        redis_restart(
            tmp_path_factory.mktemp("redis-restart"),
            persistent=True,
            rate=2 * PROVIDER_RATE,
            provider_rate=PROVIDER_RATE,
            seconds=6.0,
            restart_at=3.0,
            down_s=1.0,
        )
    )


def test_the_provider_rate_holds_in_every_sliding_second(result: FaultResult) -> None:
    # The limiter paces at 99 % of the rate; the rest absorbs the jitter between our clock
    # and the provider's, which the fake's arrival stamps carry too.
    assert result.details["max_sends_in_1s"] <= PROVIDER_RATE * 1.01, result


def test_no_accepted_message_is_lost(result: FaultResult) -> None:
    assert result.accepted > 0
    assert result.lost == 0, result.lost_keys[:20]
    assert result.duplicated == 0, result


def test_refusals_are_503_while_redis_is_away(result: FaultResult) -> None:
    assert set(result.details["statuses"]) <= {202, 503}, result.details
    assert result.refused > 0  # Redis really was away under load


def test_replicas_recover_without_a_restart(result: FaultResult) -> None:
    assert result.details["replicas_alive"]
    assert result.recover_s is not None, "a replica never accepted again, or nothing was sent"
    assert result.recover_s <= 5.0, result


def test_no_audit_event_is_lost(result: FaultResult) -> None:
    assert result.audit_lost == 0, result.details
    assert result.details["lifecycle_gaps"] == 0, result.details
