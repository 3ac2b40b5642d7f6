"""smsgw: a self-hosted OTP and SMS gateway."""

__version__ = "0.1.0"
__all__ = ["__version__"]
