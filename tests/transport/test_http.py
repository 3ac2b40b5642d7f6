"""HTTP/1.1 answers as servers give them: framing, keep-alive, close, redirects, bounds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from smsgw.transport import (
    BadResponse,
    Pool,
    RequestTemplate,
    Response,
    ResponseTooLarge,
)
from tests.transport.conftest import Peer, Server, keep_answering

pytestmark = pytest.mark.timeout(20)

Serve = Callable[..., Awaitable[Server]]


def post(pool: Pool, body: bytes = b"To=%2B14155550100&Body=hi") -> bytes:
    return pool.template(
        "POST", "/send", {"Content-Type": "application/x-www-form-urlencoded"}
    ).build(body)


async def test_keep_alive_reuses_one_connection(serve: Serve) -> None:
    seen: list[bytes] = []
    server = await serve(keep_answering(201, b'{"sid":"SM1"}', record=seen))
    async with Pool(server.origin) as pool:
        for _ in range(5):
            response = await pool.request(post(pool))
            assert (response.status, response.body) == (201, b'{"sid":"SM1"}')
        stats = pool.stats()
    assert server.connections == 1
    assert (stats.connects, stats.requests, stats.idle) == (1, 5, 1)
    # What went out is exactly the template's bytes: Host, the fixed headers, the length.
    assert (
        seen[0]
        == (
            f"POST /send HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 25\r\n\r\n"
            "To=%2B14155550100&Body=hi"
        ).encode()
    )


async def test_chunked_answer_split_across_writes(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        while await peer.read_request() is not None:
            await peer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n5\r")
            await asyncio.sleep(0.01)
            await peer.write(b"\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")

    server = await serve(handler)
    async with Pool(server.origin) as pool:
        first = await pool.request(post(pool))
        second = await pool.request(post(pool))
    assert first.body == second.body == b"hello world"
    assert first.header("x-a") == "1"
    assert server.connections == 1  # a chunked answer keeps the connection


@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_answers_larger_than_one_read_arrive_whole(serve: Serve, framing: str) -> None:
    body = bytes(range(256)) * 400  # 100 KiB: several reads of the connection's buffer

    async def handler(peer: Peer) -> None:
        while await peer.read_request() is not None:
            if framing == "length":
                await peer.answer(200, body)
                continue
            await peer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for start in range(0, len(body), 30_000):
                part = body[start : start + 30_000]
                await peer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await peer.write(b"0\r\n\r\n")

    server = await serve(handler)
    async with Pool(server.origin) as pool:
        for _ in range(2):
            assert (await pool.request(post(pool))).body == body
    assert server.connections == 1


async def test_answer_without_length_ends_at_close_and_is_not_reused(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        await peer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the ")
        await peer.write(b"end")
        peer.writer.close()

    server = await serve(handler)
    async with Pool(server.origin) as pool:
        first = await pool.request(post(pool))
        second = await pool.request(post(pool))
    assert first.body == second.body == b"until the end"
    assert server.connections == 2


@pytest.mark.parametrize(
    "status_line_and_headers",
    ["HTTP/1.1 200 OK\r\nConnection: close", "HTTP/1.0 200 OK"],
    ids=["connection-close", "http-1.0"],
)
async def test_connection_close_is_honoured(serve: Serve, status_line_and_headers: str) -> None:
    async def handler(peer: Peer) -> None:
        # Answers and keeps the socket open: the client must close it, not reuse it.
        while await peer.read_request() is not None:
            await peer.write(f"{status_line_and_headers}\r\nContent-Length: 2\r\n\r\nok".encode())

    server = await serve(handler)
    async with Pool(server.origin) as pool:
        for _ in range(3):
            assert (await pool.request(post(pool))).body == b"ok"
        assert pool.stats().idle == 0
    assert server.connections == 3


async def test_redirects_are_answers_never_followed(serve: Serve) -> None:
    seen: list[bytes] = []
    location = "Location: http://127.0.0.1:1/elsewhere\r\n"
    server = await serve(keep_answering(302, b"", location, record=seen))
    async with Pool(server.origin) as pool:
        response = await pool.request(post(pool))
    assert response.status == 302
    assert response.header("Location") == "http://127.0.0.1:1/elsewhere"
    assert len(seen) == 1


async def test_interim_100_continue_is_skipped(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        await peer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await peer.answer(201, b"done")

    server = await serve(handler)
    async with Pool(server.origin) as pool:
        response = await pool.request(post(pool))
    assert (response.status, response.body) == (201, b"done")


async def test_oversized_body_is_refused_as_ambiguous(serve: Serve) -> None:
    server = await serve(keep_answering(200, b"x" * 5000))
    async with Pool(server.origin, max_body_bytes=4096) as pool:
        with pytest.raises(ResponseTooLarge, match="body over 4096") as caught:
            await pool.request(post(pool))
        assert caught.value.ambiguous
        assert pool.stats().response_errors == 1


async def test_oversized_chunked_body_is_refused(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        await peer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(10):
            await peer.write(b"400\r\n" + b"y" * 1024 + b"\r\n")
        await asyncio.sleep(5)  # never ends: the bound must stop it, not the end

    server = await serve(handler)
    async with Pool(server.origin, max_body_bytes=4096) as pool:
        with pytest.raises(ResponseTooLarge):
            await pool.request(post(pool))


async def test_endless_head_is_refused(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        await peer.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(200):
            await peer.write(b"X-Filler-%d: %s\r\n" % (i, b"z" * 200))
        await asyncio.sleep(5)

    server = await serve(handler)
    async with Pool(server.origin, max_head_bytes=8192) as pool:
        with pytest.raises(ResponseTooLarge, match="head over 8192"):
            await pool.request(post(pool))


async def test_garbage_answer_is_a_bad_response(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        await peer.read_request()
        await peer.write(b"SMTP ready\r\n\r\n")

    server = await serve(handler)
    async with Pool(server.origin) as pool:
        with pytest.raises(BadResponse) as caught:
            await pool.request(post(pool))
    assert caught.value.ambiguous


async def test_bytes_beyond_the_answer_drop_the_connection(serve: Serve) -> None:
    async def handler(peer: Peer) -> None:
        while await peer.read_request() is not None:
            # A second, unrequested answer in the same write: it must never be taken as
            # the next request's answer.
            await peer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray"
            )

    server = await serve(handler)
    async with Pool(server.origin) as pool:
        first = await pool.request(post(pool))
        second = await pool.request(post(pool))
    assert first.body == second.body == b"ok"
    assert server.connections == 2


async def test_unsolicited_bytes_while_idle_drop_the_connection(serve: Serve) -> None:
    connections = 0

    async def handler(peer: Peer) -> None:
        nonlocal connections
        connections += 1
        if connections > 1:
            await keep_answering()(peer)
            return
        await peer.read_request()
        await peer.answer(200, b"ok")
        await asyncio.sleep(0.05)
        await peer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")
        await asyncio.sleep(5)

    server = await serve(handler)
    async with Pool(server.origin) as pool:
        await pool.request(post(pool))
        await asyncio.sleep(0.2)
        assert pool.stats().idle == 0
        assert (await pool.request(post(pool))).body == b"ok"
    assert server.connections == 2


def test_template_refuses_header_injection_and_owns_framing() -> None:
    with pytest.raises(ValueError, match="line break"):
        RequestTemplate("POST", "/x", "h", {"Authorization": "Basic a\r\nX-Evil: 1"})
    for name in ("Host", "content-length", "Transfer-Encoding", "Connection"):
        with pytest.raises(ValueError, match="set by the transport"):
            RequestTemplate("POST", "/x", "h", {name: "1"})
    with pytest.raises(ValueError, match="origin-form"):
        RequestTemplate("POST", "http://h/x", "h")
    with pytest.raises(ValueError, match="origin-form"):
        RequestTemplate("POST", "/a b", "h")
    with pytest.raises(ValueError, match="method"):
        RequestTemplate("HEAD", "/", "h")
    template = RequestTemplate("POST", "/x", "h", {"Authorization": "Basic c2VjcmV0"})
    assert "c2VjcmV0" not in repr(template)
    assert template.build(b"abc").endswith(b"Content-Length: 3\r\n\r\nabc")


def test_response_repr_holds_no_body() -> None:
    response = Response(201, [(b"Retry-After", b"3")], b'{"body":"Your code is 123456"}')
    assert "123456" not in repr(response)
    assert response.header("retry-after") == "3"
    assert response.header("Missing") is None


def test_origin_is_checked() -> None:
    with pytest.raises(ValueError, match="origin"):
        Pool("ftp://example.com")
    with pytest.raises(ValueError, match="scheme, host and port only"):
        Pool("https://example.com/2010-04-01")
    with pytest.raises(ValueError, match="TLS settings"):
        Pool("http://example.com", ca_file="/nonexistent")
    assert Pool("https://example.com").host_header == "example.com"
    assert Pool("http://[::1]:8080").host_header == "[::1]:8080"
