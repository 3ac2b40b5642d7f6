"""The one error tree of smsgw.

SmsgwError
 ├── ConfigError                 bad or missing configuration; names the key
 ├── QueueFull                   the bounded queue refused a message (HTTP 503)
 ├── AuditUnavailable            the audit store could not take a write (events are spooled)
 ├── ReceiptRefused              a delivery receipt is malformed (400) or not proven ours (403)
 ├── OtpError                    a verification cannot proceed
 │    ├── VerificationNotFound   unknown, expired or already approved (HTTP 404)
 │    ├── MaxAttemptsReached     the code is dead after too many wrong checks (HTTP 429)
 │    ├── TooManySends           send caps, resend cooldown, suspected SMS pumping (HTTP 429)
 │    └── TooManyFailedChecks    too many wrong codes for one number lately (HTTP 429)
 ├── ProviderError               a provider did not accept a message
 │    ├── RetryableProviderError timeout, 5xx, connection trouble, provider-side auth trouble
 │    │    └── ThrottledError    the provider asked us to slow down (429 / 20429);
 │    │                          not a failure of the message, never counts as an attempt
 │    └── PermanentProviderError invalid or unreachable number, rejected, unsubscribed
 └── TransportError              HTTP below the status code (smsgw.transport.errors):
      ├── NotSent                nothing written (connect failed or timed out, pool full)
      └── ResponseFailed         written, no whole answer: ambiguous

Retryable and permanent are split on purpose: an OTP outlives only minutes, so a message the
provider will never accept must fail at once instead of being retried until it expires.
"""

from __future__ import annotations

__all__ = [
    "AuditUnavailable",
    "ConcurrencyLimited",
    "ConfigError",
    "MaxAttemptsReached",
    "OtpError",
    "PermanentProviderError",
    "ProviderError",
    "QueueFull",
    "ReceiptRefused",
    "RetryableProviderError",
    "SmsgwError",
    "ThrottledError",
    "TooManyFailedChecks",
    "TooManySends",
    "VerificationNotFound",
]


class SmsgwError(Exception):
    """Base of every error smsgw raises on purpose."""


class ConfigError(SmsgwError):
    """Configuration is invalid; `key` is the dotted path of the offending setting."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class QueueFull(SmsgwError):
    """The queue is at its bound; the caller should come back after `retry_after_s`."""

    def __init__(self, retry_after_s: int = 1) -> None:
        super().__init__("queue is full")
        self.retry_after_s = retry_after_s


class AuditUnavailable(SmsgwError):
    """The audit store is unreachable or refused a write; the writer spools and retries."""


class ReceiptRefused(SmsgwError):
    """A provider's receipt parser refused a webhook request; nothing is recorded. The API
    answers it as the RFC 9457 problem `problem` with `status`."""

    def __init__(self, status: int, problem: str, title: str, detail: str) -> None:
        super().__init__(f"{problem}: {detail}")
        self.status = status
        self.problem = problem
        self.title = title
        self.detail = detail


class OtpError(SmsgwError):
    """A verification cannot proceed."""


class VerificationNotFound(OtpError):
    """No pending verification matches (unknown, expired or already approved)."""


class MaxAttemptsReached(OtpError):
    """Too many wrong codes: the verification is dead."""


class TooManySends(OtpError):
    """Sending another code to this number now would break the send policy."""

    def __init__(self, reason: str, retry_after_s: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class TooManyFailedChecks(OtpError):
    """Too many wrong codes for this number across its verifications: checks wait."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__("too-many-failed-checks")
        self.retry_after_s = retry_after_s


class ProviderError(SmsgwError):
    """A provider did not accept a message.

    `code` is the provider's own error code (if any), `detail` a short human text that never
    contains the message body or credentials.
    """

    def __init__(self, provider: str, detail: str, *, code: str | None = None) -> None:
        super().__init__(f"{provider}: {detail}")
        self.provider = provider
        self.detail = detail
        self.code = code


class RetryableProviderError(ProviderError):
    """Worth trying again, later or elsewhere.

    `ambiguous` is true when the request may have reached the provider (a timeout or 5xx after
    the body was sent): retrying can then deliver the SMS twice, so such retries are counted.
    """

    def __init__(
        self, provider: str, detail: str, *, code: str | None = None, ambiguous: bool = False
    ) -> None:
        super().__init__(provider, detail, code=code)
        self.ambiguous = ambiguous


class ThrottledError(RetryableProviderError):
    """The provider refused for rate reasons and processed nothing; always safe to retry."""

    def __init__(
        self, provider: str, detail: str, *, code: str | None = None, retry_after_s: float = 1.0
    ) -> None:
        super().__init__(provider, detail, code=code, ambiguous=False)
        self.retry_after_s = retry_after_s


class ConcurrencyLimited(ThrottledError):
    """The provider refused because too many of our requests were open at once (Twilio's
    429 / 20429): nothing was processed. Not a failure and not a rate pause: the sender
    holds fewer requests open for a while and retries."""


class PermanentProviderError(ProviderError):
    """The provider will never accept this message (invalid number, unsubscribed, ...)."""
