"""POST|GET /v1/webhooks/{provider}: delivery receipts, recorded in the audit trail.

Each send names our message id in what the provider echoes back (Twilio: the StatusCallback
URL's query; Vonage: `client-ref`), so a receipt finds its message even when it arrives
before the replica that sent it has stored its own events: it is simply recorded under that
id, and the trail is complete once everything is stored.

Every receipt must carry the tag the send put beside the id and the send time (see
smsgw.providers.receipt_tags): it proves we sent that message through that provider, so a
forger can neither make up an id nor name a real message, and a receipt cannot be moved to
another provider's webhook. Without a valid tag: 403, nothing recorded, no seen-receipt entry.
Twilio receipts must also carry a valid `X-Twilio-Signature` for the configured public URL
(403 otherwise). Vonage receipts must also carry a valid `sig` and a `timestamp` of the last
5 minutes when the provider has a `signature_secret` (signed webhooks on the Vonage account);
without one, the tag is their only check (the app warns at start-up). A receipt that repeats
one already recorded (Twilio retries, a provider sending twice) changes nothing; intermediate
statuses are ignored; a receipt older than the memory of seen ones (the tagged send time;
Vonage's `message-timestamp` too) is refused as stale, so a replay cannot be recorded again.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from multidict import MultiDict, MultiMapping

from smsgw.api.inputs import MESSAGE_ID, ascii_int, decode_json, form_body, header_bytes, read_body
from smsgw.api.keys import AUDIT, RECEIPT_TAGS, RECEIPTS, SETTINGS
from smsgw.api.problems import Problem
from smsgw.providers import ReceiptTagger, factory, twilio, vonage
from smsgw.redis_keys import RECEIPT_TTL_S
from smsgw.settings import TwilioProviderSettings, VonageProviderSettings, VonageSignatureMethod

__all__ = ["receive_receipt"]

# A signed Vonage receipt must have been signed within this long (either way: clock skew).
SIGNED_RECEIPT_MAX_AGE_S = 300.0


@dataclass(frozen=True, slots=True)
class Receipt:
    message_id: str
    status: str  # delivered | undelivered | failed
    provider_message_id: str | None
    reason: str | None


async def receive_receipt(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    name = request.match_info["provider"]
    entry = next((p for p in settings.active_providers if p.name == name), None)
    public_url = settings.server.public_url
    if public_url is None or not isinstance(entry, TwilioProviderSettings | VonageProviderSettings):
        raise Problem(
            404,
            "unknown-webhook",
            "No such webhook",
            "receipts are taken for configured twilio and vonage providers when "
            "server.public_url is set",
        )
    tagger = request.app[RECEIPT_TAGS]
    if isinstance(entry, TwilioProviderSettings):
        url = factory.receipt_url(public_url, name)
        receipt = await _twilio_receipt(request, entry, url, tagger)
    else:
        params = await _vonage_params(request)
        if entry.signature_secret is not None:
            _check_vonage_signature(params, entry.signature_secret, entry.signature_method)
        receipt = _vonage_receipt(params, name, tagger)
    if receipt is None:
        return web.Response(status=204)
    if await request.app[RECEIPTS].first_time(receipt.message_id, receipt.status):
        request.app[AUDIT].record(
            receipt.message_id,
            receipt.status,  # type: ignore[arg-type]  # one of the three receipt kinds
            provider=name,
            provider_message_id=receipt.provider_message_id,
            reason=receipt.reason,
        )
    return web.Response(status=204)


async def _twilio_receipt(
    request: web.Request, entry: TwilioProviderSettings, url: str, tagger: ReceiptTagger
) -> Receipt | None:
    form = await form_body(request, _bad("the body is not a UTF-8 form"))
    signed_url = url + (f"?{request.query_string}" if request.query_string else "")
    expected = twilio.request_signature(entry.auth_token, signed_url, form.items())
    presented = header_bytes(request, "X-Twilio-Signature") or b""
    if not hmac.compare_digest(expected.encode(), presented):
        raise Problem(403, "invalid-signature", "Invalid signature", "X-Twilio-Signature")
    query = request.query
    message_id = _message_id(query.get("message_id"))
    sent_at = _check_tag(tagger, entry.name, message_id, query.get("t"), query.get("tag"))
    _refuse_if_stale(sent_at)
    status = twilio.RECEIPT_STATUSES.get(str(form.get("MessageStatus", "")))
    if status is None:
        return None
    error = _text(form.get("ErrorCode"))
    return Receipt(
        message_id=message_id,
        status=status,
        provider_message_id=_text(form.get("MessageSid")),
        reason=f"twilio error {error}" if error else None,
    )


async def _vonage_params(request: web.Request) -> MultiMapping[Any]:
    # Vonage sends GET with a query, or POST as a form or as JSON, as configured.
    if request.method == "GET":
        return request.query
    if request.content_type == "application/json":
        data = decode_json(await read_body(request), dict[str, Any])
        return MultiDict({k: str(v) for k, v in data.items() if v is not None})
    return await form_body(request, _bad("the body is neither JSON nor a UTF-8 form"))


def _check_vonage_signature(
    params: MultiMapping[Any], secret: str, method: VonageSignatureMethod
) -> None:
    pairs = [(k, v) for k, v in params.items() if isinstance(v, str)]
    expected = vonage.webhook_signature(secret, method, pairs)
    presented = str(params.get("sig", "")).lower()
    if not hmac.compare_digest(expected.encode(), presented.encode()):
        raise Problem(403, "invalid-signature", "Invalid signature", "sig")
    # The timestamp is signed too: an old one is a replay.
    signed_at = _epoch(params.get("timestamp"))
    if signed_at is None or abs(time.time() - signed_at) > SIGNED_RECEIPT_MAX_AGE_S:
        detail = "timestamp missing or not within 5 minutes"
        raise Problem(403, "invalid-signature", "Invalid signature", detail)


def _vonage_receipt(
    params: MultiMapping[Any], provider: str, tagger: ReceiptTagger
) -> Receipt | None:
    raw_ref = params.get("client-ref")
    message_id, raw_sent_at, tag = vonage.parse_client_ref(
        raw_ref if isinstance(raw_ref, str) else ""
    )
    message_id = _message_id(message_id)
    sent_at = _check_tag(tagger, provider, message_id, raw_sent_at, tag)
    _refuse_if_stale(sent_at)
    _refuse_if_stale(_vonage_time(params.get("message-timestamp")))
    status = vonage.RECEIPT_STATUSES.get(str(params.get("status", "")))
    if status is None:
        return None
    error = params.get("err-code")
    return Receipt(
        message_id=message_id,
        status=status,
        provider_message_id=_text(params.get("messageId")),
        reason=f"vonage err-code {error}" if error and error != "0" else None,
    )


def _check_tag(
    tagger: ReceiptTagger, provider: str, message_id: str, sent_at: object, tag: object
) -> int:
    """The tagged send time, once the tag proves we sent `message_id` through `provider`
    then; 403 otherwise (a forgery, another provider's receipt, or a key we no longer have)."""
    seconds = ascii_int(sent_at)
    if (
        seconds is None
        or not isinstance(tag, str)
        or not tagger.verify(provider, message_id, seconds, tag)
    ):
        raise Problem(
            403,
            "invalid-receipt-tag",
            "Receipt not ours",
            "the receipt does not carry our tag for a message sent through this provider",
        )
    return seconds


def _refuse_if_stale(sent_at: float | None) -> None:
    # Older than the memory of seen receipts: a replay could otherwise be recorded again.
    if sent_at is not None and time.time() - sent_at > RECEIPT_TTL_S:
        raise _bad("stale receipt: its message was sent too long ago")


def _epoch(value: object) -> float | None:
    seconds = ascii_int(value)
    return None if seconds is None else float(seconds)


def _vonage_time(value: object) -> float | None:
    # Vonage: "2026-11-28 12:00:00", UTC.
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _message_id(value: object) -> str:
    if not isinstance(value, str) or not MESSAGE_ID.fullmatch(value):
        raise _bad("the receipt names no message of ours")
    return value


def _text(value: object) -> str | None:
    return value[:64] if isinstance(value, str) and value else None


def _bad(detail: str) -> Problem:
    return Problem(400, "invalid-receipt", "Invalid receipt", detail)
