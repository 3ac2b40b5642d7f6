"""HTTP plumbing shared by the HTTP provider adapters (Twilio, Vonage, Airtel).

One pooled session per provider, and one mapping from transport trouble to retryable errors
that says whether the provider may have processed the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from smsgw.errors import RetryableProviderError

__all__ = ["Answer", "json_object", "open_session", "parse_retry_after", "post"]

DEFAULT_RETRY_AFTER_S = 1.0
# A provider asking for a longer pause is better skipped for now than waited for.
MAX_RETRY_AFTER_S = 60.0


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    retry_after: str | None
    payload: bytes


def open_session(*, connect_timeout_s: float, timeout_s: float) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s),
        skip_auto_headers=("User-Agent",),
        raise_for_status=False,
    )


async def post(
    session: aiohttp.ClientSession,
    provider: str,
    url: str,
    *,
    data: bytes,
    headers: dict[str, str],
) -> Answer:
    """POST and read the whole answer; transport failures become RetryableProviderError.

    The error text names the kind of failure only: aiohttp's own messages can carry the URL,
    and nothing here may echo what was sent.
    """
    try:
        async with session.post(url, data=data, headers=headers) as response:
            return Answer(
                response.status, response.headers.get("Retry-After"), await response.read()
            )
    except aiohttp.ConnectionTimeoutError as exc:
        raise RetryableProviderError(provider, "connect timeout") from exc
    except aiohttp.ClientConnectorError as exc:
        raise RetryableProviderError(provider, "cannot connect") from exc
    except (TimeoutError, aiohttp.ClientError) as exc:
        # Sent, or partly sent, and no answer: the provider may have accepted the SMS, and
        # no SMS API offers an idempotency key, so a retry may deliver it twice.
        detail = "timeout" if isinstance(exc, TimeoutError) else "connection lost"
        raise RetryableProviderError(provider, detail, ambiguous=True) from exc


def json_object(payload: bytes) -> dict[str, Any]:
    """The JSON object in `payload`, or {} for anything else (HTML error pages, garbage)."""
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def parse_retry_after(value: str | None) -> float:
    # Seconds are expected; an HTTP date or garbage falls back to a short pause.
    if value is None:
        return DEFAULT_RETRY_AFTER_S
    try:
        seconds = float(value)
    except ValueError:
        return DEFAULT_RETRY_AFTER_S
    if seconds != seconds:  # NaN
        return DEFAULT_RETRY_AFTER_S
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
