"""The contract every HTTP adapter keeps, tested once against each (as GOV.UK Notify tests
its base client once): what goes on the wire, and how transport failures, throttling, auth
failures, 5xx, garbage answers and successes without an id are judged.

Retryable vs permanent and ambiguous (the provider may have taken the SMS: a retry may
deliver it twice) vs not are what the dispatcher decides on. Each adapter's own tests keep
its wire format and its code table.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer

from smsgw.errors import (
    PermanentProviderError,
    ProviderError,
    RetryableProviderError,
    ThrottledError,
)
from smsgw.providers import (
    AirtelProvider,
    HttpProvider,
    OutgoingSms,
    TwilioProvider,
    VonageProvider,
)
from smsgw.settings import (
    AirtelProviderSettings,
    TwilioProviderSettings,
    VonageProviderSettings,
)
from tests.helpers import FakeHttp

pytestmark = pytest.mark.timeout(30)

BODY = "Your smsgw code is 493817. It expires in 10 minutes."
CODE = "493817"
TIMEOUTS = {"timeout_s": 5.0, "connect_timeout_s": 1.0}


@dataclass(frozen=True)
class Adapter:
    name: str
    make: Callable[..., HttpProvider]  # (base_url, **settings overrides)
    path: str
    to: str
    success: dict[str, Any]  # a 2xx answer with the id "ID-1"
    success_without_id: dict[str, Any]
    secrets: tuple[str, ...]  # what no error text or log may carry

    def sms(self) -> OutgoingSms:
        return OutgoingSms(message_id="msg_1", to=self.to, body=BODY, validity_s=600)

    def url(self, base: str) -> str:
        return base.rstrip("/") + self.path


TWILIO_SID, TWILIO_TOKEN = "AC" + "0123abcd" * 4, "tok-5ecret-a1b2c3d4e5f6"
VONAGE_SECRET = "vonage-5ecret-9f8e7d"
AIRTEL_PASSWORD = "airtel-pa55-w0rd-x1"

ADAPTERS = [
    Adapter(
        name="twilio",
        make=lambda base, **o: TwilioProvider(
            TwilioProviderSettings(
                name="twilio",
                account_sid=TWILIO_SID,
                auth_token=TWILIO_TOKEN,
                from_="+15005550006",
                base_url=base,
                **{**TIMEOUTS, **o},
            )
        ),
        path=f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json",
        to="+14155550100",
        success={"status": 201, "payload": {"sid": "ID-1", "status": "queued"}},
        success_without_id={"status": 201, "payload": {"status": "queued"}},
        secrets=(TWILIO_TOKEN,),
    ),
    Adapter(
        name="vonage",
        make=lambda base, **o: VonageProvider(
            VonageProviderSettings(
                name="vonage",
                api_key="abcd1234",
                api_secret=VONAGE_SECRET,
                from_="AcmeInc",
                base_url=base,
                **{**TIMEOUTS, **o},
            )
        ),
        path="/sms/json",
        to="+447700900123",
        success={"status": 200, "payload": {"messages": [{"status": "0", "message-id": "ID-1"}]}},
        success_without_id={"status": 200, "payload": {"messages": [{"status": "0"}]}},
        secrets=(VONAGE_SECRET,),
    ),
    Adapter(
        name="airtel",
        make=lambda base, **o: AirtelProvider(
            AirtelProviderSettings(
                name="airtel",
                customer_id="cust-0042",
                username="acme-api",
                password=AIRTEL_PASSWORD,
                source_address="ACMEOT",
                dlt_entity_id="1201159543060917386",
                dlt_template_id="1207161729866691748",
                base_url=base,
                **{**TIMEOUTS, **o},
            )
        ),
        path="/api/v1/send-sms",
        to="+919876543210",
        success={"status": 200, "payload": {"status": "SUCCESS", "messageRequestId": "ID-1"}},
        success_without_id={"status": 200, "payload": {"status": "SUCCESS"}},
        secrets=(AIRTEL_PASSWORD,),
    ),
]

BASE = "http://provider.test"


@pytest.fixture(params=ADAPTERS, ids=[a.name for a in ADAPTERS])
def adapter(request: pytest.FixtureRequest) -> Adapter:
    chosen: Adapter = request.param
    return chosen


@pytest.fixture
async def started() -> AsyncIterator[Callable[..., Awaitable[HttpProvider]]]:
    """Build and start providers; all are closed at the end."""
    providers: list[HttpProvider] = []

    async def start(adapter: Adapter, base: str = BASE, **overrides: Any) -> HttpProvider:
        provider = adapter.make(base, **overrides)
        await provider.start()
        providers.append(provider)
        return provider

    yield start
    for provider in providers:
        await provider.close()


@pytest.fixture
def fake() -> Any:
    with FakeHttp() as mocked:
        yield mocked


async def failure(provider: HttpProvider, adapter: Adapter) -> ProviderError:
    """The error a send raises, after checking it and its log line leak nothing."""
    with structlog.testing.capture_logs() as logs, pytest.raises(ProviderError) as info:
        await provider.send(adapter.sms())
    error = info.value
    assert [entry["event"] for entry in logs] == ["provider_error"]
    texts = [str(error), repr(error), error.detail, str(error.code), *map(repr, logs)]
    if error.__cause__ is not None:
        texts += [str(error.__cause__), repr(error.__cause__)]
    for text in texts:
        for secret in (*adapter.secrets, BODY, CODE, adapter.to, adapter.to[1:]):
            assert secret not in text
    return error


def assert_retryable(error: ProviderError, *, ambiguous: bool) -> None:
    assert type(error) is RetryableProviderError, error
    assert error.ambiguous is ambiguous


# --- the request on the wire --------------------------------------------------------------


async def test_the_request_on_the_wire_is_what_the_adapter_built(
    adapter: Adapter,
    started: Callable[..., Awaitable[HttpProvider]],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    """On a real socket: session-level headers are invisible to aioresponses."""
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.path, dict(request.headers), await request.read()))
        return web.json_response(adapter.success["payload"], status=adapter.success["status"])

    app = web.Application()
    app.router.add_post(adapter.path, handler)
    server = await aiohttp_server(app)
    # A trailing slash on base_url is not doubled.
    provider = await started(adapter, str(server.make_url("/")))
    receipt = await provider.send(adapter.sms())
    assert (receipt.provider, receipt.provider_message_id) == (adapter.name, "ID-1")
    [(path, headers, body)] = seen
    assert path == adapter.path
    assert "User-Agent" not in headers
    for name, value in provider.headers.items():
        assert headers[name] == value
    assert body == provider.encode(adapter.sms())


async def test_send_before_start_is_a_programming_error(adapter: Adapter) -> None:
    with pytest.raises(RuntimeError, match="start"):
        await adapter.make(BASE).send(adapter.sms())


# --- transport failures -------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_connection_refused_is_retryable_not_ambiguous(
    adapter: Adapter, started: Callable[..., Awaitable[HttpProvider]]
) -> None:
    provider = await started(adapter, f"http://127.0.0.1:{_closed_port()}")
    assert_retryable(await failure(provider, adapter), ambiguous=False)


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[bytes | None], Awaitable[str]]]:
    """A server that reads one request, writes `answer` (None: nothing) and resets the
    connection (RST): the provider may have taken the request."""
    servers: list[asyncio.Server] = []

    async def serve(answer: bytes | None) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            if answer is not None:
                writer.write(answer)
                await writer.drain()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield serve
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    "answer",
    [
        None,
        b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{"id',
        b"HTTP/1.1 200 OK\r\nContent-Type: app",
    ],
    ids=["before-the-answer", "mid-body", "mid-head"],
)
async def test_a_connection_reset_after_sending_is_ambiguous(
    adapter: Adapter,
    started: Callable[..., Awaitable[HttpProvider]],
    raw_server: Callable[[bytes | None], Awaitable[str]],
    answer: bytes | None,
) -> None:
    provider = await started(adapter, await raw_server(answer))
    assert_retryable(await failure(provider, adapter), ambiguous=True)


async def test_no_answer_within_the_timeout_is_ambiguous(
    adapter: Adapter,
    started: Callable[..., Awaitable[HttpProvider]],
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await request.read()
        await release.wait()
        return web.json_response(adapter.success["payload"])

    app = web.Application()
    app.router.add_post(adapter.path, slow)
    server = await aiohttp_server(app)
    provider = await started(adapter, str(server.make_url("")), timeout_s=0.2)
    try:
        error = await failure(provider, adapter)
    finally:
        release.set()
    assert_retryable(error, ambiguous=True)
    assert error.detail == "timeout"


@pytest.mark.parametrize(
    ("exception", "ambiguous"),
    [
        (aiohttp.ConnectionTimeoutError(), False),  # nothing was sent
        (TimeoutError(), True),
        (aiohttp.ServerDisconnectedError(), True),
        (aiohttp.ClientPayloadError("cut"), True),
    ],
    ids=["connect-timeout", "timeout", "disconnected", "payload-cut"],
)
async def test_client_exceptions(
    adapter: Adapter,
    started: Callable[..., Awaitable[HttpProvider]],
    fake: Any,
    exception: Exception,
    ambiguous: bool,
) -> None:
    fake.post(adapter.url(BASE), exception=exception)
    error = await failure(await started(adapter), adapter)
    assert_retryable(error, ambiguous=ambiguous)
    assert error.__cause__ is exception


# --- answers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        ("7", 7.0),
        ("0.5", 0.5),
        (None, 1.0),
        ("not-a-number", 1.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 1.0),
        ("nan", 1.0),
        ("-3", 0.0),
        ("9999", 60.0),
    ],
)
async def test_429_is_throttled_for_a_bounded_retry_after(
    adapter: Adapter,
    started: Callable[..., Awaitable[HttpProvider]],
    fake: Any,
    retry_after: str | None,
    expected: float,
) -> None:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    fake.post(adapter.url(BASE), status=429, body="", headers=headers)
    error = await failure(await started(adapter), adapter)
    assert isinstance(error, ThrottledError)
    assert (error.retry_after_s, error.ambiguous) == (expected, False)


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_our_credentials_or_endpoint_refused_are_retryable_not_ambiguous(
    adapter: Adapter, started: Callable[..., Awaitable[HttpProvider]], fake: Any, status: int
) -> None:
    # Our configuration, not the message: another provider can send it.
    fake.post(adapter.url(BASE), status=status, body="")
    assert_retryable(await failure(await started(adapter), adapter), ambiguous=False)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_retryable_and_ambiguous(
    adapter: Adapter, started: Callable[..., Awaitable[HttpProvider]], fake: Any, status: int
) -> None:
    fake.post(adapter.url(BASE), status=status, body="<html>oops</html>", content_type="text/html")
    error = await failure(await started(adapter), adapter)
    assert_retryable(error, ambiguous=True)
    assert str(status) in error.detail


@pytest.mark.parametrize("status", [400, 405, 413, 415])
async def test_other_4xx_are_permanent(
    adapter: Adapter, started: Callable[..., Awaitable[HttpProvider]], fake: Any, status: int
) -> None:
    fake.post(adapter.url(BASE), status=status, body="")
    error = await failure(await started(adapter), adapter)
    assert isinstance(error, PermanentProviderError)
    assert error.detail == f"rejected with HTTP {status}"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("", "application/json"),
        ("<html>accepted</html>", "text/html"),
        ("\x00\xff garbage", "application/octet-stream"),
        ("[1, 2]", "application/json"),
        ("null", "application/json"),
        ('{"truncated": ', "application/json"),
    ],
    ids=["empty", "html", "garbage", "json-array", "json-null", "broken-json"],
)
async def test_an_unreadable_success_is_ambiguous(
    adapter: Adapter,
    started: Callable[..., Awaitable[HttpProvider]],
    fake: Any,
    body: str,
    content_type: str,
) -> None:
    # A 2xx we cannot read may still have queued the SMS.
    status = adapter.success["status"]
    fake.post(adapter.url(BASE), status=status, body=body, content_type=content_type)
    assert_retryable(await failure(await started(adapter), adapter), ambiguous=True)


async def test_success_without_an_id_is_ambiguous(
    adapter: Adapter, started: Callable[..., Awaitable[HttpProvider]], fake: Any
) -> None:
    fake.post(adapter.url(BASE), **adapter.success_without_id)
    error = await failure(await started(adapter), adapter)
    assert_retryable(error, ambiguous=True)
    assert error.detail.startswith("success without")


# Providers' error texts can echo what was sent; none of it may reach our errors or logs.
def _echo(adapter: Adapter) -> str:
    return f"{' '.join(adapter.secrets)} to={adapter.to} {adapter.to[1:]} text={BODY}"


@pytest.mark.parametrize("status", [400, 401, 429, 500])
async def test_an_answer_echoing_the_request_leaks_nothing(
    adapter: Adapter, started: Callable[..., Awaitable[HttpProvider]], fake: Any, status: int
) -> None:
    fake.post(adapter.url(BASE), status=status, body=_echo(adapter), content_type="text/plain")
    await failure(await started(adapter), adapter)  # checks every text
