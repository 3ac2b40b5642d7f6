"""What every audit store offers: batched writes and the two queries the API needs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from smsgw.audit.events import AuditEvent, EventKind

__all__ = ["AuditRecorder", "AuditStore", "RecipientPage"]


class AuditRecorder(Protocol):
    """What the API, OTP service and dispatcher write events to; never blocks them."""

    def record(
        self, message_id: str, kind: EventKind, at: float | None = None, **details: Any
    ) -> None:
        """An event happening now (or at `at`, epoch seconds)."""

    def accepted(self, message_id: str, at: float, **details: Any) -> None:
        """A message validated at `at` entered the queue: its details, then `queued` (now)."""


@dataclass(frozen=True, slots=True)
class RecipientPage:
    """Message ids to one recipient, newest first; `cursor` continues after the last one."""

    message_ids: list[str]
    cursor: str | None


class AuditStore(Protocol):
    async def migrate(self) -> None:
        """Create what the store needs (tables, indexes); harmless when it exists."""

    async def write(self, events: Sequence[AuditEvent]) -> None:
        """Store all of `events` or raise AuditUnavailable. Writing an event twice stores it
        once (same message id and key), so a failed batch can simply be written again."""

    async def events(self, message_id: str) -> list[AuditEvent]:
        """Every stored event of one message in key order; [] when unknown."""

    async def recipient_messages(
        self,
        *,
        client: str,
        to: str,
        since: float | None,
        until: float | None,
        limit: int,
        cursor: str | None,
    ) -> RecipientPage:
        """Messages `client` sent to `to`, accepted within [since, until], newest first.

        `cursor` is a page's `cursor` from before (an opaque string; a bad one raises
        ValueError).
        """

    async def close(self) -> None: ...
