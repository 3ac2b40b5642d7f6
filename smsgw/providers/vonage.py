"""Vonage SMS API (`POST /sms/json`), with its status table beside the client.

Vonage answers HTTP 200 even for refused messages: the verdict is the `status` of each entry
in `messages[]` (one per SMS part). A non-zero status means the part was not queued, so
those outcomes are never ambiguous; only transport trouble and 5xx are.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final, Literal
from urllib.parse import urlencode

from multidict import MultiDict, MultiMapping

from smsgw.errors import PermanentProviderError, RetryableProviderError, ThrottledError
from smsgw.providers.base import OutgoingSms
from smsgw.providers.http import Answer, HttpProvider, json_object
from smsgw.providers.receipt_tags import ReceiptRoute
from smsgw.providers.receipts import (
    Receipt,
    ReceiptRequest,
    ReceiptStatus,
    bad_signature,
    check_tag,
    invalid_receipt,
    our_message_id,
    refuse_if_stale,
    short_text,
)
from smsgw.segments import is_gsm7
from smsgw.settings import ProviderSettings, VonageProviderSettings, VonageSignatureMethod
from smsgw.validation import ascii_int

__all__ = [
    "RECEIPT_STATUSES",
    "STATUS_OUTCOMES",
    "VonageProvider",
    "client_ref",
    "parse_client_ref",
    "webhook_signature",
]

# throttled: nothing processed, pause the provider and requeue (not a failure).
# retryable: Vonage's own trouble; another try (here or elsewhere) may work.
# account:   our account or configuration, not the message: another provider can send it,
#            as Twilio's 401/403/404 (retryable, never ambiguous).
# permanent: this message will never go through.
Outcome = Literal["throttled", "retryable", "account", "permanent"]

# https://developer.vonage.com/api-errors/sms
STATUS_OUTCOMES: Final[dict[str, tuple[Outcome, str]]] = {
    "1": ("throttled", "throttled"),
    "2": ("permanent", "missing parameters"),
    "3": ("permanent", "invalid parameters"),
    "4": ("account", "invalid credentials"),
    "5": ("retryable", "internal error"),
    "6": ("permanent", "message not routable"),
    "7": ("permanent", "number barred"),
    "8": ("account", "account barred"),
    "9": ("account", "quota exceeded (no credit)"),
    "10": ("throttled", "too many existing binds"),
    "11": ("account", "account not enabled for HTTP"),
    "12": ("permanent", "message too long"),
    "14": ("account", "invalid signature"),
    "15": ("permanent", "invalid sender address"),
    "22": ("permanent", "invalid network code"),
    "23": ("account", "invalid callback URL"),
    "29": ("permanent", "destination not whitelisted"),
    "32": ("account", "signature and API secret disallowed"),
    "33": ("permanent", "number de-activated"),
}
SUCCESS: Final = "0"
# Delivery receipt `status` -> our receipt status; absent ones (accepted, buffered) are
# intermediate and change nothing.
RECEIPT_STATUSES: Final[dict[str, ReceiptStatus]] = {
    "delivered": "delivered",
    "expired": "undelivered",
    "failed": "failed",
    "rejected": "failed",
    "unknown": "undelivered",
}
# `ttl` range the API accepts, in milliseconds.
_TTL_MIN_MS, _TTL_MAX_MS = 20_000, 604_800_000
# Vonage rejects a longer `callback` or `client-ref`.
_CALLBACK_MAX_CHARS = 100
_CLIENT_REF_MAX_CHARS = 100
# A signed receipt must have been signed within this long (either way: clock skew).
SIGNED_RECEIPT_MAX_AGE_S = 300.0


def client_ref(message_id: str, sent_at: int, tag: str) -> str:
    """What a send puts in `client-ref`, echoed in every receipt of the message:
    `<message id>.<send time>.<tag>` (80 characters for our ids)."""
    return f"{message_id}.{sent_at}.{tag}"


def parse_client_ref(value: str) -> tuple[str, str | None, str | None]:
    """(message id, send time, tag) of a receipt's `client-ref`; the last two are None
    when it carries none (a forgery, or a message sent before tags existed)."""
    message_id, _, rest = value.partition(".")
    sent_at, _, tag = rest.partition(".")
    return message_id, sent_at or None, tag or None


def webhook_signature(
    secret: str, method: VonageSignatureMethod, params: Iterable[tuple[str, str]]
) -> str:
    """`sig` of a signed Vonage webhook, lowercase hex. Signed: every parameter but `sig`,
    sorted by name, each as `&name=value` with '&' and '=' in the value replaced by '_'.
    "md5hash" is MD5 of that followed by the secret; the others an HMAC of it keyed by the
    secret (Vonage writes those in uppercase: compare without case)."""
    signed = "".join(
        f"&{name}={value.replace('&', '_').replace('=', '_')}"
        for name, value in sorted(params)
        if name != "sig"
    )
    if method == "md5hash":
        # Vonage's default scheme, MD5 included; the HMAC methods are the stronger choice.
        return hashlib.md5((signed + secret).encode()).hexdigest()  # noqa: S324
    return hmac.new(secret.encode(), signed.encode(), method).hexdigest()


class VonageProvider(HttpProvider):
    settings_type = VonageProviderSettings
    receives_receipts = True

    def __init__(self, settings: VonageProviderSettings, receipts: ReceiptRoute | None = None):
        """`receipts`: our webhook (None: the account's dashboard setting, and no receipts
        taken), and the tagger whose tag each `client-ref` carries, proving we sent the
        message through this provider; our webhook refuses receipts without it."""
        callback = None if receipts is None else receipts.url
        if callback is not None and len(callback) > _CALLBACK_MAX_CHARS:
            raise ValueError(f"Vonage callback URLs are limited to {_CALLBACK_MAX_CHARS} chars")
        super().__init__(
            settings,
            base_url=settings.base_url,
            path="/sms/json",
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
            receipts=receipts,
        )
        self._signature = (
            None
            if settings.signature_secret is None
            else (settings.signature_secret, settings.signature_method)
        )
        # Vonage numbers are digits only (settings allow a '+' for E.164 habits).
        sender = settings.from_.removeprefix("+")
        fixed = [
            ("api_key", settings.api_key),
            ("api_secret", settings.api_secret),
            ("from", sender),
        ]
        if callback is not None:
            fixed.append(("callback", callback))
        # Encoded once: the credentials and sender never change between sends.
        self._fixed_form = urlencode(fixed)

    @classmethod
    def receipt_warnings(cls, settings: ProviderSettings) -> list[tuple[str, str]]:
        assert isinstance(settings, VonageProviderSettings)
        if settings.signature_secret is not None:
            return []
        detail = (
            "no signature_secret: Vonage receipts are checked only by our tag in client-ref, "
            "so whoever learns one (it travels in the receipts) can report any status for "
            "that message. Enable signed webhooks on the Vonage account and set "
            "signature_secret."
        )
        return [("unsigned_vonage_receipts", detail)]

    def _client_ref(self, message_id: str) -> str:
        if self._receipts is None:
            return message_id
        sent_at = int(time.time())
        tag = self._receipts.tagger.tag(self.name, message_id, sent_at)
        ref = client_ref(message_id, sent_at, tag)
        if len(ref) > _CLIENT_REF_MAX_CHARS:
            # Our ids are 36 characters; anything longer is a caller's bug, not a send.
            raise ValueError(f"client-ref over {_CLIENT_REF_MAX_CHARS} characters")
        return ref

    def encode(self, sms: OutgoingSms) -> bytes:
        fields = [
            ("to", sms.to.removeprefix("+")),
            ("text", sms.body),
            ("client-ref", self._client_ref(sms.message_id)),
        ]
        if not is_gsm7(sms.body):
            fields.append(("type", "unicode"))
        if sms.validity_s is not None:
            ttl_ms = min(max(sms.validity_s * 1000, _TTL_MIN_MS), _TTL_MAX_MS)
            fields.append(("ttl", str(ttl_ms)))
        return f"{self._fixed_form}&{urlencode(fields)}".encode()

    def decode(self, answer: Answer) -> str:
        if answer.status == 200:
            return self._verdict(json_object(answer.body).get("messages"))
        if answer.status == 429:
            raise self.throttled(answer)
        if answer.status >= 500:
            raise self.server_error(answer.status)
        if answer.status in (401, 403, 404):
            # Credentials or base_url: our configuration, not the message.
            raise RetryableProviderError(self.name, f"configuration refused (HTTP {answer.status})")
        raise PermanentProviderError(self.name, f"rejected with HTTP {answer.status}")

    def _verdict(self, messages: Any) -> str:
        """Judge the `messages[]` of a 200: one entry per SMS part."""
        statuses = _statuses(messages)
        if statuses is None:
            # A 200 we cannot read may still have queued the SMS.
            raise RetryableProviderError(self.name, "unreadable answer", ambiguous=True)
        refused = next((s for s in statuses if s != SUCCESS), None)
        if refused is None:
            message_id = messages[0].get("message-id")
            if not isinstance(message_id, str) or not message_id:
                raise self.success_without_id("a message-id")
            # The first part's id; receipts of every part also carry our client-ref.
            return message_id
        code = refused
        outcome, reason = STATUS_OUTCOMES.get(code, ("permanent", f"rejected with status {code}"))
        if outcome == "permanent":
            raise PermanentProviderError(self.name, reason, code=code)
        if SUCCESS in statuses:
            # Some parts are queued already: any retry re-sends them.
            raise RetryableProviderError(
                self.name, f"{reason} after part of the message was sent", code=code, ambiguous=True
            )
        if outcome == "throttled":
            # Vonage gives no Retry-After: its limits are per second, so pause one.
            raise ThrottledError(self.name, reason, code=code)
        raise RetryableProviderError(self.name, reason, code=code)

    # --- receipts: by GET with a query, or POST as a form or JSON, as the account says ---

    def takes_receipts(self) -> bool:
        return self._receipts is not None

    async def parse_receipt(self, request: ReceiptRequest) -> Receipt | None:
        """With a signature_secret (signed webhooks on the account), a valid `sig` over a
        `timestamp` of the last 5 minutes is needed too; without one, the tag is the only
        check (warned at start-up). Vonage's `message-timestamp` is checked for staleness."""
        if self._receipts is None:
            raise RuntimeError("no receipts without a callback: see takes_receipts()")
        params = await _params(request)
        if self._signature is not None:
            _check_signature(params, *self._signature)
        raw_ref = params.get("client-ref")
        message_id, raw_sent_at, tag = parse_client_ref(raw_ref if isinstance(raw_ref, str) else "")
        message_id = our_message_id(message_id)
        send = check_tag(self._receipts.tagger, self.name, message_id, raw_sent_at, tag)
        refuse_if_stale(_vonage_time(params.get("message-timestamp")))
        status = RECEIPT_STATUSES.get(str(params.get("status", "")))
        if status is None:
            return None
        error = params.get("err-code")
        return Receipt(
            send=send,
            status=status,
            provider_message_id=short_text(params.get("messageId")),
            reason=f"vonage err-code {error}" if error and error != "0" else None,
        )


async def _params(request: ReceiptRequest) -> MultiMapping[Any]:
    if request.method == "GET":
        return request.query
    if request.content_type == "application/json":
        data = await request.json_object()
        return MultiDict({k: str(v) for k, v in data.items() if v is not None})
    form = await request.form()
    if form is None:
        raise invalid_receipt("the body is neither JSON nor a UTF-8 form")
    return form


def _check_signature(params: MultiMapping[Any], secret: str, method: VonageSignatureMethod) -> None:
    pairs = [(k, v) for k, v in params.items() if isinstance(v, str)]
    expected = webhook_signature(secret, method, pairs)
    presented = str(params.get("sig", "")).lower()
    if not hmac.compare_digest(expected.encode(), presented.encode()):
        raise bad_signature("sig")
    # The timestamp is signed too: an old one is a replay.
    signed_at = ascii_int(params.get("timestamp"))
    if signed_at is None or abs(time.time() - signed_at) > SIGNED_RECEIPT_MAX_AGE_S:
        raise bad_signature("timestamp missing or not within 5 minutes")


def _vonage_time(value: object) -> float | None:
    # Vonage: "2026-11-28 12:00:00", UTC.
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _statuses(messages: Any) -> list[str] | None:
    """The `status` of each part, or None when the list is missing or malformed."""
    if not isinstance(messages, list) or not messages:
        return None
    statuses = []
    for part in messages:
        status = part.get("status") if isinstance(part, dict) else None
        # Documented as a string; accept a number too rather than misjudge the answer.
        if isinstance(status, bool) or not isinstance(status, str | int):
            return None
        text = str(status)
        # Anything but a short number is not a status (and must not reach logs as a code).
        if not (text.isascii() and text.isdigit() and len(text) <= 4):
            return None
        statuses.append(text)
    return statuses
