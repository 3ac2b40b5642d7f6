"""parse_phone: E.164 normalisation, country codes, and the reasons for refusing input."""

from __future__ import annotations

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from smsgw.phone import InvalidPhoneNumber, PhoneNumber, _plain_e164, _type_in_region, parse_phone

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(
    "raw",
    ["+14155550100", "+1 (415) 555-0100", "+1-415-555-0100", "+1.415.555.0100", " +1 415 5550100 "],
)
def test_formatted_input_normalises_to_e164(raw: str) -> None:
    assert parse_phone(raw) == PhoneNumber(e164="+14155550100", country="US")


@pytest.mark.parametrize(
    ("raw", "e164", "country"),
    [
        ("+44 7400 123456", "+447400123456", "GB"),
        ("+33 6 12 34 56 78", "+33612345678", "FR"),
        ("+91 98765 43210", "+919876543210", "IN"),
        ("+49 170 1234567", "+491701234567", "DE"),
        ("+1 416 555 0123", "+14165550123", "CA"),
    ],
)
def test_country_comes_from_the_number(raw: str, e164: str, country: str) -> None:
    number = parse_phone(raw)
    assert number.e164 == e164
    assert number.country == country


@pytest.mark.parametrize(
    "raw",
    ["+1415555010", "+1 415 555 01000", "+44 7700 900123"],
    ids=["too-short", "too-long-for-nanp", "unallocated-uk-range"],
)
def test_invalid_numbers_are_refused(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber, match="not a valid phone number"):
        parse_phone(raw)


@pytest.mark.parametrize("raw", ["", "hello", "+", "+999123456", "+1 415 CALL ME"])
def test_garbage_is_refused(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber):
        parse_phone(raw)


@pytest.mark.parametrize(
    "raw",
    ["+442079460000", "+4930123456", "+18005550100"],
    ids=["uk-fixed-line", "de-fixed-line", "us-toll-free"],
)
def test_numbers_that_cannot_receive_sms_are_refused(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber, match="not a mobile number"):
        parse_phone(raw)


@pytest.mark.parametrize("raw", ["4155550100", "07911123456", "(415) 555-0100"])
def test_national_format_without_plus_is_refused(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber, match="international form"):
        parse_phone(raw)


@pytest.mark.parametrize(
    "raw", ["+1" + "4" * 40, "+14155550100" + " " * 30, "+1 415 555 0100" * 10]
)
def test_very_long_input_is_refused_before_parsing(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber, match="too long"):
        parse_phone(raw)


@pytest.mark.parametrize("raw", ["+1 415 555 0100 ext 5", "+14155550100;ext=12"])
def test_numbers_with_an_extension_are_refused(raw: str) -> None:
    # An extension is reached by voice after the call connects; an SMS would lose it silently.
    with pytest.raises(InvalidPhoneNumber, match="extension"):
        parse_phone(raw)


def test_invalid_phone_number_is_a_value_error() -> None:
    assert issubclass(InvalidPhoneNumber, ValueError)


def _example_numbers() -> list[str]:
    """Every example number the metadata holds (each region and non-geographic code, each
    type) in E.164, and near misses of each: last digit changed, one digit more, one less."""
    regions = [*phonenumbers.SUPPORTED_REGIONS]
    numbers = []
    for number_type in PhoneNumberType.values():
        for region in regions:
            example = phonenumbers.example_number_for_type(region, number_type)
            if example is not None:
                numbers.append(phonenumbers.format_number(example, PhoneNumberFormat.E164))
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        example = phonenumbers.example_number_for_non_geo_entity(code)
        if example is not None:
            numbers.append(phonenumbers.format_number(example, PhoneNumberFormat.E164))
    near = []
    for e164 in numbers:
        near += [e164[:-1] + str((int(e164[-1]) + 1) % 10), e164 + "5", e164[:-1]]
    return numbers + near


def test_the_plain_e164_path_agrees_with_phonenumbers_parse() -> None:
    numbers = _example_numbers()
    fast = 0
    for raw in numbers:
        try:
            expected = phonenumbers.parse(raw, None)
        except phonenumbers.NumberParseException:
            expected = None
        plain = _plain_e164(raw)
        if plain is not None:
            fast += 1
            assert plain == expected, raw
    # The shortcut must actually be taken for most numbers, or it only costs a regex.
    assert fast > 0.8 * len(numbers)


def test_the_type_in_its_region_agrees_with_number_type() -> None:
    for raw in _example_numbers():
        try:
            number = phonenumbers.parse(raw, None)
        except phonenumbers.NumberParseException:
            continue
        region = phonenumbers.region_code_for_number(number)
        assert _type_in_region(number, region) == phonenumbers.number_type(number), raw
