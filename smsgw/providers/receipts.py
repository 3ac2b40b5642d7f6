"""Delivery receipts, where a provider and the webhook meet.

POST|GET /v1/webhooks/{provider} (smsgw.api.webhooks) hands the request, as a
ReceiptRequest, to that provider's `parse_receipt`, which checks what the provider signs
and what our send tagged, then says which message moved to which status (or None for an
intermediate status that changes nothing). It refuses with ReceiptRefused: 400 for a
malformed or stale receipt, 403 for one not proven ours. The helpers below are the checks
every provider makes the same way.

Every receipt must carry the tag the send put beside our message id and the send time (see
smsgw.providers.receipt_tags): it proves we sent that message through that provider, so a
forger can neither make up an id nor name a real message, and a receipt cannot be moved to
another provider's webhook. A receipt older than the memory of seen receipts is refused as
stale, so a replay cannot be recorded again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from multidict import MultiMapping

from smsgw.errors import ReceiptRefused
from smsgw.providers.receipt_tags import ReceiptTagger
from smsgw.redis_keys import RECEIPT_TTL_S
from smsgw.validation import MESSAGE_ID, ascii_int

__all__ = [
    "Receipt",
    "ReceiptRequest",
    "ReceiptStatus",
    "TaggedSend",
    "bad_signature",
    "check_tag",
    "invalid_receipt",
    "our_message_id",
    "refuse_if_stale",
    "short_text",
]

ReceiptStatus = Literal["delivered", "undelivered", "failed"]


@dataclass(frozen=True, slots=True)
class TaggedSend:
    """A send whose tag check_tag() verified: a Receipt names one, and the webhook records
    it only for the provider the tag was made for."""

    provider: str
    message_id: str
    sent_at: int


@dataclass(frozen=True, slots=True)
class Receipt:
    send: TaggedSend
    status: ReceiptStatus
    provider_message_id: str | None
    reason: str | None

    @property
    def message_id(self) -> str:
        return self.send.message_id


class ReceiptRequest(Protocol):
    """A webhook request as the API read it (the body within its limit, no parser's own
    exceptions: malformed input is the API's 400 problem)."""

    @property
    def method(self) -> str: ...

    @property
    def content_type(self) -> str: ...

    @property
    def query(self) -> MultiMapping[str]: ...

    @property
    def query_string(self) -> str:
        """The query as sent (what a provider signs with the URL)."""
        ...

    def header(self, name: str) -> bytes | None:
        """The header's value exactly as sent, whatever its bytes."""
        ...

    async def form(self) -> MultiMapping[str] | None:
        """An application/x-www-form-urlencoded body (empty: an empty form); None when the
        body is another type or not a valid UTF-8 form."""
        ...

    async def json_object(self) -> dict[str, Any]:
        """A JSON object body; the API's 400 problem for anything else."""
        ...


def invalid_receipt(detail: str) -> ReceiptRefused:
    return ReceiptRefused(400, "invalid-receipt", "Invalid receipt", detail)


def bad_signature(detail: str) -> ReceiptRefused:
    return ReceiptRefused(403, "invalid-signature", "Invalid signature", detail)


def our_message_id(value: object) -> str:
    """`value` when it has the shape of our message ids; 400 otherwise."""
    if not isinstance(value, str) or not MESSAGE_ID.fullmatch(value):
        raise invalid_receipt("the receipt names no message of ours")
    return value


def check_tag(
    tagger: ReceiptTagger, provider: str, message_id: str, sent_at: object, tag: object
) -> TaggedSend:
    """The send, once the tag proves we sent `message_id` through `provider` at `sent_at`;
    403 otherwise (a forgery, another provider's receipt, or a key we no longer have). A
    genuine tag of a send older than the memory of seen receipts is stale (400)."""
    seconds = ascii_int(sent_at)
    if (
        seconds is None
        or not isinstance(tag, str)
        or not tagger.verify(provider, message_id, seconds, tag)
    ):
        raise ReceiptRefused(
            403,
            "invalid-receipt-tag",
            "Receipt not ours",
            "the receipt does not carry our tag for a message sent through this provider",
        )
    refuse_if_stale(seconds)
    return TaggedSend(provider, message_id, seconds)


def refuse_if_stale(sent_at: float | None) -> None:
    # Older than the memory of seen receipts: a replay could otherwise be recorded again.
    if sent_at is not None and time.time() - sent_at > RECEIPT_TTL_S:
        raise invalid_receipt("stale receipt: its message was sent too long ago")


def short_text(value: object) -> str | None:
    """A provider's id or code for the audit trail: a non-empty string, cut to 64 chars."""
    return value[:64] if isinstance(value, str) and value else None
