"""Airtel IQ (India): `POST /api/v1/send-sms`, HTTP Basic, one JSON message per request.

Airtel publishes no error-code list, so the verdict rests on the HTTP status and on whether
the answer carries a `messageRequestId`; any `errorCode` is kept for the operator but judged
permanent. Conservative on purpose: a wrong "permanent" fails one OTP at once, a wrong
"retryable" sends the same refused request again until the attempts run out.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Final, Literal

import orjson

from smsgw.errors import PermanentProviderError, RetryableProviderError
from smsgw.providers.base import OutgoingSms
from smsgw.providers.http import Answer, HttpProvider, json_object
from smsgw.settings import AirtelProviderSettings

__all__ = ["HTTP_OUTCOMES", "AirtelProvider"]

# Meanings as in smsgw.providers.vonage; 5xx are retryable and ambiguous, 2xx judged by body,
# every other status permanent.
Outcome = Literal["throttled", "account"]
HTTP_OUTCOMES: Final[dict[int, tuple[Outcome, str]]] = {
    429: ("throttled", "throttled"),
    # Credentials, customer id or base_url: our configuration, not the message.
    401: ("account", "authentication failed"),
    403: ("account", "not allowed for this account"),
    404: ("account", "endpoint not found"),
}
_CODE: Final = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_INDIA = "+91"
_NATIONAL_DIGITS = 10


class AirtelProvider(HttpProvider):
    settings_type = AirtelProviderSettings

    def __init__(self, settings: AirtelProviderSettings) -> None:
        credentials = f"{settings.username}:{settings.password}".encode()
        super().__init__(
            settings,
            base_url=settings.base_url,
            path="/api/v1/send-sms",
            headers={
                "Authorization": "Basic " + base64.b64encode(credentials).decode(),
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        self._fixed: dict[str, Any] = {
            "customerId": settings.customer_id,
            "sourceAddress": settings.source_address,
            "messageType": settings.message_type,
            "dltTemplateId": settings.dlt_template_id,
            "entityId": settings.dlt_entity_id,
        }
        if settings.otp:
            self._fixed["otp"] = True

    def encode(self, sms: OutgoingSms) -> bytes:
        national = _national_number(sms.to)
        if national is None:
            # Routing should never send one here; if it does, no retry can make it work.
            raise PermanentProviderError(self.name, "Airtel IQ sends to Indian (+91) numbers only")
        return orjson.dumps({**self._fixed, "destinationAddress": [national], "message": sms.body})

    def decode(self, answer: Answer) -> str:
        status = answer.status
        payload = json_object(answer.body)
        code = _error_code(payload)
        if 200 <= status < 300:
            request_id = payload.get("messageRequestId")
            if payload.get("errorCode") not in (None, "", False):
                raise PermanentProviderError(self.name, "refused with an error code", code=code)
            if (
                isinstance(request_id, str | int)
                and not isinstance(request_id, bool)
                and request_id
            ):
                return str(request_id)
            raise self.success_without_id("a messageRequestId")
        if status >= 500:
            raise self.server_error(status, code)
        known = HTTP_OUTCOMES.get(status)
        if known is None:
            raise PermanentProviderError(self.name, f"rejected with HTTP {status}", code=code)
        outcome, reason = known
        if outcome == "throttled":
            raise self.throttled(answer, reason, code)
        raise RetryableProviderError(self.name, reason, code=code)


def _national_number(e164: str) -> str | None:
    """The 10-digit national number of an Indian E.164 number, else None."""
    if not e164.startswith(_INDIA):
        return None
    national = e164[len(_INDIA) :]
    if len(national) != _NATIONAL_DIGITS or not (national.isascii() and national.isdigit()):
        return None
    return national


def _error_code(payload: dict[str, Any]) -> str | None:
    """The `errorCode` if it looks like a code; `errorDescription` is never read.

    Only a short token is kept: a provider free to put text there could quote the message,
    the number or our credentials back, and the code ends up in logs and events.
    """
    code = payload.get("errorCode")
    if isinstance(code, int) and not isinstance(code, bool):
        return str(code)
    if isinstance(code, str) and _CODE.fullmatch(code):
        return code
    return None
