"""The dispatcher's Prometheus instruments: outcomes, provider latency, limiter waits.

Labels are provider names and fixed outcome words only: never a number, a body or a code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from smsgw.metric_children import LabelledChildren

__all__ = ["DispatchMetrics", "ProviderInstruments"]

# From a fast provider on loopback (ms) to one at its timeout (s).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# From an idle provider (no wait) to a deep backlog behind its rate.
_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0)
# From a write right after the slot (tens of µs) to a loop late enough to bunch sends.
_DECISION_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
)


@dataclass(frozen=True, slots=True)
class ProviderInstruments:
    """One provider's labelled children, looked up once: `labels()` takes a lock and
    builds a key on every call, which per message cost as much as sending it."""

    decision_delay: Any
    limiter_wait: Any
    send_seconds: Any
    sent: Any


class DispatchMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "smsgw_messages",
            "Message outcomes by provider: sent, failed, rejected, expired, retry, throttled",
            ["provider", "outcome"],
            registry=registry,
        )
        self._outcomes = LabelledChildren(self.messages)
        self.send_seconds = Histogram(
            "smsgw_provider_send_seconds",
            "Time a provider took to answer a send",
            ["provider"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.limiter_wait = Histogram(
            "smsgw_limiter_wait_seconds",
            "Time a send waited for its provider's rate limiter",
            ["provider"],
            buckets=_WAIT_BUCKETS,
            registry=registry,
        )

        self.decision_delay = Histogram(
            "smsgw_send_decision_delay_seconds",
            "From the rate-limiter slot to the request written to the socket: the jitter the "
            "provider's sliding window sees, and the margin limiter.pace must leave for it",
            ["provider"],
            buckets=_DECISION_BUCKETS,
            registry=registry,
        )

    def outcome(self, provider: str | None, outcome: str) -> None:
        self._outcomes(provider or "none", outcome).inc()

    def for_provider(self, provider: str) -> ProviderInstruments:
        return ProviderInstruments(
            decision_delay=self.decision_delay.labels(provider),
            limiter_wait=self.limiter_wait.labels(provider),
            send_seconds=self.send_seconds.labels(provider),
            sent=self._outcomes(provider, "sent"),
        )
