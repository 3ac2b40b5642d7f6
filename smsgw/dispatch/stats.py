"""The dispatcher's counters, shared by the dispatcher and its lanes."""

from __future__ import annotations

from dataclasses import dataclass

from smsgw.counters import Counters

__all__ = ["DispatchStats"]


@dataclass(slots=True)
class DispatchStats(Counters):
    """Counters since start; read by health checks, tests and benchmarks."""

    sent: int = 0
    failed: int = 0
    expired: int = 0
    retried: int = 0
    throttled: int = 0
    # Retries after an answer that may have meant "sent": each may be a duplicate SMS.
    possible_duplicates: int = 0
    # Limiter slots dropped because the loop reached them too late to use them safely.
    late_slots: int = 0
    # Redelivered copies (a replica died mid-send) found already sent and not sent again.
    duplicates_skipped: int = 0
    # Messages put back because every provider serving them had an open circuit.
    circuit_waits: int = 0
    # Messages handed back for a moment because their provider's lane was overfull.
    lane_full_waits: int = 0
    # Requests the provider refused as too many open at once (429 / 20429): re-sent.
    concurrency_refusals: int = 0
