"""One-time codes: made by `secrets`, stored only as HMAC-SHA256, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["CodeHasher", "generate_code"]


def generate_code(length: int) -> str:
    """`length` decimal digits, uniformly random (leading zeros allowed)."""
    return f"{secrets.randbelow(10**length):0{length}d}"


class CodeHasher:
    """HMAC under a server secret, bound to the verification id.

    Binding to the id means a leaked store cannot be attacked with one precomputed table of
    all codes: every verification needs its own brute force, and without the secret none works.
    """

    def __init__(self, secret: bytes, previous: bytes | None = None) -> None:
        self._secret = secret
        # During a rotation: codes hashed under the secret being replaced still match, for
        # as long as they live (otp.ttl_s); new codes use the new one.
        self._previous = previous

    def digest(self, verification_id: str, code: str) -> bytes:
        return _digest(self._secret, verification_id, code)

    def tag(self, purpose: str, value: str) -> str:
        """A stable name for `value` (a phone number, a client and a number) that tells
        nothing without the secret: 32 hex digits of an HMAC under the current secret, apart
        per `purpose`. Names made before a rotation of otp.secret are not recognised after."""
        message = f"{purpose}\x00{value}".encode()
        return hmac.digest(self._secret, message, hashlib.sha256)[:16].hex()

    def matches(self, verification_id: str, code: str, expected: bytes) -> bool:
        if hmac.compare_digest(self.digest(verification_id, code), expected):
            return True
        if self._previous is None:
            return False
        return hmac.compare_digest(_digest(self._previous, verification_id, code), expected)


def _digest(secret: bytes, verification_id: str, code: str) -> bytes:
    message = f"{verification_id}:{code}".encode()
    # hmac.digest is the one-shot C path, several times faster than hmac.new().digest().
    return hmac.digest(secret, message, hashlib.sha256)
