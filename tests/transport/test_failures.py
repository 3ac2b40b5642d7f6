"""Transport failures keep the one distinction the adapters need: was the request sent?

Before the write (refused, connect timeout, full pool, closed pool): NotSent, never
ambiguous. After it (lost mid-answer, no answer in time): ResponseFailed, ambiguous.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from smsgw.transport import (
    ConnectFailed,
    ConnectionLost,
    ConnectTimeout,
    NotSent,
    Pool,
    PoolClosed,
    PoolTimeout,
    ResponseTimeout,
)
from tests.transport.conftest import Peer, Server, keep_answering

pytestmark = pytest.mark.timeout(20)

Serve = Callable[..., Awaitable[Server]]


def post(pool: Pool) -> bytes:
    return pool.template("POST", "/send").build(b"To=%2B14155550100")


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port with nothing listening (bound, never listened: nobody else gets it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def full_backlog_port() -> Iterator[int]:
    """A listening socket whose accept queue is full and never served: on Linux further SYNs
    are dropped (tcp_abort_on_overflow=0), so a connect hangs until its timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):
            filler = socket.socket()
            filler.settimeout(0.2)
            fillers.append(filler)
            try:
                filler.connect(("127.0.0.1", port))
            except TimeoutError:
                break  # the queue is full: this SYN was dropped
        else:
            pytest.skip("the kernel kept accepting connections: no full backlog to test with")
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_connect_refused_is_not_sent(refused_port: int) -> None:
    async with Pool(f"http://127.0.0.1:{refused_port}") as pool:
        with pytest.raises(ConnectFailed, match="cannot connect") as caught:
            await pool.request(post(pool))
        assert not caught.value.ambiguous
        stats = pool.stats()
    assert (stats.open, stats.not_sent_errors, stats.requests) == (0, 1, 0)


async def test_connect_timeout_is_not_sent(full_backlog_port: int) -> None:
    async with Pool(f"http://127.0.0.1:{full_backlog_port}", connect_timeout_s=0.3) as pool:
        started = time.monotonic()
        with pytest.raises(ConnectTimeout) as caught:
            await pool.connection()
        assert 0.25 < time.monotonic() - started < 2
        assert not caught.value.ambiguous
        assert pool.stats().open == 0


async def test_tls_handshake_that_never_ends_is_a_connect_timeout(serve: Serve) -> None:
    async def silent(peer: Peer) -> None:
        await asyncio.sleep(10)  # accepts TCP, never answers the ClientHello

    server = await serve(silent)
    origin = f"https://localhost:{server.port}"
    async with Pool(origin, connect_timeout_s=0.3) as pool:
        with pytest.raises(ConnectTimeout):
            await pool.connection()
        assert pool.stats().open == 0


async def test_close_before_any_answer_is_ambiguous(serve: Serve) -> None:
    async def hang_up(peer: Peer) -> None:
        await peer.read_request()  # read it all, then leave without a word

    server = await serve(hang_up)
    async with Pool(server.origin) as pool:
        with pytest.raises(ConnectionLost, match="before the answer") as caught:
            await pool.request(post(pool))
        assert caught.value.ambiguous
        assert pool.stats().response_errors == 1


async def test_close_mid_answer_is_ambiguous(serve: Serve) -> None:
    async def half(peer: Peer) -> None:
        await peer.read_request()
        await peer.write(b'HTTP/1.1 201 Created\r\nContent-Length: 100\r\n\r\n{"sid": "SM')

    server = await serve(half)
    async with Pool(server.origin) as pool:
        with pytest.raises(ConnectionLost, match="during the answer") as caught:
            await pool.request(post(pool))
    assert caught.value.ambiguous


async def test_response_timeout_is_ambiguous_and_drops_the_connection(serve: Serve) -> None:
    eof = asyncio.Event()

    async def mute(peer: Peer) -> None:
        await peer.read_request()
        await peer.reader.read()  # until the client gives up and closes
        eof.set()

    server = await serve(mute)
    async with Pool(server.origin, timeout_s=0.2) as pool:
        started = time.monotonic()
        with pytest.raises(ResponseTimeout) as caught:
            await pool.request(post(pool))
        assert 0.15 < time.monotonic() - started < 2
        assert caught.value.ambiguous
        await asyncio.wait_for(eof.wait(), 2)
        await asyncio.sleep(0)
        assert pool.stats().open == 0


async def test_per_request_timeout_overrides_the_pool_default(serve: Serve) -> None:
    async def slow(peer: Peer) -> None:
        await peer.read_request()
        await asyncio.sleep(0.3)
        await peer.answer()

    server = await serve(slow)
    async with Pool(server.origin, timeout_s=0.05) as pool:
        connection = await pool.connection()
        assert (await connection.send(post(pool), timeout_s=5)).status == 200


async def test_peer_closing_a_handed_out_connection_is_not_sent(serve: Serve) -> None:
    closed = asyncio.Event()

    async def answer_then_close(peer: Peer) -> None:
        await peer.read_request()
        await peer.answer()
        await closed.wait()
        peer.writer.close()

    server = await serve(answer_then_close)
    async with Pool(server.origin) as pool:
        await pool.request(post(pool))
        connection = await pool.connection()  # the idle one, handed out
        closed.set()
        for _ in range(50):
            if not connection.is_open:
                break
            await asyncio.sleep(0.01)
        # Closed between connection() and send(): nothing was written, safe to retry.
        with pytest.raises(NotSent, match="before the request was written"):
            connection.send(post(pool))
        await asyncio.sleep(0.05)
        assert pool.stats().open == 0


async def test_idle_connection_closed_by_the_peer_is_not_reused(serve: Serve) -> None:
    async def one_answer(peer: Peer) -> None:
        await peer.read_request()
        await peer.answer()
        # and the server's keep-alive timeout ends the connection

    server = await serve(one_answer)
    async with Pool(server.origin) as pool:
        await pool.request(post(pool))
        await asyncio.sleep(0.1)
        assert pool.stats().idle == 0
        assert (await pool.request(post(pool))).status == 200
    assert server.connections == 2


async def test_idle_timeout_closes_instead_of_reusing(serve: Serve) -> None:
    server = await serve(keep_answering())
    async with Pool(server.origin, idle_timeout_s=0.05) as pool:
        await pool.request(post(pool))
        await asyncio.sleep(0.1)
        await pool.request(post(pool))
    assert server.connections == 2


async def test_full_pool_times_out_as_not_sent(serve: Serve) -> None:
    release = asyncio.Event()

    async def held(peer: Peer) -> None:
        await peer.read_request()
        await release.wait()
        await peer.answer()

    server = await serve(held)
    async with Pool(server.origin, max_connections=1, pool_timeout_s=0.1) as pool:
        first = asyncio.ensure_future(pool.request(post(pool)))
        await asyncio.sleep(0.05)
        with pytest.raises(PoolTimeout) as caught:
            await pool.connection()
        assert not caught.value.ambiguous
        release.set()
        assert (await first).status == 200
        assert pool.stats().waiting == 0


async def test_close_fails_waiters_and_answers_in_flight(serve: Serve) -> None:
    async def held(peer: Peer) -> None:
        await peer.read_request()
        await asyncio.sleep(10)

    server = await serve(held)
    pool = Pool(server.origin, max_connections=1)
    in_flight = asyncio.ensure_future(pool.request(post(pool)))
    await asyncio.sleep(0.05)
    waiting = asyncio.ensure_future(pool.connection())
    await asyncio.sleep(0.01)
    await pool.close()
    with pytest.raises(PoolClosed):
        await waiting
    with pytest.raises(ConnectionLost):
        await in_flight
    with pytest.raises(PoolClosed):
        await pool.connection()
    assert pool.stats().open == 0


async def test_close_with_tls_connections_leaves_nothing_open(
    serve: Serve, server_tls: ssl.SSLContext, certificates: dict[str, Path]
) -> None:
    server = await serve(keep_answering(), server_tls)
    pool = Pool(server.origin, ca_file=str(certificates["ca"]))
    await asyncio.gather(*(pool.request(post(pool)) for _ in range(4)))
    await pool.close()
    assert pool.stats().open == 0
    await asyncio.sleep(0.05)
    assert server.open == 0


async def test_cancelled_caller_gives_the_connection_back(serve: Serve) -> None:
    async def slow(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await asyncio.sleep(0.1)
            await peer.answer()

    server = await serve(slow)
    async with Pool(server.origin, max_connections=1) as pool:
        task = asyncio.ensure_future(pool.request(post(pool)))
        await asyncio.sleep(0.02)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # The answer still arrives and is read; the connection is then reused.
        assert (await pool.request(post(pool))).status == 200
    assert server.connections == 1


async def test_cancelled_waiter_does_not_leak_its_slot(serve: Serve) -> None:
    server = await serve(keep_answering())
    async with Pool(server.origin, max_connections=1) as pool:
        held = await pool.connection()
        waiter = asyncio.ensure_future(pool.connection())
        await asyncio.sleep(0.01)
        held.release()  # handed to the waiter...
        waiter.cancel()  # ...which is cancelled before it runs
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        assert (await asyncio.wait_for(pool.request(post(pool)), 2)).status == 200
        assert pool.stats().open == 1
