"""Request bodies, validated by msgspec in the same pass that parses the JSON.

Unknown fields are refused: a typo in an optional field must not be silently ignored.
Patterns end in `(?!\\n)$` because Python's `$` also matches before a final newline, which
would let "123456\\n" or an app name with a line break through.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from smsgw.settings import APP_NAME_PATTERN

__all__ = [
    "MAX_BATCH",
    "MAX_SMS_BODY",
    "MessageBatchBody",
    "MessageBody",
    "OtpStartBody",
    "OtpVerifyBody",
]

MAX_SMS_BODY = 1600  # Twilio's limit for Body
MAX_BATCH = 1000


class _Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


Phone = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
# Shown in the SMS; restricted so it cannot carry a link, a number to call or a phishing
# sentence (the rule is in smsgw.settings, shared with otp.app_name).
AppName = Annotated[
    str,
    msgspec.Meta(
        pattern=APP_NAME_PATTERN,
        description="Shown in the SMS: letters, digits, ' ', '-', '_'; '.' only before a "
        "space or at the end; at most 4 digits (nothing a phone would show as a link)",
    ),
]
Locale = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,2}(?!\n)$")]


class OtpStartBody(_Body):
    phone: Phone
    app: AppName | None = None
    length: Annotated[int, msgspec.Meta(ge=4, le=10)] | None = None
    locale: Locale | None = None
    ttl_s: Annotated[int, msgspec.Meta(ge=30, le=3600)] | None = None


class OtpVerifyBody(_Body):
    code: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4,10}(?!\n)$")]
    # Any string: an unknown id of whatever shape is a 404, as the contract says.
    id: str | None = None
    phone: Phone | None = None


class MessageBody(_Body):
    to: Phone
    body: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SMS_BODY)]
    priority: Literal["high", "normal"] = "normal"
    client_ref: Annotated[str, msgspec.Meta(max_length=128)] | None = None


class MessageBatchBody(_Body):
    messages: Annotated[list[MessageBody], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]
