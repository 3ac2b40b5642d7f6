"""Codes: random digits of the asked length; stored as HMAC bound to the verification id."""

from __future__ import annotations

import hmac
from collections import Counter

import pytest

from smsgw.otp import codes
from smsgw.otp.codes import CodeHasher, generate_code

pytestmark = pytest.mark.timeout(30)

SECRET = b"server-secret-0123456789abcdef"


@pytest.mark.parametrize("length", range(4, 11))
def test_codes_have_the_asked_number_of_digits(length: int) -> None:
    for _ in range(200):
        code = generate_code(length)
        assert len(code) == length
        assert code.isdigit()
        assert code.isascii()


def test_leading_zeros_are_possible_and_digits_are_spread() -> None:
    # 2000 codes of 4 digits: P(no leading zero) = 0.9**2000 ~ 1e-92, and every digit shows
    # up at every position with the same odds, so this never flakes but catches a generator
    # that draws from 1000..9999 or pads with anything but zeros.
    generated = [generate_code(4) for _ in range(2000)]
    assert any(code.startswith("0") for code in generated)
    for position in range(4):
        assert set(code[position] for code in generated) == set("0123456789")
    # Not a constant or a short cycle: nearly all distinct (10000 possible values).
    assert len(set(generated)) > 1500
    # Roughly uniform first digit: each digit ~200 of 2000; 100..320 is > 7 sigma either way.
    first = Counter(code[0] for code in generated)
    assert all(100 <= first[digit] <= 320 for digit in "0123456789"), first


def test_long_codes_keep_leading_zeros() -> None:
    generated = [generate_code(10) for _ in range(500)]
    assert all(len(code) == 10 for code in generated)
    assert any(code.startswith("0") for code in generated)


def test_digest_is_hmac_sha256_of_id_and_code() -> None:
    hasher = CodeHasher(SECRET)
    digest = hasher.digest("otp_1", "123456")
    assert len(digest) == 32
    assert digest == CodeHasher(SECRET).digest("otp_1", "123456")  # deterministic
    assert b"123456" not in digest


def test_digest_is_bound_to_the_verification_id() -> None:
    hasher = CodeHasher(SECRET)
    assert hasher.digest("otp_1", "123456") != hasher.digest("otp_2", "123456")


def test_digest_depends_on_the_secret() -> None:
    assert CodeHasher(SECRET).digest("otp_1", "123456") != CodeHasher(b"other").digest(
        "otp_1", "123456"
    )


def test_digest_differs_per_code() -> None:
    hasher = CodeHasher(SECRET)
    assert hasher.digest("otp_1", "123456") != hasher.digest("otp_1", "123457")
    assert hasher.digest("otp_1", "0123") != hasher.digest("otp_1", "123")


def test_matches_only_the_right_code_for_the_right_id() -> None:
    hasher = CodeHasher(SECRET)
    stored = hasher.digest("otp_1", "004711")
    assert hasher.matches("otp_1", "004711", stored)
    assert not hasher.matches("otp_1", "004712", stored)
    assert not hasher.matches("otp_1", "4711", stored)
    assert not hasher.matches("otp_2", "004711", stored)
    assert not CodeHasher(b"another-secret-0123456").matches("otp_1", "004711", stored)


def test_matches_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(codes.hmac, "compare_digest", spy)
    hasher = CodeHasher(SECRET)
    stored = hasher.digest("otp_1", "123456")
    assert hasher.matches("otp_1", "123456", stored)
    assert not hasher.matches("otp_1", "654321", stored)
    assert len(calls) == 2
    assert all(b == stored for _, b in calls)
