"""Wire shapes of Airtel IQ's send API (`POST /api/v1/send-sms`), as the fake answers them.

Airtel publishes no reference for this API: the request shape is what community clients
send, the answer `{status, message, messageRequestId, errorCode, errorDescription}` what they
read. The error codes below are this fake's own names, not Airtel's.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson

ROUTE: Final = "/api/v1/send-sms"
# Indian mobile numbers: 10 digits starting 6-9, without the +91.
NATIONAL: Final = re.compile(r"^[6-9]\d{9}$")
DIGITS: Final = re.compile(r"^\d{1,30}$")
MESSAGE_TYPES: Final = frozenset(
    {"SERVICE_IMPLICIT", "SERVICE_EXPLICIT", "TRANSACTIONAL", "PROMOTIONAL"}
)

AUTH_FAILED: Final = "AUTH_FAILED"
THROTTLED: Final = "THROTTLED"
INTERNAL_ERROR: Final = "INTERNAL_ERROR"
INVALID_REQUEST: Final = "INVALID_REQUEST"
INVALID_CUSTOMER: Final = "INVALID_CUSTOMER"
INVALID_DESTINATION: Final = "INVALID_DESTINATION"


@dataclass(frozen=True, slots=True)
class AirtelAccount:
    customer_id: str = "fake-customer"
    username: str = "fake-user"
    password: str = "fake-password"


def error_body(code: str, description: str) -> bytes:
    return orjson.dumps(
        {
            "status": "FAILURE",
            "message": description,
            "messageRequestId": None,
            "errorCode": code,
            "errorDescription": description,
        }
    )


UNAUTHORIZED_BODY: Final = error_body(AUTH_FAILED, "Invalid username or password")
THROTTLED_BODY: Final = error_body(THROTTLED, "Too many requests")
SERVER_ERROR_BODY: Final = error_body(INTERNAL_ERROR, "Internal server error")

# A decision: (HTTP status, errorCode if refused, body to answer, messageRequestId if accepted).
Decision = tuple[int, str | None, bytes, str | None]


def answer(
    authorized: bool,
    request: Any,
    account: AirtelAccount,
    reject_numbers: frozenset[str],
    draw_fault: Callable[[], int | None],
) -> Decision:
    """The answer to one request (`request` is the parsed JSON body, None if unparsable).

    Authentication first, then the fault draw, then validation. A drawn fault status (429,
    500, or the fake's "hang") is answered as is.
    """
    if not authorized:
        return 401, AUTH_FAILED, UNAUTHORIZED_BODY, None
    fault = draw_fault()
    if fault == 429:
        return 429, THROTTLED, THROTTLED_BODY, None
    if fault is not None:
        # Nothing is answered to a held request, so it carries no code.
        return fault, INTERNAL_ERROR if fault >= 500 else None, SERVER_ERROR_BODY, None
    return submit(request, account, reject_numbers)


def destination(request: Any) -> str:
    """The first destination as sent (a string or a list of strings), or ""."""
    if not isinstance(request, dict):
        return ""
    value = request.get("destinationAddress")
    if isinstance(value, list):
        value = value[0] if value else ""
    return value if isinstance(value, str) else ""


def e164(national: str) -> str:
    """The number as the records keep it: E.164 for a 10-digit number, else as sent."""
    return "+91" + national if NATIONAL.match(national) else national


def submit(request: Any, account: AirtelAccount, reject_numbers: frozenset[str]) -> Decision:
    """Validate an authenticated request body (parsed JSON) and accept it."""
    if not isinstance(request, dict):
        problem: str | None = "Request body must be a JSON object"
        return 400, INVALID_REQUEST, error_body(INVALID_REQUEST, problem or ""), None
    if request.get("customerId") != account.customer_id:
        return 400, INVALID_CUSTOMER, error_body(INVALID_CUSTOMER, "Unknown customerId"), None
    problem = _invalid(request)
    if problem is not None:
        return 400, INVALID_REQUEST, error_body(INVALID_REQUEST, problem), None
    addresses = request["destinationAddress"]
    numbers = addresses if isinstance(addresses, list) else [addresses]
    if any(e164(number) in reject_numbers for number in numbers):
        return (
            400,
            INVALID_DESTINATION,
            error_body(INVALID_DESTINATION, "Destination rejected"),
            None,
        )
    request_id = str(uuid.uuid4())
    accepted = {
        "status": "SUCCESS",
        "message": "Message submitted successfully",
        "messageRequestId": request_id,
        "errorCode": None,
        "errorDescription": None,
    }
    return 200, None, orjson.dumps(accepted), request_id


def _invalid(request: dict[str, Any]) -> str | None:
    addresses = request.get("destinationAddress")
    numbers = addresses if isinstance(addresses, list) else [addresses]
    if not numbers or not all(isinstance(n, str) and NATIONAL.match(n) for n in numbers):
        return "destinationAddress must be 10-digit Indian mobile numbers"
    for name in ("message", "sourceAddress"):
        if not isinstance(request.get(name), str) or not request[name]:
            return f"{name} is required"
    if request.get("messageType") not in MESSAGE_TYPES:
        return "messageType is not one of " + ", ".join(sorted(MESSAGE_TYPES))
    for name in ("dltTemplateId", "entityId"):
        value = request.get(name)
        if not isinstance(value, str) or not DIGITS.match(value):
            return f"{name} must be the numeric DLT id"
    if "otp" in request and not isinstance(request["otp"], bool):
        return "otp must be a boolean"
    return None
