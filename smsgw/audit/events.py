"""Audit events: one record per transition in a message's life, and its summary.

Each event is keyed by (message_id, key). `key` orders a message's events by the time they
happened and is unique: 16 digits of microseconds since the epoch, ":", a short tag of the
replica that wrote it and its sequence number there. Across replicas the order follows the
replicas' clocks (kept by NTP, far closer than the milliseconds between two steps of one
message). The same event always keeps its key, so writing it twice (a spool replayed after
a crash) stores it once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import msgspec

__all__ = [
    "FINAL_STATUSES",
    "AuditEvent",
    "EventKind",
    "MessageSummary",
    "recipient_sort_key",
    "summarize",
]

EventKind = Literal[
    "accepted",
    "queued",
    "sending",
    "sent",
    "retry",
    "failed",
    "expired",
    "rejected",
    "delivered",
    "undelivered",
]

# The status each kind moves a message to; "retry" puts it back in the queue. "accepted"
# and "queued" change nothing: a message starts queued, and on a shared queue another
# replica may record "sending" before the accepting replica records "queued".
_STATUS_OF: dict[str, str | None] = {
    "accepted": None,
    "queued": None,
    "sending": "sending",
    "sent": "sent",
    "retry": "queued",
    "failed": "failed",
    "expired": "expired",
    "rejected": "rejected",
    "delivered": "delivered",
    "undelivered": "undelivered",
}
FINAL_STATUSES = frozenset({"delivered", "undelivered", "failed", "expired", "rejected"})


class AuditEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One transition. Only `accepted` carries the message's details (client, to, body)."""

    message_id: str
    key: str
    kind: EventKind
    at: float
    replica: str
    client: str | None = None
    to: str | None = None
    # The body as stored: an OTP's code is masked before it gets here.
    body: str | None = None
    client_ref: str | None = None
    priority: str | None = None
    expires_at: float | None = None
    # As providers count the body: what the message costs at a provider counting segments.
    segments: int | None = None
    encoding: str | None = None
    provider: str | None = None
    attempt: int | None = None
    provider_message_id: str | None = None
    reason: str | None = None
    # A retry after an answer that may have meant "sent": the SMS may arrive twice.
    possible_duplicate: bool = False


def recipient_sort_key(event: AuditEvent) -> str:
    """Sort key of an `accepted` event in the by-recipient index: time, then message id."""
    return f"{event.key}|{event.message_id}"


@dataclass(frozen=True, slots=True)
class MessageSummary:
    id: str
    # The event with the message's details (client, to, body); None if not (yet) stored.
    accepted: AuditEvent | None
    status: str
    provider: str | None
    attempts: int
    events: tuple[AuditEvent, ...]


def summarize(message_id: str, events: Iterable[AuditEvent]) -> MessageSummary:
    """Fold a message's events (in key order) into its current state.

    A final status never moves back: a late "sent" written after its delivery receipt, or a
    duplicate receipt, leaves "delivered" as it is.
    """
    ordered = tuple(sorted(events, key=lambda e: e.key))
    status = "queued"
    provider: str | None = None
    attempts = 0
    accepted = None
    for event in ordered:
        if event.kind == "accepted":
            accepted = event
        if event.kind == "sending":
            attempts += 1
        if event.provider is not None and event.kind in ("sending", "sent"):
            provider = event.provider
        moved_to = _STATUS_OF[event.kind]
        if moved_to is not None and status not in FINAL_STATUSES:
            status = moved_to
    return MessageSummary(message_id, accepted, status, provider, attempts, ordered)
