"""What every audit store offers: batched writes and the two queries the API needs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from smsgw.audit.events import AuditEvent, EventKind

__all__ = ["AuditRecorder", "AuditStore", "RecipientPage", "RecipientQuery"]


class AuditRecorder(Protocol):
    """What the API, OTP service and dispatcher write events to; never blocks them."""

    def record(
        self, message_id: str, kind: EventKind, at: float | None = None, **details: Any
    ) -> None:
        """An event happening now (or at `at`, epoch seconds)."""

    def accepted(self, message_id: str, at: float, **details: Any) -> None:
        """A message validated at `at` entered the queue: its details, then `queued` (now)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipientQuery:
    """One page of the messages `client` sent to `to`, accepted within [since, until].

    `cursor` is a page's `cursor` from before (an opaque string; a bad one raises
    ValueError). One value rather than a keyword list, so every store reads the same shape.
    """

    client: str
    to: str
    limit: int
    since: float | None = None
    until: float | None = None
    cursor: str | None = None

    @property
    def rcpt(self) -> str:
        """The stores' recipient key: one client's messages never share it with another's."""
        return f"{self.client}|{self.to}"


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

    async def recipient_messages(self, query: RecipientQuery) -> RecipientPage:
        """The messages `query` asks for, newest first."""

    async def close(self) -> None: ...
