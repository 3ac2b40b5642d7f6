"""TLS: certificates verified against a configured CA file, host names checked, SNI sent."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from smsgw.transport import ConnectFailed, Pool, ResponseFailed
from tests.transport.conftest import Server, keep_answering

pytestmark = pytest.mark.timeout(20)

Serve = Callable[..., Awaitable[Server]]


def get(pool: Pool) -> bytes:
    return pool.template("GET", "/").build()


async def test_ca_file_verifies_and_sni_names_the_host(
    serve: Serve, server_tls: ssl.SSLContext, certificates: dict[str, Path]
) -> None:
    names: list[str | None] = []

    def record(sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        names.append(name)

    server_tls.sni_callback = record  # type: ignore[assignment]
    server = await serve(keep_answering(200, b"secure"), server_tls)
    async with Pool(server.origin, ca_file=certificates["ca"]) as pool:
        assert (await pool.request(get(pool))).body == b"secure"
        assert (await pool.request(get(pool))).body == b"secure"
    assert names == ["localhost"]  # one handshake, kept alive, with SNI
    assert server.connections == 1


async def test_wrong_ca_is_refused_before_anything_is_sent(
    serve: Serve, server_tls: ssl.SSLContext, certificates: dict[str, Path]
) -> None:
    seen: list[bytes] = []
    server = await serve(keep_answering(record=seen), server_tls)
    async with Pool(server.origin, ca_file=certificates["wrong_ca"]) as pool:
        with pytest.raises(ConnectFailed, match="certificate verification failed") as caught:
            await pool.request(get(pool))
        assert not caught.value.ambiguous
        assert pool.stats().open == 0
    assert seen == []


async def test_system_cas_do_not_trust_a_private_ca(
    serve: Serve, server_tls: ssl.SSLContext
) -> None:
    server = await serve(keep_answering(), server_tls)
    async with Pool(server.origin) as pool:
        with pytest.raises(ConnectFailed, match="certificate verification failed"):
            await pool.request(get(pool))


async def test_host_name_is_checked(
    serve: Serve, server_tls: ssl.SSLContext, certificates: dict[str, Path]
) -> None:
    server = await serve(keep_answering(), server_tls)
    # A certificate for localhost is not one for api.twilio.com, whatever CA signed it.
    pool = Pool(
        server.origin,
        ca_file=certificates["ca"],
        server_hostname="api.twilio.com",
    )
    async with pool:
        with pytest.raises(ConnectFailed, match="certificate verification failed"):
            await pool.request(get(pool))


async def test_plain_http_to_a_tls_server_fails_without_hanging(
    serve: Serve, server_tls: ssl.SSLContext
) -> None:
    server = await serve(keep_answering(), server_tls)
    async with Pool(f"http://127.0.0.1:{server.port}", timeout_s=2) as pool:
        # The request went out in clear: whatever happens next is after the write.
        with pytest.raises(ResponseFailed):
            await pool.request(get(pool))


def test_ca_file_and_context_are_exclusive(certificates: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="not both"):
        Pool(
            "https://localhost",
            ca_file=certificates["ca"],
            ssl_context=ssl.create_default_context(),
        )
