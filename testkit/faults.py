"""Fault injection settings of the fake provider (`testkit.fake_provider`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

JITTER_DISTRIBUTIONS: Final = ("uniform", "normal")


@dataclass(frozen=True, slots=True)
class Faults:
    """Injected misbehaviour and a real provider's habits, decided per request.

    Each answer waits its own delay: `latency_ms` plus a draw of `jitter_dist` with
    `jitter_ms` as its spread, clipped at 0 ms. "uniform" draws from
    [-jitter_ms, +jitter_ms] (250 ± 80 means 170..330 ms); "normal" takes `jitter_ms` as
    the standard deviation. Clipping raises the mean when the spread reaches below 0.

    `hang`, `throttle_429` and `fail_5xx` are probabilities of mutually exclusive
    outcomes drawn from one random number, so each is exact and their sum is at most 1.

    `max_concurrent` is Twilio's per-account limit on open REST requests: a request
    arriving while that many are open is answered 429/20429 at once (None: no limit).
    `limit_segments` is the contracted segments per second the fake's stats count
    arrivals over (None: not counted); it does not change any answer.

    Replaced whole on change, so a request never sees half an update.
    """

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    jitter_dist: str = "uniform"
    fail_5xx: float = 0.0
    throttle_429: float = 0.0
    # HTTP's Retry-After takes whole seconds.
    retry_after_s: int = 1
    hang: float = 0.0
    reject_numbers: frozenset[str] = frozenset()
    max_concurrent: int | None = None
    limit_segments: int | None = None

    def __post_init__(self) -> None:
        for name in ("latency_ms", "jitter_ms"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("fail_5xx", "throttle_429", "hang"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        if self.hang + self.throttle_429 + self.fail_5xx > 1.0 + 1e-9:
            raise ValueError("hang + throttle_429 + fail_5xx must not exceed 1")
        if self.retry_after_s < 0:
            raise ValueError(f"retry_after_s must be >= 0, got {self.retry_after_s!r}")
        if self.jitter_dist not in JITTER_DISTRIBUTIONS:
            raise ValueError(f"jitter_dist must be one of {JITTER_DISTRIBUTIONS}")
        for name in ("max_concurrent", "limit_segments"):
            value = getattr(self, name)
            if value is not None and not value >= 1:
                raise ValueError(f"{name} must be an integer >= 1 or null, got {value!r}")

    def updated(self, changes: Mapping[str, object]) -> Faults:
        """A copy with `changes` (JSON-shaped values) applied; ValueError if invalid."""
        known = {field.name for field in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(unknown)}")
        coerced = {name: _coerce(name, value) for name, value in changes.items()}
        return dataclasses.replace(self, **coerced)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["reject_numbers"] = sorted(self.reject_numbers)
        return data


def _coerce(name: str, value: object) -> Any:
    """Check and convert one JSON value for a `Faults` field."""
    if name == "reject_numbers":
        if not isinstance(value, list | tuple | set | frozenset) or not all(
            isinstance(item, str) for item in value
        ):
            raise ValueError("reject_numbers must be a list of strings")
        return frozenset(value)
    if name == "jitter_dist":
        if not isinstance(value, str):
            raise ValueError(f"jitter_dist must be a string, got {value!r}")
        return value
    if name in ("max_concurrent", "limit_segments"):
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer or null, got {value!r}")
        return value
    # bool is an int subclass; `true` is never a sensible latency or probability.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if name == "retry_after_s":
        if value != int(value):
            raise ValueError(f"retry_after_s must be whole seconds, got {value!r}")
        return int(value)
    return float(value)
