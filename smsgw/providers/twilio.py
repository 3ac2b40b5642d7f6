"""Twilio Programmable Messaging (Messages API), with its error-code table beside the client."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable
from typing import Final
from urllib.parse import quote, urlencode

import aiohttp

from smsgw.errors import PermanentProviderError, RetryableProviderError, ThrottledError
from smsgw.providers import _http
from smsgw.providers.base import OutgoingSms, Provider
from smsgw.providers.receipt_tags import ReceiptTagger
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
# ValidityPeriod range the API accepts, in seconds.
_VALIDITY_MIN, _VALIDITY_MAX = 1, 36_000


# Status callback `MessageStatus` -> our receipt status; absent ones are intermediate
# (queued, sending, sent, accepted, scheduled, ...) and change nothing.
RECEIPT_STATUSES: Final[dict[str, str]] = {
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


class TwilioProvider(Provider):
    def __init__(
        self,
        settings: TwilioProviderSettings,
        callback: str | None = None,
        tagger: ReceiptTagger | None = None,
    ) -> None:
        """`callback`: our receipt webhook; each send asks Twilio to report there, with the
        message's id in the query so a receipt finds its message whenever it arrives, and
        the `tagger`'s tag proving we sent it through this provider."""
        super().__init__(settings.name)
        if callback is not None and tagger is None:
            raise ValueError("a receipt callback needs a tagger: untagged receipts are refused")
        self._settings = settings
        self._callback = callback
        self._tagger = tagger
        account = quote(settings.account_sid, safe="")
        self._url = f"{settings.base_url.rstrip('/')}/2010-04-01/Accounts/{account}/Messages.json"
        credentials = f"{settings.account_sid}:{settings.auth_token}".encode()
        # Built once: computing Basic auth and headers per request costs ~25% of the client's
        # throughput at thousands of sends per second.
        self._headers = {
            "Authorization": "Basic " + base64.b64encode(credentials).decode(),
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        sender = (
            ("From", settings.from_)
            if settings.from_ is not None
            else ("MessagingServiceSid", settings.messaging_service_sid or "")
        )
        self._fixed_fields = [sender]
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = _http.open_session(
            connect_timeout_s=self._settings.connect_timeout_s, timeout_s=self._settings.timeout_s
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _form(self, sms: OutgoingSms) -> bytes:
        fields = [("To", sms.to), ("Body", sms.body), *self._fixed_fields]
        if self._callback is not None and self._tagger is not None:
            # When it was sent, inside the signed URL and under the tag: a receipt replayed
            # later is refused as stale.
            sent_at = int(time.time())
            tag = self._tagger.tag(self.name, sms.message_id, sent_at)
            query = urlencode([("message_id", sms.message_id), ("t", str(sent_at)), ("tag", tag)])
            fields.append(("StatusCallback", f"{self._callback}?{query}"))
        if sms.validity_s is not None:
            validity = min(max(sms.validity_s, _VALIDITY_MIN), _VALIDITY_MAX)
            fields.append(("ValidityPeriod", str(validity)))
        return urlencode(fields).encode()

    async def _try_send(self, sms: OutgoingSms) -> str:
        if self._session is None:
            raise RuntimeError("TwilioProvider.start() was not called")
        answer = await _http.post(
            self._session, self.name, self._url, data=self._form(sms), headers=self._headers
        )
        return self._outcome(answer.status, answer.retry_after, answer.payload)

    def _outcome(self, status: int, retry_after: str | None, payload: bytes) -> str:
        body = _http.json_object(payload)
        if status in (200, 201):
            sid = body.get("sid")
            if not isinstance(sid, str):
                raise RetryableProviderError(self.name, "success without a sid", ambiguous=True)
            return sid
        raw_code = body.get("code")
        code = raw_code if isinstance(raw_code, int) else None
        code_text = None if code is None else str(code)
        if status == 429 or code in THROTTLE_CODES:
            raise ThrottledError(
                self.name,
                "throttled",
                code=code_text,
                retry_after_s=_http.parse_retry_after(retry_after),
            )
        if status >= 500:
            raise RetryableProviderError(
                self.name, f"server error {status}", code=code_text, ambiguous=True
            )
        if status in (401, 403):
            # Our credentials, not the message: another provider (or a fixed config) can send it.
            raise RetryableProviderError(self.name, "authentication failed", code=code_text)
        if status == 404:
            # Wrong account sid or base_url: also our configuration, not the message.
            raise RetryableProviderError(self.name, "endpoint not found", code=code_text)
        reason = PERMANENT_CODES.get(code or 0, f"rejected with HTTP {status}")
        raise PermanentProviderError(self.name, reason, code=code_text)
