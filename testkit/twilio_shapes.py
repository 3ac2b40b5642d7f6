"""Wire shapes of Twilio's Messages API, as the fake provider answers them.

Kept apart from the server so the request path reads as decisions only. Error bodies
are encoded once at import: the fake answers thousands of them per second.
"""

from __future__ import annotations

import re
import time
from typing import Any, Final

import orjson

from testkit.segment_count import count_segments

API_VERSION: Final = "2010-04-01"
E164: Final = re.compile(r"^\+[1-9]\d{6,14}$")
MAX_BODY_CHARS: Final = 1600

# Error codes as Twilio documents them (https://www.twilio.com/docs/errors/<code>).
AUTHENTICATE: Final = 20003
INTERNAL_ERROR: Final = 20500
TOO_MANY_REQUESTS: Final = 20429
INVALID_TO: Final = 21211
MISSING_BODY: Final = 21602
MISSING_FROM: Final = 21603
MISSING_TO: Final = 21604
BODY_TOO_LONG: Final = 21617


def error_body(code: int, message: str, status: int) -> bytes:
    """Encode Twilio's error object: `{code, message, more_info, status}`."""
    return orjson.dumps(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
    )


UNAUTHORIZED_BODY: Final = error_body(AUTHENTICATE, "Authenticate", 401)
SERVER_ERROR_BODY: Final = error_body(INTERNAL_ERROR, "Internal Server Error", 500)
THROTTLED_BODY: Final = error_body(TOO_MANY_REQUESTS, "Too Many Requests", 429)
MISSING_TO_BODY: Final = error_body(MISSING_TO, "A 'To' phone number is required.", 400)
MISSING_BODY_BODY: Final = error_body(MISSING_BODY, "Message body is required.", 400)
MISSING_FROM_BODY: Final = error_body(
    MISSING_FROM, "A 'From' phone number or a 'MessagingServiceSid' is required.", 400
)
BOTH_SENDERS_BODY: Final = error_body(
    MISSING_FROM, "Give exactly one of 'From' and 'MessagingServiceSid'.", 400
)
BODY_TOO_LONG_BODY: Final = error_body(
    BODY_TOO_LONG, "The concatenated message body exceeds the 1600 character limit.", 400
)


def invalid_to_body(to: str) -> bytes:
    """Twilio names the offending number in the 21211 message."""
    return error_body(INVALID_TO, f"The 'To' number {to} is not a valid phone number.", 400)


_DAY: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MON: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_date_cache: tuple[int, str] = (-1, "")


def rfc2822_now() -> str:
    """Twilio's date format (`Thu, 30 Jul 2015 20:12:31 +0000`), cached per second.

    Built by hand because strftime's %a/%b follow the locale.
    """
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        t = time.gmtime(now)
        text = (
            f"{_DAY[t.tm_wday]}, {t.tm_mday:02d} {_MON[t.tm_mon - 1]} "
            f"{t.tm_year} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
        )
        _date_cache = (now, text)
    return _date_cache[1]


def message_resource(
    *,
    account_sid: str,
    sid: str,
    to: str,
    from_: str | None,
    messaging_service_sid: str | None,
    body: str,
) -> dict[str, Any]:
    """The Message resource Twilio returns with 201 on creation."""
    date = rfc2822_now()
    uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}"
    return {
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "body": body,
        "date_created": date,
        "date_sent": None,
        "date_updated": date,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": from_,
        "messaging_service_sid": messaging_service_sid,
        "num_media": "0",
        # Twilio sends both counters as strings.
        "num_segments": str(count_segments(body)),
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        # A Messaging Service first "accepts" the message, then picks a sender.
        "status": "accepted" if messaging_service_sid else "queued",
        "subresource_uris": {"media": f"{uri}/Media.json"},
        "to": to,
        "uri": f"{uri}.json",
    }
