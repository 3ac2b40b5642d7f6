"""One-time passwords: codes, templates, storage and the verification policy."""

from smsgw.otp.codes import CodeHasher, generate_code
from smsgw.otp.service import OtpService, StartedVerification, VerificationCheck
from smsgw.otp.store import MemoryOtpStore, OtpStore

__all__ = [
    "CodeHasher",
    "MemoryOtpStore",
    "OtpService",
    "OtpStore",
    "StartedVerification",
    "VerificationCheck",
    "generate_code",
]
