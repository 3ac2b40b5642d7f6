"""HttpProvider: what the HTTP adapters (Twilio, Vonage, Airtel) share.

An adapter is a codec around one HTTP exchange: `encode` builds the request body from an
OutgoingSms (the URL and headers are fixed per provider), `decode` maps the answer (status,
headers, body) to the provider's message id or raises one of the provider errors of
smsgw.errors. Only this class talks to the HTTP client (smsgw.transport): one keep-alive
pool per provider, and one mapping from transport trouble to retryable errors that says
whether the provider may have processed the request:

    transport error                         -> RetryableProviderError detail, ambiguous
    NotSent   ConnectFailed (refused, DNS, TLS)  "cannot connect"           no
              ConnectTimeout                     "connect timeout"          no
              PoolTimeout                        "no free connection"       no
              PoolClosed                         "provider closed"          no
              (closed before the write)          "connection closed"        no
    ResponseFailed ResponseTimeout               "timeout"                  yes
              ConnectionLost                     "connection lost"          yes
              BadResponse                        "unreadable answer"        yes
              ResponseTooLarge                   "answer too large"         yes
    a 3xx answer (redirects are not followed)    "redirected"               no

Error texts name the kind of failure only, never the URL, a header or the body.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Awaitable, Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from smsgw.errors import ConfigError, ProviderError, RetryableProviderError, ThrottledError
from smsgw.providers.base import OutgoingSms, Provider, SendHandle, SendReceipt
from smsgw.providers.receipt_tags import ReceiptRoute
from smsgw.settings import ProviderSettings
from smsgw.transport import (
    BadResponse,
    ConnectFailed,
    Connection,
    ConnectionLost,
    ConnectTimeout,
    NotSent,
    Pool,
    PoolClosed,
    PoolStats,
    PoolTimeout,
    RequestTemplate,
    Response,
    ResponseFailed,
    ResponseTimeout,
    ResponseTooLarge,
    json_object,
)

__all__ = ["Answer", "HttpProvider", "json_object", "parse_retry_after"]

DEFAULT_RETRY_AFTER_S = 1.0
# A provider asking for a longer pause is better skipped for now than waited for.
MAX_RETRY_AFTER_S = 60.0
# Connections per provider when its entry sets no max_in_flight. The pool is not what paces
# sends (the rate limiter and the dispatcher's concurrency are); this bound only keeps a
# runaway from opening sockets until the process runs out of descriptors. With
# max_in_flight set, no replica ever needs more than the whole fleet may have open.
UNCAPPED_CONNECTIONS: Final = 4096

_NOT_SENT: Final[tuple[tuple[type[NotSent], str], ...]] = (
    (ConnectTimeout, "connect timeout"),
    (ConnectFailed, "cannot connect"),
    (PoolTimeout, "no free connection"),
    (PoolClosed, "provider closed"),
)
_NO_ANSWER: Final[tuple[tuple[type[ResponseFailed], str], ...]] = (
    (ResponseTimeout, "timeout"),
    (ConnectionLost, "connection lost"),
    (BadResponse, "unreadable answer"),
    (ResponseTooLarge, "answer too large"),
)


class _Headers(Mapping[str, str]):
    """An answer's headers by name in any case, decoded only when read (most answers are
    judged on the status and body alone)."""

    __slots__ = ("_response",)

    def __init__(self, response: Response) -> None:
        self._response = response

    def __getitem__(self, name: str) -> str:
        value = self._response.header(name)
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return (name.decode("latin-1") for name, _ in self._response.headers)

    def __len__(self) -> int:
        return len(self._response.headers)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # names in any case
    body: bytes

    @property
    def retry_after(self) -> str | None:
        return self.headers.get("Retry-After")


class HttpProvider(Provider):
    """`base_url` (the entry's, which may end in '/' or carry a path prefix) and `path`
    give the URL every send is POSTed to, with `headers` (built into the request bytes
    once: only the length and the body change per send)."""

    def __init__(
        self,
        settings: ProviderSettings,
        *,
        base_url: str,
        path: str,
        headers: Mapping[str, str],
        receipts: ReceiptRoute | None = None,
    ) -> None:
        """`receipts`: our webhook for this provider's delivery receipts, if any, and the
        tagger whose tag each send carries, proving we sent the message through it."""
        super().__init__(settings.name)
        self._receipts = receipts
        self.url = base_url.rstrip("/") + path
        self.headers = dict(headers)
        parts = urlsplit(base_url)
        if parts.query or parts.fragment:
            raise ConfigError(f"providers.{self.name}.base_url", "takes no query or fragment")
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._ca_file = settings.ca_file
        self._connect_timeout_s = settings.connect_timeout_s
        self._timeout_s = settings.timeout_s
        self._max_connections = settings.max_in_flight or UNCAPPED_CONNECTIONS
        # A first pool, thrown away, checks the origin and the TLS settings now rather than
        # at start(); the template (its Host, our headers) is the same for every pool.
        target = parts.path.rstrip("/") + path
        self._template: RequestTemplate = self._new_pool().template("POST", target, self.headers)
        self._pool: Pool | None = None

    def _new_pool(self) -> Pool:
        if self._ca_file is not None and not self._origin.startswith("https:"):
            raise ConfigError(f"providers.{self.name}.ca_file", "given for a plain http base_url")
        try:
            return Pool(
                self._origin,
                max_connections=self._max_connections,
                connect_timeout_s=self._connect_timeout_s,
                timeout_s=self._timeout_s,
                ca_file=self._ca_file,
            )
        except ValueError as exc:
            raise ConfigError(f"providers.{self.name}.base_url", str(exc)) from exc
        except OSError as exc:  # ssl.SSLError too: the CA file is missing or not PEM
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(f"providers.{self.name}.ca_file", f"cannot load: {reason}") from exc

    @abstractmethod
    def encode(self, sms: OutgoingSms) -> bytes:
        """The request body for `sms`; may refuse it (PermanentProviderError) unsent."""

    @abstractmethod
    def decode(self, answer: Answer) -> str:
        """The provider's id for the message, or raise the provider error the answer means."""

    async def start(self) -> None:
        if self._pool is None:
            self._pool = self._new_pool()

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def pool_stats(self) -> PoolStats | None:
        """The connection pool's counters (None before start() and after close())."""
        return None if self._pool is None else self._pool.stats()

    async def ready(self) -> SendHandle:
        if self._pool is None:
            raise RuntimeError(f"{type(self).__name__}.start() was not called")
        try:
            connection = await self._pool.connection()
        except NotSent as exc:
            raise self.not_sent(exc) from exc
        return _HttpSendHandle(self, connection)

    async def send(self, sms: OutgoingSms) -> SendReceipt:
        # launch() and the answer log their own failures (the dispatcher's path, which
        # never calls send()); only a failed ready() is logged here.
        try:
            handle = await self.ready()
        except ProviderError as exc:
            self.log_failure(sms.message_id, exc)
            raise
        return await handle.launch(sms)

    async def _try_send(self, sms: OutgoingSms) -> str:
        return (await self.send(sms)).provider_message_id

    def _write(self, connection: Connection, sms: OutgoingSms) -> _PendingSend:
        """Encode and write at once (no await); the answer is read when it is awaited."""
        try:
            body = self.encode(sms)
        except ProviderError as exc:
            connection.release()
            self.log_failure(sms.message_id, exc)
            raise
        except BaseException:
            connection.release()
            raise
        try:
            waiter = connection.send(self._template.build(body))
        except NotSent as exc:
            error = self.not_sent(exc)
            self.log_failure(sms.message_id, error)
            raise error from exc
        return _PendingSend(self, waiter, time.perf_counter(), sms.message_id)

    async def _receive(
        self, waiter: Awaitable[Response], written_at: float, message_id: str
    ) -> SendReceipt:
        try:
            return await self._answer(waiter, written_at)
        except ProviderError as exc:
            self.log_failure(message_id, exc)
            raise

    async def _answer(self, waiter: Awaitable[Response], written_at: float) -> SendReceipt:
        try:
            response = await waiter
        except ResponseFailed as exc:
            # Sent, or partly sent, and no whole answer: the provider may have accepted the
            # SMS, and no SMS API offers an idempotency key, so a retry may deliver it twice.
            detail = next((d for kind, d in _NO_ANSWER if isinstance(exc, kind)), "no answer")
            raise RetryableProviderError(self.name, detail, ambiguous=True) from exc
        latency_s = time.perf_counter() - written_at
        if 300 <= response.status < 400:
            # Never followed: the request would go where the configured base_url does not
            # say (with our credentials), and it says the provider took nothing here.
            raise RetryableProviderError(self.name, "redirected")
        answer = Answer(response.status, _Headers(response), response.body)
        return SendReceipt(self.name, self.decode(answer), latency_s)

    # The verdicts every adapter reaches the same way.

    def not_sent(self, exc: NotSent) -> RetryableProviderError:
        # Nothing was written: safe to send again, here or elsewhere.
        detail = next((d for kind, d in _NOT_SENT if isinstance(exc, kind)), "connection closed")
        return RetryableProviderError(self.name, detail)

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


class _HttpSendHandle(SendHandle):
    """Holds one pooled connection from ready() until launch() writes on it or cancel()
    gives it back; exactly one of the two must be called."""

    __slots__ = ("_connection", "_http")

    def __init__(self, provider: HttpProvider, connection: Connection) -> None:
        super().__init__(provider)
        self._http = provider
        self._connection: Connection | None = connection

    def launch(self, sms: OutgoingSms) -> Awaitable[SendReceipt]:
        connection, self._connection = self._connection, None
        if connection is None:
            raise RuntimeError("a SendHandle launches once, and not after cancel()")
        return self._http._write(connection, sms)

    def cancel(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.release()


class _PendingSend:
    """The answer of a written request. An awaitable rather than a coroutine: the request
    is already on its way, and a caller that drops it unawaited (cancelled meanwhile)
    leaves no never-awaited coroutine behind; the connection returns to the pool when the
    answer ends or times out either way."""

    __slots__ = ("_message_id", "_provider", "_waiter", "_written_at")

    def __init__(
        self,
        provider: HttpProvider,
        waiter: Awaitable[Response],
        written_at: float,
        message_id: str,
    ) -> None:
        self._provider = provider
        self._waiter = waiter
        self._written_at = written_at
        self._message_id = message_id

    def __await__(self) -> Generator[Any, None, SendReceipt]:
        receive = self._provider._receive(self._waiter, self._written_at, self._message_id)
        return receive.__await__()


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
