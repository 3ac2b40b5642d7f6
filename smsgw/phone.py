"""Phone number parsing, done once per request at the API edge.

Parsing and validating is the most expensive step of an OTP request after aiohttp's own
handling (~26 µs of ~190, bench/RESULTS.md), so the API parses once and everything
downstream carries the E.164 string and the country code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import (
    COUNTRY_CODE_TO_REGION_CODE,
    NumberParseException,
    PhoneMetadata,
    PhoneNumberType,
    region_code_for_country_code,
)

# Private, but what number_type() itself calls after its region lookup; the test against
# number_type() on every example number catches a phonenumbers release that changes it.
from phonenumbers.phonenumberutil import _number_type_helper

__all__ = ["InvalidPhoneNumber", "PhoneNumber", "parse_phone"]

# Types an SMS can reach. FIXED_LINE_OR_MOBILE covers the NANP, where the two share ranges.
_SMS_CAPABLE = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})
_MAX_INPUT_LENGTH = 32
# "+" and digits only, as API clients send E.164: the form the fast path below reads.
_PLUS_DIGITS = re.compile(r"\+(\d{3,17})")
_national_prefixes: dict[str, re.Pattern[str]] = {}


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
        number = _plain_e164(raw) or phonenumbers.parse(raw, None)
    except NumberParseException as exc:
        raise InvalidPhoneNumber(
            "not a phone number in international form (e.g. +14155550100)"
        ) from exc
    if number.extension:
        raise InvalidPhoneNumber("a number with an extension cannot receive an SMS")
    # The region first, then the type in that region's metadata: number_type() would look
    # the region up again, and for a code shared by several regions (+1: 25, +44: 4) that
    # lookup tests the number against each of them, the dearest step of all. The type
    # does the validity check too (UNKNOWN for invalid numbers).
    region = phonenumbers.region_code_for_number(number)
    number_type = _type_in_region(number, region)
    if number_type == PhoneNumberType.UNKNOWN:
        raise InvalidPhoneNumber("not a valid phone number")
    if number_type not in _SMS_CAPABLE:
        raise InvalidPhoneNumber("not a mobile number")
    country = region or "ZZ"
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return PhoneNumber(e164=e164, country=country)


def _plain_e164(raw: str) -> phonenumbers.PhoneNumber | None:
    """What `phonenumbers.parse(raw, None)` returns, for the common "+<digits>" whose
    national part leaves nothing to interpret; None for anything else (parse decides).

    parse() is 40% of checking a number (~8 of 20 µs) because it first looks for every
    form a human may type. For "+" and digits it comes down to: the country code (1-3
    digits, a prefix code), and the national number unless a national prefix could be
    stripped from it (the metadata's pattern matches its start) or it starts with 0 (the
    Italian leading zero) — those go to parse(). tests/test_phone.py checks both agree on
    every example number the metadata holds.
    """
    match = _PLUS_DIGITS.fullmatch(raw)
    if match is None:
        return None
    digits = match.group(1)
    for length in (1, 2, 3):
        country_code = int(digits[:length])
        if country_code in COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None
    national = digits[length:]
    if len(national) < 2 or national[0] == "0":
        return None
    region = region_code_for_country_code(country_code)
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
    if metadata is None:
        return None
    prefix = metadata.national_prefix_for_parsing
    if prefix:
        pattern = _national_prefixes.get(prefix)
        if pattern is None:
            pattern = _national_prefixes[prefix] = re.compile(prefix)
        if pattern.match(national):
            return None
    return phonenumbers.PhoneNumber(country_code=country_code, national_number=int(national))


def _type_in_region(number: phonenumbers.PhoneNumber, region: str | None) -> int:
    """phonenumbers.number_type(number), given its region_code_for_number() already: the
    same two steps number_type() takes (tests/test_phone.py checks they agree)."""
    country_code = number.country_code
    if country_code is None or region is None:
        return PhoneNumberType.UNKNOWN
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
    if metadata is None:
        return PhoneNumberType.UNKNOWN
    national = phonenumbers.national_significant_number(number)
    return int(_number_type_helper(national, metadata))
