"""CircuitBreaker: scripted scenarios against a fake clock, one table row per behaviour."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from smsgw.dispatch.breaker import CircuitBreaker, Transition

pytestmark = pytest.mark.timeout(10)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Step:
    """At `at` seconds after the start, do `action`; then the state must be `state`.

    Actions: "ok", "fail", "release", "allow" / "would" (expect `answer`).
    """

    at: float
    action: str
    state: str
    answer: bool | None = None


def ok(at: float, state: str = "closed") -> Step:
    return Step(at, "ok", state)


def fail(at: float, state: str = "closed") -> Step:
    return Step(at, "fail", state)


def allow(at: float, answer: bool, state: str) -> Step:
    return Step(at, "allow", state, answer)


def would(at: float, answer: bool, state: str) -> Step:
    return Step(at, "would", state, answer)


def release(at: float, state: str) -> Step:
    return Step(at, "release", state)


# Defaults: only consecutive failures open (an error rate of 1 is never exceeded).
BASE: dict[str, Any] = {
    "failure_threshold": 3,
    "error_rate": 1.0,
    "window_s": 10.0,
    "min_calls": 1,
    "cooldown_s": 5.0,
}
BY_RATE: dict[str, Any] = {**BASE, "failure_threshold": 100, "error_rate": 0.5, "min_calls": 4}

SCENARIOS: dict[str, tuple[dict[str, Any], list[Step]]] = {
    "consecutive failures open": (BASE, [fail(0), fail(0.1), fail(0.2, "open")]),
    "a success resets the streak": (
        BASE,
        [fail(0), fail(1), ok(2), fail(3), fail(4), fail(5, "open")],
    ),
    "threshold of one opens at once": ({**BASE, "failure_threshold": 1}, [fail(0, "open")]),
    "rate must exceed, not reach, the limit": (
        BY_RATE,
        [ok(0), fail(1), ok(2), fail(3), fail(4, "open")],  # 2/4 stays, 3/5 opens
    ),
    "rate needs min_calls calls": (
        BY_RATE,
        [fail(0), fail(1), fail(2), ok(3), fail(4, "open")],  # 3/3 is not enough calls
    ),
    "successes alone never open": (BY_RATE, [ok(t) for t in range(20)]),
    "failures leave the window": (
        BY_RATE,
        [fail(0), fail(1), fail(2), ok(20), ok(21), ok(22), fail(23)],  # 1/4 in window
    ),
    "window edge: a failure counts for window_s and no longer": (
        {**BY_RATE, "min_calls": 2, "error_rate": 0.5},
        [fail(0), ok(9.99), fail(9.99, "open")],  # 2/3 within the window
    ),
    "window edge, just past it": (
        {**BY_RATE, "min_calls": 2, "error_rate": 0.5},
        [fail(0), ok(10.0), fail(10.0)],  # the first failure has left: 1/2
    ),
    "open refuses until the cooldown": (
        BASE,
        [
            fail(0),
            fail(0),
            fail(0, "open"),
            allow(4.99, False, "open"),
            allow(5.0, True, "half_open"),
        ],
    ),
    "half-open lets exactly one probe through": (
        BASE,
        [
            *[fail(0)] * 2,
            fail(0, "open"),
            allow(5, True, "half_open"),
            allow(5, False, "half_open"),
            allow(6, False, "half_open"),
        ],
    ),
    "a good probe closes": (
        BASE,
        [
            *[fail(0)] * 2,
            fail(0, "open"),
            allow(5, True, "half_open"),
            ok(5.5, "closed"),
            allow(5.6, True, "closed"),
            allow(5.6, True, "closed"),
        ],
    ),
    "a bad probe reopens for a whole cooldown": (
        BASE,
        [
            *[fail(0)] * 2,
            fail(0, "open"),
            allow(5, True, "half_open"),
            fail(6, "open"),
            allow(10.9, False, "open"),
            allow(11, True, "half_open"),
        ],
    ),
    "closing forgets the failures before the outage": (
        {**BY_RATE, "min_calls": 2},
        [
            fail(0),
            fail(0, "open"),
            allow(5, True, "half_open"),
            ok(5, "closed"),
            fail(5.1),  # 1 call in the fresh window: below min_calls
        ],
    ),
    "a released probe frees the slot (throttled probe)": (
        BASE,
        [
            *[fail(0)] * 2,
            fail(0, "open"),
            allow(5, True, "half_open"),
            release(5.1, "half_open"),
            allow(5.2, True, "half_open"),
            allow(5.3, False, "half_open"),
        ],
    ),
    "release while closed changes nothing": (BASE, [release(0, "closed"), fail(1), fail(2)]),
    "a probe that never reports is replaced after the probe timeout": (
        BASE,
        [
            *[fail(0)] * 2,
            fail(0, "open"),
            allow(5, True, "half_open"),
            allow(9.9, False, "half_open"),
            allow(10, True, "half_open"),
        ],
    ),
    "would_allow does not take the probe": (
        BASE,
        [
            *[fail(0)] * 2,
            fail(0, "open"),
            would(4, False, "open"),
            would(5, True, "open"),
            would(5, True, "open"),
            allow(5, True, "half_open"),
            would(5, False, "half_open"),
            release(5, "half_open"),
            would(5, True, "half_open"),
        ],
    ),
    "late answers while open change nothing": (
        BASE,
        [
            *[fail(0)] * 2,
            fail(0, "open"),
            fail(4, "open"),
            ok(4.5, "open"),
            allow(5, True, "half_open"),  # the cooldown still counts from the opening
        ],
    ),
}


@pytest.mark.parametrize(("params", "steps"), SCENARIOS.values(), ids=SCENARIOS.keys())
def test_scenario(params: dict[str, Any], steps: list[Step]) -> None:
    clock = FakeClock()
    start = clock.now
    breaker = CircuitBreaker(**params, clock=clock)
    for number, step in enumerate(steps):
        clock.now = start + step.at
        if step.action == "ok":
            breaker.record_success()
        elif step.action == "fail":
            breaker.record_failure()
        elif step.action == "release":
            breaker.release()
        else:
            method = breaker.allow if step.action == "allow" else breaker.would_allow
            assert method() is step.answer, f"step {number}: {step}"
        assert breaker.state == step.state, f"step {number}: {step}"


def record(breaker: CircuitBreaker, *, failed: bool) -> None:
    if failed:
        breaker.record_failure()
    else:
        breaker.record_success()


def test_transitions_are_reported_and_returned() -> None:
    clock = FakeClock()
    seen: list[Transition] = []
    breaker = CircuitBreaker(**BASE, clock=clock, on_transition=seen.append)

    assert breaker.record_failure() is None
    assert breaker.record_failure() is None
    opened = breaker.record_failure()
    clock.now += 5
    assert breaker.allow()
    reopened = breaker.record_failure()
    clock.now += 5
    assert breaker.allow()
    closed = breaker.record_success()

    assert seen == [
        Transition("closed", "open", "consecutive_failures"),
        Transition("open", "half_open", "cooldown_elapsed"),
        Transition("half_open", "open", "probe_failed"),
        Transition("open", "half_open", "cooldown_elapsed"),
        Transition("half_open", "closed", "probe_ok"),
    ]
    assert [opened, reopened, closed] == [seen[0], seen[2], seen[4]]
    assert breaker.record_success() is None  # no change, no transition


def test_error_rate_transition_names_its_reason() -> None:
    seen: list[Transition] = []
    breaker = CircuitBreaker(**BY_RATE, clock=FakeClock(), on_transition=seen.append)
    for failed in (False, True, False, True, True):
        record(breaker, failed=failed)
    assert seen == [Transition("closed", "open", "error_rate")]


def test_notify_like_rates_over_a_minute() -> None:
    """Notify's figure: about 50 errors in 60 s. Here: 2% errors at 20 calls/s never open,
    a burst to 60% errors opens within a second or two."""
    clock = FakeClock()
    breaker = CircuitBreaker(
        failure_threshold=1000,
        error_rate=0.05,
        window_s=60,
        min_calls=50,
        cooldown_s=10,
        clock=clock,
    )
    for i in range(20 * 120):  # two minutes
        clock.now += 0.05
        record(breaker, failed=i % 50 == 0)
        assert breaker.state == "closed"
    started = clock.now
    for i in range(20 * 60):
        clock.now += 0.05
        record(breaker, failed=i % 5 < 3)
        if breaker.state == "open":
            break
    assert breaker.state == "open"
    assert clock.now - started < 10


def test_default_probe_timeout_is_the_cooldown() -> None:
    breaker = CircuitBreaker(**BASE)
    assert breaker.probe_timeout_s == 5.0
    assert CircuitBreaker(**BASE, probe_timeout_s=1.5).probe_timeout_s == 1.5


def test_real_clock_by_default() -> None:
    breaker = CircuitBreaker(**{**BASE, "failure_threshold": 1, "cooldown_s": 0})
    breaker.record_failure()
    assert breaker.state == "open"
    assert breaker.allow()  # a zero cooldown has elapsed at once
    assert breaker.state == "half_open"


@pytest.mark.parametrize(
    "change",
    [
        {"failure_threshold": 0},
        {"error_rate": 0},
        {"error_rate": 1.5},
        {"window_s": 0},
        {"min_calls": 0},
        {"cooldown_s": -1},
    ],
)
def test_invalid_parameters_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(change))):
        CircuitBreaker(**{**BASE, **change})
