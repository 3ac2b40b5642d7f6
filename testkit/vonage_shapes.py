"""Wire shapes of Vonage's SMS API (`POST /sms/json`), as the fake provider answers them.

Vonage answers 200 for refused messages too; the verdict is the `status` of each entry of
`messages[]`, one entry per SMS part. Error bodies are encoded once at import.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson

from testkit.segment_count import count_segments

ROUTE: Final = "/sms/json"
# Vonage wants digits only, no '+' (its OpenAPI: 7 to 15 digits).
TO_DIGITS: Final = re.compile(r"^[1-9]\d{6,14}$")
TTL_MIN_MS, TTL_MAX_MS = 20_000, 604_800_000
TYPES: Final = frozenset({"text", "unicode", "binary"})
MAX_CLIENT_REF: Final = 100
MAX_CALLBACK: Final = 100

# Status values as Vonage documents them (https://developer.vonage.com/api-errors/sms).
SUCCESS: Final = "0"
THROTTLED: Final = "1"
MISSING_PARAMS: Final = "2"
INVALID_PARAMS: Final = "3"
INVALID_CREDENTIALS: Final = "4"
UNROUTABLE: Final = "6"


@dataclass(frozen=True, slots=True)
class VonageAccount:
    api_key: str = "abcd1234"
    api_secret: str = "fake-api-secret"


def error_body(status: str, text: str) -> bytes:
    return orjson.dumps(
        {"message-count": "1", "messages": [{"status": status, "error-text": text}]}
    )


THROTTLED_BODY: Final = error_body(THROTTLED, "Throughput Rate Exceeded - please wait and retry")
BAD_CREDENTIALS_BODY: Final = error_body(INVALID_CREDENTIALS, "Bad Credentials")
# A 5xx comes from Vonage's edge, not the SMS API, so it is not in the messages[] shape.
SERVER_ERROR_BODY: Final = orjson.dumps({"title": "Internal Server Error", "status": 500})

# A decision: (Vonage status, body to answer, message-id of the first part if accepted).
Decision = tuple[str, bytes, str | None]


def answer(
    form: dict[str, str],
    account: VonageAccount,
    reject_numbers: frozenset[str],
    draw_fault: Callable[[], int | None],
) -> tuple[int, str | None, bytes, str | None]:
    """(HTTP status, Vonage status, body, message-id) for one request.

    Credentials first, then the fault draw (a provider throttles before reading a message),
    then validation. A drawn 429 becomes Vonage's own throttle: status "1" inside a 200;
    any other drawn status (500, or the fake's "hang") is answered as is.
    """
    refused = check_credentials(form, account)
    if refused is not None:
        return 200, *refused
    fault = draw_fault()
    if fault == 429:
        return 200, THROTTLED, THROTTLED_BODY, None
    if fault is not None:
        return fault, None, SERVER_ERROR_BODY, None
    return 200, *submit(form, reject_numbers)


def e164(to: str) -> str:
    """The number as the records keep it: E.164 when `to` is digits, else as sent."""
    return "+" + to if to.isascii() and to.isdigit() else to


def check_credentials(form: dict[str, str], account: VonageAccount) -> Decision | None:
    """A refusal when the credentials are missing or wrong, else None."""
    key, secret = form.get("api_key"), form.get("api_secret")
    if not key or not secret:
        return MISSING_PARAMS, error_body(MISSING_PARAMS, "Missing api_key or api_secret"), None
    if key != account.api_key or secret != account.api_secret:
        return INVALID_CREDENTIALS, BAD_CREDENTIALS_BODY, None
    return None


def submit(form: dict[str, str], reject_numbers: frozenset[str]) -> Decision:
    """Validate an authenticated request and accept it (one entry per SMS part)."""
    problem = _invalid(form)
    if problem is not None:
        return problem
    to, text = form["to"], form["text"]
    if e164(to) in reject_numbers:
        return UNROUTABLE, error_body(UNROUTABLE, "Unroutable message - rejected"), None
    parts = [_part(to, form.get("client-ref")) for _ in range(count_segments(text))]
    body = {"message-count": str(len(parts)), "messages": parts}
    return SUCCESS, orjson.dumps(body), parts[0]["message-id"]


def _invalid(form: dict[str, str]) -> Decision | None:
    for name in ("from", "to", "text"):
        if not form.get(name):
            return MISSING_PARAMS, error_body(MISSING_PARAMS, f"Missing {name} param"), None
    checks = (
        ("to", TO_DIGITS.match(form["to"]) is not None),
        ("ttl", "ttl" not in form or _ttl_ok(form["ttl"])),
        ("type", form.get("type", "text") in TYPES),
        ("client-ref", len(form.get("client-ref", "")) <= MAX_CLIENT_REF),
        ("callback", len(form.get("callback", "")) <= MAX_CALLBACK),
    )
    for name, ok in checks:
        if not ok:
            return INVALID_PARAMS, error_body(INVALID_PARAMS, f"Invalid {name} param"), None
    return None


def _ttl_ok(value: str) -> bool:
    return value.isdigit() and TTL_MIN_MS <= int(value) <= TTL_MAX_MS


def _part(to: str, client_ref: str | None) -> dict[str, Any]:
    part = {
        "to": to,
        "message-id": os.urandom(8).hex().upper(),
        "status": SUCCESS,
        "remaining-balance": "10.00000000",
        "message-price": "0.03330000",
        "network": "23410",
    }
    if client_ref:
        part["client-ref"] = client_ref
    return part
