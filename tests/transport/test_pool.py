"""The pool: its bound under concurrency, the synchronous write after `connection()`, stats,
and the fast fake Twilio served as its own process."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import orjson
import pytest

from smsgw.transport import Pool
from testkit.fast_fake import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN
from testkit.processes import start_process, stop_process
from tests.transport.conftest import Peer, Server, keep_answering

pytestmark = pytest.mark.timeout(30)

Serve = Callable[..., Awaitable[Server]]


async def test_pool_bound_holds_under_concurrency(serve: Serve) -> None:
    async def slow(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await asyncio.sleep(0.01)
            await peer.answer(201, b"{}")

    server = await serve(slow)
    async with Pool(server.origin, max_connections=4) as pool:
        template = pool.template("POST", "/send")
        most_in_flight = 0

        async def one(i: int) -> int:
            nonlocal most_in_flight
            connection = await pool.connection()
            pending = connection.send(template.build(b"n=%d" % i))
            most_in_flight = max(most_in_flight, pool.stats().in_flight)
            return (await pending).status

        statuses = await asyncio.gather(*(one(i) for i in range(60)))
        stats = pool.stats()
    assert statuses == [201] * 60
    assert server.most_open <= 4
    assert most_in_flight <= 4
    assert stats.connects <= 4
    assert (stats.requests, stats.not_sent_errors, stats.response_errors) == (60, 0, 0)


class _StampingServer:
    """A blocking server in a thread: stamps when each request's bytes arrive, answers."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._context = context
        self.arrived: list[float] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        raw, _ = self._listener.accept()
        conn = self._context.wrap_socket(raw, server_side=True) if self._context else raw
        with conn:
            buffer = b""
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
                if b"\r\n\r\n" in buffer:
                    self.arrived.append(time.monotonic())
                    buffer = b""
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    def close(self) -> None:
        self._listener.close()
        self._thread.join(5)


@pytest.fixture
def stamping() -> Iterator[Callable[..., _StampingServer]]:
    servers: list[_StampingServer] = []

    def start(context: ssl.SSLContext | None = None) -> _StampingServer:
        server = _StampingServer(context)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_send_writes_the_request_before_returning(
    stamping: Callable[..., _StampingServer],
    server_tls: ssl.SSLContext,
    certificates: dict[str, Path],
    tls: bool,
) -> None:
    """The issue-14 property: after `connection()`, `send()` puts the bytes on the wire
    itself, with no await: a loop that stays blocked right after it does not delay them."""
    server = stamping(server_tls if tls else None)
    origin = f"{'https://localhost' if tls else 'http://127.0.0.1'}:{server.port}"
    ca = certificates["ca"] if tls else None
    async with Pool(origin, ca_file=ca) as pool:
        template = pool.template("POST", "/send")
        assert (await pool.request(template.build(b"warm"))).status == 200  # handshake done
        connection = await pool.connection()
        sent_at = time.monotonic()
        pending = connection.send(template.build(b"now"))
        time.sleep(0.3)  # the loop is blocked: nothing scheduled for later can run
        assert len(server.arrived) == 2
        assert server.arrived[1] - sent_at < 0.2
        assert (await pending).status == 200


async def test_stats_follow_the_connections(serve: Serve) -> None:
    release = asyncio.Event()

    async def held(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await release.wait()
            await peer.answer()

    server = await serve(held)
    async with Pool(server.origin, max_connections=2, pool_timeout_s=5) as pool:
        template = pool.template("GET", "/")
        busy = [asyncio.ensure_future(pool.request(template.build())) for _ in range(3)]
        await asyncio.sleep(0.05)
        stats = pool.stats()
        assert (stats.open, stats.in_flight, stats.waiting, stats.idle) == (2, 2, 1, 0)
        release.set()
        await asyncio.gather(*busy)
        stats = pool.stats()
        assert (stats.open, stats.in_flight, stats.waiting, stats.idle) == (2, 0, 0, 2)
        assert (stats.connects, stats.requests) == (2, 3)


async def test_release_and_send_need_a_reserved_connection(serve: Serve) -> None:
    server = await serve(keep_answering())
    async with Pool(server.origin) as pool:
        connection = await pool.connection()
        connection.release()
        with pytest.raises(RuntimeError, match=r"Pool\.connection"):
            connection.send(b"GET / HTTP/1.1\r\n\r\n")
        with pytest.raises(RuntimeError, match=r"Pool\.connection"):
            connection.release()
        assert pool.stats().idle == 1


# -- against the fast fake Twilio, as its own process -------------------------------


@pytest.fixture(params=["tcp", "tls"])
def fast_fake(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    argv = ["python", "-m", "testkit.fast_fake"]
    if request.param == "tls":
        argv += ["--tls-dir", str(tmp_path / "tls")]
    proc, port = start_process(argv, tmp_path / "fast.port")
    scheme = "https" if request.param == "tls" else "http"
    try:
        yield f"{scheme}://localhost:{port}", tmp_path / "tls" / "ca.pem"
    finally:
        assert stop_process(proc) == 0
    assert "STATS {" in (tmp_path / "fast.port.log").read_text()


async def test_twilio_sends_through_the_fast_fake(fast_fake: tuple[str, Path]) -> None:
    origin, ca = fast_fake
    path = f"/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Messages.json"
    credentials = base64.b64encode(f"{DEFAULT_ACCOUNT_SID}:{DEFAULT_AUTH_TOKEN}".encode())
    headers = {
        "Authorization": "Basic " + credentials.decode(),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    tls = origin.startswith("https")
    async with Pool(origin, max_connections=8, ca_file=ca if tls else None) as pool:
        template = pool.template("POST", path, headers)
        form = b"To=%2B14155550100&From=%2B15005550006&Body=Your+code+is+123456"
        answers = await asyncio.gather(*(pool.request(template.build(form)) for _ in range(40)))
        assert {a.status for a in answers} == {201}
        resource = orjson.loads(answers[0].body)
        assert resource["sid"].startswith("SM")
        assert len(resource["sid"]) == 34
        assert (resource["to"], resource["body"]) == ("+14155550100", "Your code is 123456")
        assert answers[0].header("content-type") == "application/json;charset=utf-8"
        wrong = await pool.request(
            pool.template("POST", path, {**headers, "Authorization": "Basic bm86bm8="}).build(form)
        )
        assert wrong.status == 401
        assert wrong.header("WWW-Authenticate") == 'Basic realm="Twilio API"'
        stats = orjson.loads((await pool.request(pool.template("GET", "/_stats").build())).body)
    assert stats["requests"] == 41
    assert stats["by_status"] == {"201": 40, "401": 1}
    assert stats["connections"] <= 8  # kept alive
    assert stats["cpu_s"] > 0
