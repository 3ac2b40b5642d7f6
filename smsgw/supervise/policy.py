"""How many queue workers a backlog needs: a pure function, and cooldowns around it.

desired = clamp(max(ceil(backlog / backlog_per_worker),
                    ceil(backlog / (worker_rate x drain_s))), min, max)
plus one more than now when the oldest waiting message is older than max_age_s (the
backlog is small but nothing moves: a stuck or too slow fleet).

`Scaler` applies it with cooldowns so the fleet does not flap: up at most once per
up_cooldown_s, down only after the lower number was wanted for down_cooldown_s, and never
below min or above max. `smsgw supervise` follows its decisions; `/metrics` publishes the
plain `desired_workers` as smsgw_desired_workers for an external autoscaler.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from smsgw.settings import ScalingSettings

__all__ = ["Decision", "Scaler", "ScalingPolicy", "desired_workers"]


# The policy is its settings ([scaling]): validated once, at start-up, like every section.
ScalingPolicy = ScalingSettings


def desired_workers(policy: ScalingPolicy, backlog: int, oldest_age_s: float, current: int) -> int:
    wanted = max(
        math.ceil(backlog / policy.backlog_per_worker),
        math.ceil(backlog / (policy.worker_rate * policy.drain_s)),
    )
    if backlog > 0 and oldest_age_s > policy.max_age_s:
        wanted = max(wanted, current + 1)
    return min(max(wanted, policy.min_workers), policy.max_workers)


@dataclass(frozen=True, slots=True)
class Decision:
    workers: int  # how many to run now
    desired: int  # what the policy alone asks for
    reason: str  # scale_up | scale_down | hold | up_cooldown | down_cooldown


class Scaler:
    """The policy with cooldowns; one per supervisor. Times are time.monotonic() seconds."""

    def __init__(self, policy: ScalingPolicy, current: int) -> None:
        self.policy = policy
        self.current = min(max(current, policy.min_workers), policy.max_workers)
        self._last_up = -math.inf
        self._lower_since: float | None = None

    def decide(self, backlog: int, oldest_age_s: float, now: float) -> Decision:
        desired = desired_workers(self.policy, backlog, oldest_age_s, self.current)
        if desired > self.current:
            self._lower_since = None
            if now - self._last_up < self.policy.up_cooldown_s:
                return Decision(self.current, desired, "up_cooldown")
            self._last_up = now
            self.current = desired
            return Decision(desired, desired, "scale_up")
        if desired < self.current:
            if self._lower_since is None:
                self._lower_since = now
            if now - self._lower_since < self.policy.down_cooldown_s:
                return Decision(self.current, desired, "down_cooldown")
            self._lower_since = None
            self.current = desired
            return Decision(desired, desired, "scale_down")
        self._lower_since = None
        return Decision(self.current, desired, "hold")
