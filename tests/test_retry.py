"""The one backoff every retry loop uses: doubling to a cap, with the jitter each asks for."""

from __future__ import annotations

import random

import pytest

from smsgw.retry import Backoff, backoff_delay


def test_without_jitter_the_delay_doubles_up_to_the_cap() -> None:
    backoff = Backoff(1.0, 30.0, jitter="none")
    assert [backoff.next() for _ in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff.failures == 7
    backoff.reset()
    assert backoff.next() == 1.0


@pytest.mark.parametrize(("jitter", "low_share"), [("half", 0.5), ("full", 0.0)])
def test_jitter_stays_within_its_share_of_the_delay(jitter: str, low_share: float) -> None:
    rng = random.Random(7)
    for attempt in range(1, 10):
        ceiling = min(2.0, 0.05 * 2 ** (attempt - 1))
        delays = [backoff_delay(attempt, 0.05, 2.0, jitter, rng) for _ in range(200)]  # type: ignore[arg-type]
        assert all(low_share * ceiling <= d <= ceiling for d in delays)
        # Spread over the range, not one value: retries of a burst do not return in step.
        assert max(delays) - min(delays) > 0.8 * (1 - low_share) * ceiling
