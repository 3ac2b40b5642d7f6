"""Phone number parsing, done once per request at the API edge.

Parsing and validating is the most expensive step of an OTP request after aiohttp's own
handling (~26 µs of ~190, bench/RESULTS.md), so the API parses once and everything
downstream carries the E.164 string and the country code.
"""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

__all__ = ["InvalidPhoneNumber", "PhoneNumber", "parse_phone"]

# Types an SMS can reach. FIXED_LINE_OR_MOBILE covers the NANP, where the two share ranges.
_SMS_CAPABLE = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})
_MAX_INPUT_LENGTH = 32


class InvalidPhoneNumber(ValueError):
    """The input is not a valid phone number that can receive an SMS."""


@dataclass(frozen=True, slots=True)
class PhoneNumber:
    e164: str
    country: str  # ISO 3166-1 alpha-2, as phonenumbers reports it


def parse_phone(raw: str) -> PhoneNumber:
    """Parse a number in international form; raise InvalidPhoneNumber with a reason."""
    if len(raw) > _MAX_INPUT_LENGTH:
        raise InvalidPhoneNumber("too long to be a phone number")
    try:
        number = phonenumbers.parse(raw, None)
    except NumberParseException as exc:
        raise InvalidPhoneNumber(
            "not a phone number in international form (e.g. +14155550100)"
        ) from exc
    if number.extension:
        raise InvalidPhoneNumber("a number with an extension cannot receive an SMS")
    # number_type() does the validity check too (UNKNOWN for invalid numbers), so one call
    # answers both questions.
    number_type = phonenumbers.number_type(number)
    if number_type == PhoneNumberType.UNKNOWN:
        raise InvalidPhoneNumber("not a valid phone number")
    if number_type not in _SMS_CAPABLE:
        raise InvalidPhoneNumber("not a mobile number")
    country = phonenumbers.region_code_for_number(number) or "ZZ"
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return PhoneNumber(e164=e164, country=country)
