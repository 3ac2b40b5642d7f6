"""Fault injection settings of the fake provider (`bench.fake_provider`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Faults:
    """Injected misbehaviour, decided per request.

    `hang`, `throttle_429` and `fail_5xx` are probabilities of mutually exclusive
    outcomes drawn from one random number, so each is exact and their sum is at most 1.
    Replaced whole on change, so a request never sees half an update.
    """

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    fail_5xx: float = 0.0
    throttle_429: float = 0.0
    # HTTP's Retry-After takes whole seconds.
    retry_after_s: int = 1
    hang: float = 0.0
    reject_numbers: frozenset[str] = frozenset()

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
    # bool is an int subclass; `true` is never a sensible latency or probability.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if name == "retry_after_s":
        if value != int(value):
            raise ValueError(f"retry_after_s must be whole seconds, got {value!r}")
        return int(value)
    return float(value)
