"""How many queue workers a backlog needs: a pure function, and cooldowns around it.

desired = clamp(max(ceil(backlog / backlog_per_worker),
                    ceil(backlog / (worker_rate x drain_s))), min, max)
plus one more than now when the oldest waiting message is older than max_age_s (the
backlog is small but nothing moves: a stuck or too slow fleet).

`Scaler` applies it with cooldowns so the fleet does not flap: up at most once per
up_cooldown_s, down only after the lower number was wanted for down_cooldown_s, and never
below min or above max. `smsgw supervise` follows its decisions; both the supervisor's and
every replica's `/metrics` publish the plain `desired_workers` as smsgw_desired_workers
(`desired_workers_gauge`), for an external autoscaler.

A leaf on purpose (settings and prometheus_client only): the API's metrics and the
supervisor both use it, and neither should pull in the other.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Gauge

from smsgw.settings import ScalingSettings

__all__ = ["Decision", "Scaler", "desired_workers", "desired_workers_gauge", "pending_work"]


def desired_workers(
    settings: ScalingSettings, backlog: int, oldest_age_s: float, current: int
) -> int:
    wanted = max(
        math.ceil(backlog / settings.backlog_per_worker),
        math.ceil(backlog / (settings.worker_rate * settings.drain_s)),
    )
    if backlog > 0 and oldest_age_s > settings.max_age_s:
        wanted = max(wanted, current + 1)
    return min(max(wanted, settings.min_workers), settings.max_workers)


def desired_workers_gauge(registry: CollectorRegistry) -> Gauge:
    return Gauge(
        "smsgw_desired_workers",
        "Queue workers the scaling policy asks for now (before cooldowns; for an external "
        "autoscaler)",
        registry=registry,
    )


class _QueuePart(Protocol):
    """A part of the queue's backlog (smsgw.queue.Backlog)."""

    @property
    def part(self) -> str: ...
    @property
    def messages(self) -> int: ...
    @property
    def oldest_age_s(self) -> float: ...


def pending_work(parts: Iterable[_QueuePart]) -> tuple[int, float]:
    """The backlog the policy sizes the fleet for: unfinished messages of the high and
    normal streams, and the age of the oldest (delayed retries are not due yet)."""
    due = [part for part in parts if part.part != "delayed"]
    return sum(p.messages for p in due), max((p.oldest_age_s for p in due), default=0.0)


@dataclass(frozen=True, slots=True)
class Decision:
    workers: int  # how many to run now
    desired: int  # what the policy alone asks for
    reason: str  # scale_up | scale_down | hold | up_cooldown | down_cooldown


class Scaler:
    """The policy with cooldowns; one per supervisor. Times are time.monotonic() seconds."""

    def __init__(self, settings: ScalingSettings, current: int) -> None:
        self.settings = settings
        self.current = min(max(current, settings.min_workers), settings.max_workers)
        self._last_up = -math.inf
        self._lower_since: float | None = None

    def decide(self, backlog: int, oldest_age_s: float, now: float) -> Decision:
        settings = self.settings
        desired = desired_workers(settings, backlog, oldest_age_s, self.current)
        if desired > self.current:
            self._lower_since = None
            if now - self._last_up < settings.up_cooldown_s:
                return Decision(self.current, desired, "up_cooldown")
            self._last_up = now
            self.current = desired
            return Decision(desired, desired, "scale_up")
        if desired < self.current:
            if self._lower_since is None:
                self._lower_since = now
            if now - self._lower_since < settings.down_cooldown_s:
                return Decision(self.current, desired, "down_cooldown")
            self._lower_since = None
            self.current = desired
            return Decision(desired, desired, "scale_down")
        self._lower_since = None
        return Decision(self.current, desired, "hold")
