"""One kept-alive HTTP/1.1 client connection: an asyncio Protocol parsing with llhttp.

The connection is its own protocol object, so a request costs one `transport.write` and the
answer one parser pass, without streams, tasks or header dictionaries in between. One
request at a time (no pipelining); the pool hands a connection to one caller between its
`Pool.connection()` and the end of the answer.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Final, Protocol, cast

import httptools

from smsgw.transport.errors import (
    BadResponse,
    ConnectionLost,
    NotSent,
    ResponseFailed,
    ResponseTimeout,
    ResponseTooLarge,
)

__all__ = ["Connection", "Response"]

# Connection states.
IDLE: Final = 0  # in the pool, no request
RESERVED: Final = 1  # handed to a caller by Pool.connection(), nothing written yet
BUSY: Final = 2  # request written, answer not complete
CLOSED: Final = 3
# Bytes read per call into the connection's own buffer: a TLS record's plaintext at most.
READ_BUFFER_BYTES: Final = 16 * 1024


class Response:
    """A whole answer. `headers` are raw (name, value) pairs as received, in order."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        """The first value of header `name` (any case), or None."""
        wanted = name.lower().encode("latin-1")
        for key, value in self.headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    def __repr__(self) -> str:
        # Never the body: providers echo the message (an OTP code) back in it.
        return f"<Response {self.status}, {len(self.body)} bytes>"


class Owner(Protocol):
    """What a connection tells its pool (smsgw.transport.pool.Pool)."""

    requests: int
    not_sent_errors: int
    response_errors: int

    def _connection_idle(self, connection: Connection) -> None: ...
    def _connection_closed(self, connection: Connection, state: int) -> None: ...


class _Unsolicited(Exception):
    """Raised inside a parser callback: bytes beyond the one answer we asked for."""


class Connection(asyncio.BufferedProtocol):
    """Created by the pool; use `send()` once per `Pool.connection()`, or `release()`.

    A BufferedProtocol: the transport reads into this connection's buffer. With a plain
    Protocol, uvloop's TLS asks OpenSSL for a 256 KiB bytes object per read and shrinks it,
    and glibc serves each with mmap, mremap and munmap: three syscalls per answer, ~20 us
    of system CPU in bench/transports.py (strace). The buffer is parsed before the read
    returns (llhttp's callbacks copy what they keep), so it is reused at once.
    """

    __slots__ = (
        "_body",
        "_body_size",
        "_buffer",
        "_complete",
        "_error",
        "_head_seen",
        "_headers",
        "_headers_done",
        "_keep_alive",
        "_loop",
        "_max_body",
        "_max_head",
        "_owner",
        "_parser",
        "_response",
        "_timeout_s",
        "_timer",
        "_transport",
        "_waiter",
        "closed",
        "idle_since",
        "state",
    )

    def __init__(
        self,
        owner: Owner,
        loop: asyncio.AbstractEventLoop,
        *,
        timeout_s: float,
        max_head_bytes: int,
        max_body_bytes: int,
    ) -> None:
        self._owner = owner
        self._loop = loop
        self._timeout_s = timeout_s
        self._max_head = max_head_bytes
        self._max_body = max_body_bytes
        self._transport: asyncio.Transport | None = None
        self._buffer = memoryview(bytearray(READ_BUFFER_BYTES))
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._head_seen = 0
        self._headers_done = False
        self._complete = False
        self._keep_alive = False
        self._response: Response | None = None
        self._error: ResponseFailed | None = None
        # Connecting until connection_made; the pool reserves it for whoever asked.
        self.state = RESERVED
        self.idle_since = 0.0
        # Resolved by connection_lost: Pool.close() waits on it.
        self.closed: asyncio.Future[None] = loop.create_future()

    # -- the caller's side -------------------------------------------------------------

    def send(self, request: bytes, timeout_s: float | None = None) -> asyncio.Future[Response]:
        """Write `request` (a whole HTTP/1.1 request, see RequestTemplate) now, synchronously.

        Returns the future answer; the response timeout runs from here. Raises NotSent when
        the connection closed after it was handed out (nothing was written).
        """
        if self.state != RESERVED:
            raise RuntimeError("send() takes a connection from Pool.connection(), once")
        transport = self._transport
        if transport is None or transport.is_closing():
            self._owner.not_sent_errors += 1
            self.state = CLOSED
            raise NotSent("connection closed before the request was written")
        self.state = BUSY
        self._headers = []
        self._body = []
        self._body_size = 0
        self._head_seen = 0
        self._headers_done = False
        self._complete = False
        self._error = None
        waiter = self._waiter = self._loop.create_future()
        self._timer = self._loop.call_later(
            self._timeout_s if timeout_s is None else timeout_s, self._on_timeout
        )
        transport.write(request)
        self._owner.requests += 1
        return waiter

    def release(self) -> None:
        """Give back a connection from Pool.connection() without sending on it."""
        if self.state != RESERVED:
            raise RuntimeError("release() takes a connection from Pool.connection() not sent on")
        transport = self._transport
        if transport is None or transport.is_closing():
            self.state = CLOSED
            return
        self.state = IDLE
        self.idle_since = self._loop.time()
        self._owner._connection_idle(self)

    def idle_seconds(self) -> float:
        return self._loop.time() - self.idle_since

    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def close(self) -> None:
        """Close the connection (an answer in flight fails as ConnectionLost)."""
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # A request is one write; Nagle would hold it back waiting for an ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._buffer[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        # Also the entry for transports that do not read into buffers.
        if self.state != BUSY:
            # Bytes nobody asked for: the stream can no longer be trusted.
            self.abort()
            return
        if not self._headers_done:
            self._head_seen += len(data)
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self._complete and self._error is None:
                # The answer was whole; what follows it was not asked for. Keep the answer,
                # drop the connection.
                self._keep_alive = False
                self._finish()
                return
            error = self._error or BadResponse("unparseable answer")
            self._fail(error, exc)
            return
        if self._complete:
            self._finish()
        elif not self._headers_done and self._head_seen > self._max_head:
            # Counted before the headers end only: a head that never ends is refused after
            # the bound (plus at most one read), not buffered without limit.
            self._fail(ResponseTooLarge(f"answer head over {self._max_head} bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        state = self.state
        if state != RESERVED:
            # A reserved one stays so: its holder's send() or release() finds it closed.
            self.state = CLOSED
        self._owner._connection_closed(self, state)
        if state == BUSY:
            if self._headers_done and not self._framed():
                # No length and not chunked: the body is whatever came before the close.
                self._response = Response(
                    self._parser.get_status_code(), self._headers, b"".join(self._body)
                )
                self._keep_alive = False
                self._finish()
            else:
                detail = "during the answer" if self._head_seen else "before the answer"
                self._fail(ConnectionLost(f"connection closed {detail}"), exc)
        if not self.closed.done():
            self.closed.set_result(None)

    # -- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            raise _Unsolicited

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._headers_done = True
        if self._parser.get_status_code() == 101:
            # We never ask to switch protocols.
            self._error = BadResponse("unrequested protocol switch (101)")
            raise _Unsolicited

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._max_body:
            self._error = ResponseTooLarge(f"answer body over {self._max_body} bytes")
            raise _Unsolicited
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            # An interim answer (100 Continue, 103 Early Hints): the real one follows.
            self._headers = []
            self._body = []
            self._headers_done = False
            return
        self._keep_alive = self._parser.should_keep_alive()
        self._response = Response(status, self._headers, b"".join(self._body))
        self._complete = True

    # -- internals ----------------------------------------------------------------------

    def _framed(self) -> bool:
        """Whether the answer said where its body ends (else it ends at the close)."""
        status = self._parser.get_status_code()
        if status in (204, 304):
            return True
        return any(
            name.lower() in (b"content-length", b"transfer-encoding") for name, _ in self._headers
        )

    def _finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiter, self._waiter = self._waiter, None
        response, self._response = self._response, None
        if self._keep_alive and self._transport is not None:
            self.state = IDLE
            self.idle_since = self._loop.time()
            self._owner._connection_idle(self)
        else:
            self.state = CLOSED
            if self._transport is not None:
                self._transport.close()
        if waiter is not None and not waiter.done() and response is not None:
            waiter.set_result(response)

    def _fail(self, error: ResponseFailed, cause: BaseException | None = None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiter, self._waiter = self._waiter, None
        self.state = CLOSED
        self._owner.response_errors += 1
        if cause is not None:
            error.__cause__ = cause
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        if self._transport is not None:
            # Whatever else comes on this stream belongs to an answer we gave up on.
            self._transport.abort()

    def _on_timeout(self) -> None:
        self._timer = None
        self._fail(ResponseTimeout("no whole answer within the response timeout"))
