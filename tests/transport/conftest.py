"""Real local servers for the transport tests, and both event loops smsgw may run on.

Every async test here runs twice: on asyncio's default loop and on uvloop (what `smsgw
serve` uses); their transports differ in exactly the details the pool depends on (when
bytes are written, how a closed peer shows, how TLS shuts down).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import pytest
import uvloop

from testkit.fast_fake import self_signed_certificate, server_ssl_context


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


class Peer:
    """The server's side of one accepted connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def read_request(self) -> tuple[bytes, bytes] | None:
        """(head, body) of the next request, or None at EOF."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length) if length else b""
        return head, body

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(
        self, status: int = 200, body: bytes = b"ok", headers: str = "", reason: str = "OK"
    ) -> None:
        await self.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode()
            + body
        )


Handler = Callable[[Peer], Awaitable[None]]


class Server:
    """An asyncio server running `handler` per connection; counts what it saw."""

    def __init__(self, handler: Handler, context: ssl.SSLContext | None = None) -> None:
        self._handler = handler
        self._context = context
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._peers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def origin(self) -> str:
        scheme = "https" if self._context else "http"
        host = "localhost" if self._context else "127.0.0.1"
        return f"{scheme}://{host}:{self.port}"

    async def start(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        self._peers.add(writer)
        try:
            await self._handler(Peer(reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self.open -= 1
            self._peers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._peers):
            writer.transport.abort()
        await self._server.wait_closed()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    """`await serve(handler, context=None)` starts a Server stopped after the test."""
    servers: list[Server] = []

    async def start(handler: Handler, context: ssl.SSLContext | None = None) -> Server:
        server = await Server(handler, context).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


def keep_answering(
    status: int = 200, body: bytes = b"ok", headers: str = "", record: list[bytes] | None = None
) -> Handler:
    """A handler answering every request on the connection the same way."""

    async def handler(peer: Peer) -> None:
        while (request := await peer.read_request()) is not None:
            if record is not None:
                record.append(request[0] + request[1])
            await peer.answer(status, body, headers)

    return handler


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA and a server certificate it signed (for localhost), and an unrelated CA."""
    good = tmp_path_factory.mktemp("tls-good")
    cert, key = self_signed_certificate(good)
    other = tmp_path_factory.mktemp("tls-other")
    self_signed_certificate(other)
    return {"ca": good / "ca.pem", "cert": cert, "key": key, "wrong_ca": other / "ca.pem"}


@pytest.fixture
def server_tls(certificates: dict[str, Path]) -> ssl.SSLContext:
    return server_ssl_context(certificates["cert"], certificates["key"])
