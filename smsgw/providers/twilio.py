"""Twilio Programmable Messaging (Messages API), with its error-code table beside the client."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable
from typing import Final
from urllib.parse import quote, quote_plus, urlencode

from smsgw.errors import ConcurrencyLimited, PermanentProviderError, RetryableProviderError
from smsgw.providers.base import OutgoingSms
from smsgw.providers.http import Answer, HttpProvider, json_object, parse_retry_after
from smsgw.providers.receipt_tags import ReceiptRoute
from smsgw.providers.receipts import (
    Receipt,
    ReceiptRequest,
    ReceiptStatus,
    bad_signature,
    check_tag,
    invalid_receipt,
    our_message_id,
    short_text,
)
from smsgw.settings import TwilioProviderSettings

__all__ = ["RECEIPT_STATUSES", "TwilioProvider", "request_signature"]

# Twilio error codes that mean "this message will never go through": fail at once.
PERMANENT_CODES: dict[int, str] = {
    21211: "invalid 'To' number",
    21408: "region not enabled for this account",
    21602: "message body required",
    21606: "'From' number cannot send SMS",
    21610: "recipient unsubscribed (STOP)",
    21612: "'To' number not reachable from this sender",
    21614: "'To' is not a mobile number",
    21617: "body exceeds the length limit",
    21635: "'To' number cannot receive SMS",
}
# Codes that mean "slow down": nothing was processed, retry after a pause.
THROTTLE_CODES: frozenset[int] = frozenset({20429, 14107, 63017})
# With HTTP 429: too many of the account's requests open at once (its concurrency limit),
# not too many per second.
CONCURRENCY_CODE: Final = 20429
# ValidityPeriod range the API accepts, in seconds.
_VALIDITY_MIN, _VALIDITY_MAX = 1, 36_000


# Status callback `MessageStatus` -> our receipt status; absent ones are intermediate
# (queued, sending, sent, accepted, scheduled, ...) and change nothing.
RECEIPT_STATUSES: Final[dict[str, ReceiptStatus]] = {
    "delivered": "delivered",
    "read": "delivered",
    "undelivered": "undelivered",
    "failed": "failed",
    "canceled": "failed",
}


def request_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """X-Twilio-Signature of a webhook request: Base64(HMAC-SHA1(auth token, the full URL,
    then each POST parameter's name and value, sorted by name))."""
    data = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class TwilioProvider(HttpProvider):
    settings_type = TwilioProviderSettings
    receives_receipts = True

    def __init__(self, settings: TwilioProviderSettings, receipts: ReceiptRoute | None = None):
        """`receipts`: each send asks Twilio to report to our webhook, with the message's id
        in the query so a receipt finds its message whenever it arrives, and the tagger's
        tag proving we sent it through this provider."""
        credentials = f"{settings.account_sid}:{settings.auth_token}".encode()
        super().__init__(
            settings,
            base_url=settings.base_url,
            path=f"/2010-04-01/Accounts/{quote(settings.account_sid, safe='')}/Messages.json",
            headers={
                "Authorization": "Basic " + base64.b64encode(credentials).decode(),
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
            receipts=receipts,
        )
        self._auth_token = settings.auth_token
        sender = (
            ("From", settings.from_)
            if settings.from_ is not None
            else ("MessagingServiceSid", settings.messaging_service_sid or "")
        )
        # Encoded once: urlencode() over every field was a tenth of a send's CPU.
        self._fixed_form = "&" + urlencode([sender])

    def encode(self, sms: OutgoingSms) -> bytes:
        form = f"To={quote_plus(sms.to)}&Body={quote_plus(sms.body)}{self._fixed_form}"
        fields: list[tuple[str, str]] = []
        if self._receipts is not None:
            # When it was sent, inside the signed URL and under the tag: a receipt replayed
            # later is refused as stale.
            sent_at = int(time.time())
            tag = self._receipts.tagger.tag(self.name, sms.message_id, sent_at)
            query = urlencode([("message_id", sms.message_id), ("t", str(sent_at)), ("tag", tag)])
            fields.append(("StatusCallback", f"{self._receipts.url}?{query}"))
        if sms.validity_s is not None:
            validity = min(max(sms.validity_s, _VALIDITY_MIN), _VALIDITY_MAX)
            fields.append(("ValidityPeriod", str(validity)))
        if fields:
            form += "&" + urlencode(fields)
        return form.encode()

    def decode(self, answer: Answer) -> str:
        status = answer.status
        body = json_object(answer.body)
        if status in (200, 201):
            sid = body.get("sid")
            if not isinstance(sid, str):
                raise self.success_without_id("a sid")
            return sid
        raw_code = body.get("code")
        code = raw_code if isinstance(raw_code, int) else None
        code_text = None if code is None else str(code)
        if status == 429 and code == CONCURRENCY_CODE:
            # No pause is owed unless Twilio names one: fewer open requests is the cure.
            retry_after = answer.retry_after
            raise ConcurrencyLimited(
                self.name,
                "too many concurrent requests",
                code=code_text,
                retry_after_s=0.0 if retry_after is None else parse_retry_after(retry_after),
            )
        if status == 429 or code in THROTTLE_CODES:
            raise self.throttled(answer, code=code_text)
        if status >= 500:
            raise self.server_error(status, code_text)
        if status in (401, 403):
            # Our credentials, not the message: another provider (or a fixed config) can send it.
            raise RetryableProviderError(self.name, "authentication failed", code=code_text)
        if status == 404:
            # Wrong account sid or base_url: also our configuration, not the message.
            raise RetryableProviderError(self.name, "endpoint not found", code=code_text)
        reason = PERMANENT_CODES.get(code or 0, f"rejected with HTTP {status}")
        raise PermanentProviderError(self.name, reason, code=code_text)

    # --- receipts: a status callback form, signed by Twilio over our full URL ------------

    def takes_receipts(self) -> bool:
        return self._receipts is not None

    async def parse_receipt(self, request: ReceiptRequest) -> Receipt | None:
        if self._receipts is None:
            raise RuntimeError("no receipts without a callback: see takes_receipts()")
        form = await request.form()
        if form is None:
            raise invalid_receipt("the body is not a UTF-8 form")
        query_string = request.query_string
        signed_url = self._receipts.url + (f"?{query_string}" if query_string else "")
        expected = request_signature(self._auth_token, signed_url, form.items())
        if not hmac.compare_digest(expected.encode(), request.header("X-Twilio-Signature") or b""):
            raise bad_signature("X-Twilio-Signature")
        query = request.query
        message_id = our_message_id(query.get("message_id"))
        send = check_tag(
            self._receipts.tagger, self.name, message_id, query.get("t"), query.get("tag")
        )
        status = RECEIPT_STATUSES.get(str(form.get("MessageStatus", "")))
        if status is None:
            return None
        error = short_text(form.get("ErrorCode"))
        return Receipt(
            send=send,
            status=status,
            provider_message_id=short_text(form.get("MessageSid")),
            reason=f"twilio error {error}" if error else None,
        )
