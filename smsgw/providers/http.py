"""HttpProvider: what the HTTP adapters (Twilio, Vonage, Airtel) share.

An adapter is a codec around one HTTP exchange: `encode` builds the request body from an
OutgoingSms (the URL and headers are fixed per provider), `decode` maps the answer (status,
headers, body) to the provider's message id or raises one of the provider errors of
smsgw.errors. Only this class talks to the HTTP client: one pooled session per provider,
and one mapping from transport trouble to retryable errors that says whether the provider
may have processed the request. Building the bytes and sending them are separate steps, so
the transport can change here alone.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from smsgw.errors import RetryableProviderError, ThrottledError
from smsgw.providers.base import OutgoingSms, Provider
from smsgw.settings import ProviderSettings

__all__ = ["Answer", "HttpProvider", "json_object", "parse_retry_after"]

DEFAULT_RETRY_AFTER_S = 1.0
# A provider asking for a longer pause is better skipped for now than waited for.
MAX_RETRY_AFTER_S = 60.0


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # names in any case
    body: bytes

    @property
    def retry_after(self) -> str | None:
        return self.headers.get("Retry-After")


class HttpProvider(Provider):
    """`base_url` (the entry's, which may end in '/') and `path` give the URL every send is
    POSTed to, with `headers` (built once: per-request Basic auth and header dicts cost a
    quarter of a client's throughput at thousands of sends per second)."""

    def __init__(
        self,
        settings: ProviderSettings,
        *,
        base_url: str,
        path: str,
        headers: Mapping[str, str],
    ) -> None:
        super().__init__(settings.name)
        self.url = base_url.rstrip("/") + path
        self.headers = dict(headers)
        self._connect_timeout_s = settings.connect_timeout_s
        self._timeout_s = settings.timeout_s
        self._session: aiohttp.ClientSession | None = None

    @abstractmethod
    def encode(self, sms: OutgoingSms) -> bytes:
        """The request body for `sms`; may refuse it (PermanentProviderError) unsent."""

    @abstractmethod
    def decode(self, answer: Answer) -> str:
        """The provider's id for the message, or raise the provider error the answer means."""

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(
                total=self._timeout_s, sock_connect=self._connect_timeout_s
            ),
            skip_auto_headers=("User-Agent",),
            raise_for_status=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _try_send(self, sms: OutgoingSms) -> str:
        if self._session is None:
            raise RuntimeError(f"{type(self).__name__}.start() was not called")
        return self.decode(await self._exchange(self._session, self.encode(sms)))

    async def _exchange(self, session: aiohttp.ClientSession, body: bytes) -> Answer:
        """POST and read the whole answer; transport failures become RetryableProviderError.

        The error text names the kind of failure only: aiohttp's own messages can carry the
        URL, and nothing here may echo what was sent.
        """
        try:
            async with session.post(self.url, data=body, headers=self.headers) as response:
                return Answer(response.status, response.headers, await response.read())
        except aiohttp.ConnectionTimeoutError as exc:
            raise RetryableProviderError(self.name, "connect timeout") from exc
        except aiohttp.ClientConnectorError as exc:
            raise RetryableProviderError(self.name, "cannot connect") from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            # Sent, or partly sent, and no answer: the provider may have accepted the SMS,
            # and no SMS API offers an idempotency key, so a retry may deliver it twice.
            detail = "timeout" if isinstance(exc, TimeoutError) else "connection lost"
            raise RetryableProviderError(self.name, detail, ambiguous=True) from exc

    # The verdicts every adapter reaches the same way.

    def throttled(
        self, answer: Answer, reason: str = "throttled", code: str | None = None
    ) -> ThrottledError:
        return ThrottledError(
            self.name, reason, code=code, retry_after_s=parse_retry_after(answer.retry_after)
        )

    def server_error(self, status: int, code: str | None = None) -> RetryableProviderError:
        # The provider may have queued the SMS before failing.
        return RetryableProviderError(
            self.name, f"server error {status}", code=code, ambiguous=True
        )

    def success_without_id(self, field: str) -> RetryableProviderError:
        # Accepted, perhaps: without the id no receipt can be matched, and a retry may
        # deliver it twice.
        return RetryableProviderError(self.name, f"success without {field}", ambiguous=True)


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
