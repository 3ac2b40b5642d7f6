"""The scaling policy: a pure function of backlog, age and fleet size, and cooldowns around it."""

from __future__ import annotations

import msgspec
import pytest

from smsgw.scaling import Decision, Scaler, desired_workers
from smsgw.settings import ScalingSettings, parse_settings

# Round numbers: 1000 messages per worker by backlog; 100/s x 20 s = 2000 by drain time.
POLICY = ScalingSettings(
    min_workers=1,
    max_workers=5,
    backlog_per_worker=1000,
    worker_rate=100.0,
    drain_s=20.0,
    max_age_s=30.0,
    up_cooldown_s=10.0,
    down_cooldown_s=60.0,
)


@pytest.mark.parametrize(
    ("backlog", "oldest_age_s", "current", "desired"),
    [
        # Nothing waits: the floor, whatever runs now.
        (0, 0.0, 1, 1),
        (0, 0.0, 4, 1),
        # An old message but no backlog (the stream emptied since): no bump.
        (0, 500.0, 2, 1),
        # One worker per backlog_per_worker, rounded up.
        (1, 0.0, 1, 1),
        (1000, 0.0, 1, 1),
        (1001, 0.0, 1, 2),
        (3000, 0.0, 1, 3),
        # Beyond the ceiling: clamped.
        (20_000, 0.0, 1, 5),
        (1_000_000, 0.0, 5, 5),
        # The oldest message waited longer than max_age_s: one more than now.
        (10, 31.0, 1, 2),
        (10, 31.0, 3, 4),
        (10, 30.0, 1, 1),  # exactly max_age_s is not older
        # ... but never beyond max, and never fewer than the backlog asks for.
        (10, 31.0, 5, 5),
        (4500, 31.0, 1, 5),
    ],
)
def test_desired_workers_table(
    backlog: int, oldest_age_s: float, current: int, desired: int
) -> None:
    assert desired_workers(POLICY, backlog, oldest_age_s, current) == desired


@pytest.mark.parametrize(
    ("backlog", "desired"),
    [
        # 200 per worker by backlog; the drain-time term (100/s x 20 s = 2000 per worker)
        # asks for fewer, so the larger, the backlog term, decides.
        (200, 1),
        (201, 2),
        (600, 3),
        (2000, 10),
    ],
)
def test_backlog_term_wins_when_it_asks_more(backlog: int, desired: int) -> None:
    policy = msgspec.structs.replace(POLICY, backlog_per_worker=200, max_workers=10)
    assert desired_workers(policy, backlog, 0.0, 1) == desired


@pytest.mark.parametrize(
    ("backlog", "desired"),
    [
        (100, 1),
        (500, 1),  # 500 / (10/s x 50 s) = 1
        (501, 2),
        (1500, 3),
        (2600, 6),
    ],
)
def test_drain_time_term(backlog: int, desired: int) -> None:
    # A slow worker (10/s) must drain its share within 50 s: 500 messages each, although
    # the backlog term alone (10_000 per worker) would be content with one.
    policy = msgspec.structs.replace(
        POLICY, backlog_per_worker=10_000, worker_rate=10.0, drain_s=50.0, max_workers=10
    )
    assert desired_workers(policy, backlog, 0.0, 1) == desired


def test_min_zero_allows_an_idle_fleet_of_none() -> None:
    policy = msgspec.structs.replace(POLICY, min_workers=0)
    assert desired_workers(policy, 0, 0.0, 3) == 0
    assert desired_workers(policy, 1, 0.0, 0) == 1


def test_min_floor_holds_under_any_input() -> None:
    policy = msgspec.structs.replace(POLICY, min_workers=3)
    assert desired_workers(policy, 0, 0.0, 5) == 3
    assert desired_workers(policy, 1500, 0.0, 3) == 3


def test_policy_is_the_scaling_section() -> None:
    settings = parse_settings({"scaling": {"min_workers": 2, "max_workers": 7}}, env={})
    policy = ScalingSettings(**msgspec.structs.asdict(settings.scaling))
    assert policy == settings.scaling
    assert isinstance(policy, ScalingSettings)
    with pytest.raises(ValueError, match="min_workers"):
        ScalingSettings(min_workers=3, max_workers=2)


# -- Scaler: cooldowns ------------------------------------------------------------------


def decisions(scaler: Scaler, steps: list[tuple[float, int, float]]) -> list[Decision]:
    return [scaler.decide(backlog, age, now) for now, backlog, age in steps]


def test_first_scale_up_is_immediate_and_jumps_to_desired() -> None:
    scaler = Scaler(POLICY, current=1)
    assert scaler.decide(4000, 0.0, now=100.0) == Decision(4, 4, "scale_up")
    assert scaler.current == 4


def test_up_at_most_once_per_up_cooldown() -> None:
    scaler = Scaler(POLICY, current=1)
    got = decisions(
        scaler,
        [
            (100.0, 2000, 0.0),  # up to 2
            (105.0, 4000, 0.0),  # wants 4, cooling down
            (109.9, 4000, 0.0),  # still
            (110.0, 4000, 0.0),  # 10 s after the last up: up to 4
            (111.0, 5000, 0.0),  # wants 5: cooling down again
        ],
    )
    assert got == [
        Decision(2, 2, "scale_up"),
        Decision(2, 4, "up_cooldown"),
        Decision(2, 4, "up_cooldown"),
        Decision(4, 4, "scale_up"),
        Decision(4, 5, "up_cooldown"),
    ]


def test_down_only_after_wanting_fewer_for_down_cooldown() -> None:
    scaler = Scaler(POLICY, current=4)
    got = decisions(
        scaler,
        [
            (0.0, 0, 0.0),  # wants 1: the lower number is first wanted now
            (30.0, 0, 0.0),
            (59.9, 0, 0.0),
            (60.0, 0, 0.0),  # wanted for 60 s: down, straight to what is wanted
            (61.0, 0, 0.0),
        ],
    )
    assert got == [
        Decision(4, 1, "down_cooldown"),
        Decision(4, 1, "down_cooldown"),
        Decision(4, 1, "down_cooldown"),
        Decision(1, 1, "scale_down"),
        Decision(1, 1, "hold"),
    ]


def test_a_return_to_the_current_size_restarts_the_down_cooldown() -> None:
    scaler = Scaler(POLICY, current=3)
    got = decisions(
        scaler,
        [
            (0.0, 0, 0.0),  # wants fewer from 0 s
            (50.0, 3000, 0.0),  # wants 3 again: the clock resets
            (55.0, 0, 0.0),  # wants fewer from 55 s
            (100.0, 0, 0.0),  # 45 s of it: not yet
            (115.0, 0, 0.0),  # 60 s: down
        ],
    )
    assert [d.reason for d in got] == [
        "down_cooldown",
        "hold",
        "down_cooldown",
        "down_cooldown",
        "scale_down",
    ]
    assert scaler.current == 1


def test_alternating_inputs_do_not_flap() -> None:
    # A backlog that comes and goes every few seconds: one step up, then the fleet holds.
    scaler = Scaler(POLICY, current=1)
    sizes = []
    for step in range(60):
        backlog = 2500 if step % 2 == 0 else 0
        sizes.append(scaler.decide(backlog, 0.0, now=step * 2.0).workers)
    assert sizes[0] == 3
    assert set(sizes) == {3}  # never down: fewer was never wanted for 60 s in a row


def test_wanting_more_cancels_a_pending_scale_down() -> None:
    scaler = Scaler(POLICY, current=3)
    assert scaler.decide(0, 0.0, now=0.0).reason == "down_cooldown"
    assert scaler.decide(5000, 0.0, now=59.0) == Decision(5, 5, "scale_up")
    # The old "fewer since 0 s" is forgotten: fewer must be wanted for 60 s from now on.
    assert scaler.decide(0, 0.0, now=61.0).reason == "down_cooldown"
    assert scaler.decide(0, 0.0, now=120.0).reason == "down_cooldown"
    assert scaler.decide(0, 0.0, now=121.0) == Decision(1, 1, "scale_down")


def test_age_bump_climbs_one_step_per_up_cooldown() -> None:
    # Little backlog, but the oldest message is stuck: one more worker each cooldown.
    scaler = Scaler(POLICY, current=1)
    sizes = [scaler.decide(50, 45.0, now=t).workers for t in (0.0, 5.0, 10.0, 15.0, 20.0, 30.0)]
    assert sizes == [2, 2, 3, 3, 4, 5]
    assert scaler.decide(50, 45.0, now=40.0) == Decision(5, 5, "hold")


def test_zero_cooldowns_follow_the_policy_at_once() -> None:
    policy = msgspec.structs.replace(POLICY, up_cooldown_s=0.0, down_cooldown_s=0.0)
    scaler = Scaler(policy, current=1)
    got = [scaler.decide(b, 0.0, now=1.0).workers for b in (3000, 1000, 5000, 0)]
    assert got == [3, 1, 5, 1]


def test_scaler_clamps_its_starting_size() -> None:
    assert Scaler(POLICY, current=0).current == 1
    assert Scaler(POLICY, current=9).current == 5
