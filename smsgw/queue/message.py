"""The unit of work that travels from the API through the queue to a provider."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Literal

from smsgw.segments import Encoding

__all__ = ["Message", "Priority", "new_message_id"]

Priority = Literal["high", "normal"]


def new_message_id() -> str:
    # Milliseconds since the epoch (48 bits), then 80 random bits, as 32 hex digits: laid out
    # like a UUIDv7, so ids made close in time sort close together and the audit's SQLite
    # index takes them near its end instead of at random pages (half the CPU per event,
    # bench/RESULTS.md), and still unguessable. Built by hand: a UUID object costs more than
    # the rest of enqueueing a message.
    return f"msg_{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


@dataclass(slots=True)
class Message:
    """One SMS. Created at the API after validation; the body is final (no templating later).

    `code_span` marks where an OTP code sits in `body`, so anything that stores or shows the
    body can mask it without knowing the code. `expires_at` (epoch seconds) is set for OTPs:
    an SMS still queued after it is dropped, never sent late.
    """

    to: str
    country: str
    body: str
    client: str
    priority: Priority = "normal"
    id: str = field(default_factory=new_message_id)
    client_ref: str | None = None
    expires_at: float | None = None
    code_span: tuple[int, int] | None = None
    created_at: float = field(default_factory=time.time)
    # As providers count the body (smsgw.segments), computed once at intake: the rate
    # limiter charges `segments`. 0: queued by a version that did not count them.
    segments: int = 0
    encoding: Encoding | None = None
    attempts: int = 0
    # Providers that failed this message, so a retry can prefer another one.
    failed_providers: tuple[str, ...] = ()

    def remaining_s(self, now: float) -> float | None:
        """Seconds of validity left, or None for messages that never expire."""
        return None if self.expires_at is None else self.expires_at - now

    def audit_details(self) -> dict[str, object]:
        """What the audit keeps of a message when it is accepted: never a code in clear."""
        return {
            "client": self.client,
            "to": self.to,
            "body": self.masked_body(),
            "client_ref": self.client_ref,
            "priority": self.priority,
            "expires_at": self.expires_at,
            "segments": self.segments,
            "encoding": self.encoding,
        }

    def masked_body(self) -> str:
        if self.code_span is None:
            return self.body
        start, end = self.code_span
        return self.body[:start] + "*" * (end - start) + self.body[end:]
