"""A keep-alive connection pool for one origin (scheme, host, port).

The API is shaped for paced sending (issue 14): first `conn = await pool.connection()` (an
idle connection, a new one, or a wait while the pool is full), then, once the caller holds
its rate-limiter slot, `pending = conn.send(request_bytes)` writes the request at once,
with no await between the slot and the write; `await pending` gives the answer. Anything
that fails before the write raises NotSent; anything after it ResponseFailed (ambiguous).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import os
import socket
import ssl
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self
from urllib.parse import urlsplit

from smsgw.transport.connection import BUSY, CLOSED, IDLE, RESERVED, Connection, Response
from smsgw.transport.errors import ConnectFailed, ConnectTimeout, PoolClosed, PoolTimeout
from smsgw.transport.request import RequestTemplate

__all__ = ["Pool", "PoolStats"]

DEFAULT_PORTS: Final = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot for metrics. Counters (`connects`, `requests`, errors) only grow."""

    open: int  # connecting, idle, handed out or busy
    idle: int
    in_flight: int  # requests written, answer not complete
    waiting: int  # callers waiting for a connection while the pool is full
    connects: int
    requests: int
    not_sent_errors: int  # NotSent raised: connect failures, timeouts, pool timeouts
    response_errors: int  # ResponseFailed raised: lost, timed out, bad or too large answers


class Pool:
    """Connections to one origin: kept alive, reused last-in first-out, at most
    `max_connections` open (connecting ones included).

    Timeouts: `connect_timeout_s` covers TCP and the TLS handshake; `timeout_s` runs from the
    write of a request to the end of its answer; `pool_timeout_s` (default `timeout_s`, since
    every busy connection is free or failed by then) bounds the wait for a connection while
    the pool is full. An idle connection unused for `idle_timeout_s` is closed rather than
    reused (servers drop idle connections, and a request written into one being dropped is
    lost ambiguously); keep it below the provider's keep-alive timeout.

    TLS (https origins): certificates are verified against the system's CAs or `ca_file`,
    the host name checked, SNI sent (`server_hostname` overrides the name for both); or pass
    a ready `ssl_context`. Answers are bounded: `max_head_bytes` for the status line and
    headers, `max_body_bytes` for the body. Redirects are never followed: a 3xx is an answer.
    """

    def __init__(
        self,
        origin: str,
        *,
        max_connections: int = 100,
        connect_timeout_s: float = 5.0,
        timeout_s: float = 10.0,
        pool_timeout_s: float | None = None,
        idle_timeout_s: float = 15.0,
        ca_file: str | os.PathLike[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        max_head_bytes: int = 64 * 1024,
        max_body_bytes: int = 1024 * 1024,
        close_timeout_s: float = 2.0,
    ) -> None:
        parts = urlsplit(origin)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError("origin must be http://host[:port] or https://host[:port]")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise ValueError("origin must be scheme, host and port only")
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        for name, value in (
            ("connect_timeout_s", connect_timeout_s),
            ("timeout_s", timeout_s),
            ("idle_timeout_s", idle_timeout_s),
            ("close_timeout_s", close_timeout_s),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be > 0")
        self.host = parts.hostname
        self.port = parts.port or DEFAULT_PORTS[parts.scheme]
        self.tls = parts.scheme == "https"
        bracketed = f"[{self.host}]" if ":" in self.host else self.host
        default = self.port == DEFAULT_PORTS[parts.scheme]
        self.host_header = bracketed if default else f"{bracketed}:{self.port}"
        self.origin = f"{parts.scheme}://{self.host_header}"
        self._ssl: ssl.SSLContext | None = None
        self._server_hostname: str | None = None
        if self.tls:
            if ssl_context is not None and ca_file is not None:
                raise ValueError("give ca_file or ssl_context, not both")
            self._ssl = ssl_context or _client_context(ca_file)
            self._server_hostname = server_hostname or self.host
        elif ca_file is not None or ssl_context is not None or server_hostname is not None:
            raise ValueError("TLS settings given for a plain http origin")
        self._max = max_connections
        self._connect_timeout = connect_timeout_s
        self._pool_timeout = timeout_s if pool_timeout_s is None else pool_timeout_s
        self._idle_timeout = idle_timeout_s
        self._close_timeout = close_timeout_s
        self._timeout = timeout_s
        self._max_head = max_head_bytes
        self._max_body = max_body_bytes
        self._idle: list[Connection] = []
        self._all: set[Connection] = set()
        self._waiters: collections.deque[asyncio.Future[Connection | None]] = collections.deque()
        self._open = 0
        self._closing = False
        self._drained: asyncio.Event | None = None
        self.connects = 0
        self.requests = 0
        self.not_sent_errors = 0
        self.response_errors = 0

    # -- using it -----------------------------------------------------------------------

    def template(
        self, method: str, target: str, headers: dict[str, str] | None = None
    ) -> RequestTemplate:
        """A RequestTemplate with this origin's Host."""
        return RequestTemplate(method, target, self.host_header, headers or {})

    async def connection(self) -> Connection:
        """A connection ready for one `send()` (or `release()`): idle, new, or waited for.

        Raises NotSent (ConnectFailed, ConnectTimeout, PoolTimeout, PoolClosed).
        """
        if self._closing:
            raise PoolClosed("pool closed")
        idle = self._idle
        while idle:
            connection = idle.pop()
            if connection.is_open and connection.idle_seconds() < self._idle_timeout:
                connection.state = RESERVED
                return connection
            connection.state = CLOSED
            connection.close()
        if self._open < self._max:
            self._open += 1
            return await self._connect()
        return await self._wait()

    async def request(self, request: bytes, timeout_s: float | None = None) -> Response:
        """`connection()` and `send()` in one call, for callers with no slot to take between."""
        connection = await self.connection()
        return await connection.send(request, timeout_s)

    def stats(self) -> PoolStats:
        return PoolStats(
            open=self._open,
            idle=len(self._idle),
            in_flight=sum(1 for c in self._all if c.state == BUSY),
            waiting=sum(1 for w in self._waiters if not w.done()),
            connects=self.connects,
            requests=self.requests,
            not_sent_errors=self.not_sent_errors,
            response_errors=self.response_errors,
        )

    async def close(self) -> None:
        """Refuse new work, close every connection (answers in flight fail as
        ConnectionLost) and wait until they are closed; those that do not close within
        `close_timeout_s` (a TLS peer that never answers close_notify) are aborted."""
        if not self._closing:
            self._closing = True
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(PoolClosed("pool closed"))
            for connection in list(self._all):
                connection.close()
        if self._open == 0:
            return
        drained = self._drained = self._drained or asyncio.Event()
        try:
            await asyncio.wait_for(drained.wait(), self._close_timeout)
        except TimeoutError:
            for connection in list(self._all):
                connection.abort()
            # Aborted ones are gone within a loop iteration; a connect still in progress
            # closes its connection when it ends (it sees the pool closing).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(drained.wait(), self._close_timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- internals ----------------------------------------------------------------------

    async def _connect(self) -> Connection:
        """Open a connection in a slot already counted in `_open`."""
        self.connects += 1
        loop = asyncio.get_running_loop()
        factory = functools.partial(
            Connection,
            self,
            loop,
            timeout_s=self._timeout,
            max_head_bytes=self._max_head,
            max_body_bytes=self._max_body,
        )
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    factory,
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self._server_hostname,
                    ssl_handshake_timeout=self._connect_timeout if self._ssl else None,
                )
        except TimeoutError as exc:
            self._slot_freed()
            self.not_sent_errors += 1
            raise ConnectTimeout(f"no connection within {self._connect_timeout} s") from exc
        except OSError as exc:  # ssl.SSLError and socket.gaierror are OSErrors
            self._slot_freed()
            self.not_sent_errors += 1
            raise ConnectFailed(_reason(exc)) from exc
        except BaseException:
            self._slot_freed()
            raise
        if not connection.is_open:
            # Lost already; not yet in _all, so its connection_lost left the slot to us.
            self._slot_freed()
            self.not_sent_errors += 1
            raise ConnectFailed("connection closed as soon as it opened")
        self._all.add(connection)
        if self._closing:
            connection.close()
            raise PoolClosed("pool closed")
        return connection

    async def _wait(self) -> Connection:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Connection | None] = loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self._pool_timeout):
                handed = await waiter
        except (TimeoutError, asyncio.CancelledError) as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Handed over just as we gave up: pass it on.
                handed = waiter.result()
                if handed is None:
                    self._slot_freed()
                else:
                    handed.release()
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                self.not_sent_errors += 1
                raise PoolTimeout(
                    f"all {self._max} connections busy for {self._pool_timeout} s"
                ) from exc
            raise
        if handed is None:
            # A slot, not a connection: someone's connection closed.
            return await self._connect()
        return handed

    def _connection_idle(self, connection: Connection) -> None:
        if self._closing:
            connection.state = CLOSED
            connection.close()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                connection.state = RESERVED
                waiter.set_result(connection)
                return
        self._idle.append(connection)

    def _connection_closed(self, connection: Connection, state: int) -> None:
        if connection not in self._all:
            # Lost while _connect() still awaited it: that path frees the slot, once.
            return
        self._all.discard(connection)
        if state == IDLE:
            with contextlib.suppress(ValueError):
                self._idle.remove(connection)
        self._slot_freed()

    def _slot_freed(self) -> None:
        self._open -= 1
        if self._closing:
            if self._open == 0 and self._drained is not None:
                self._drained.set()
            return
        while self._waiters and self._open < self._max:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._open += 1
                waiter.set_result(None)
                return


def _client_context(ca_file: str | os.PathLike[str] | None) -> ssl.SSLContext:
    # Verification and host name checks on (the default context's), TLS 1.2 at least.
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context


def _reason(exc: OSError) -> str:
    """Why a connect failed, in words that hold no request data."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or type(exc).__name__}"
    if isinstance(exc, socket.gaierror):
        return "host name not resolved"
    return f"cannot connect: {exc.strerror or type(exc).__name__}"
