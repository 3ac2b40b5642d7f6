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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from smsgw.errors import (
    ConfigError,
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
from smsgw.transport import (
    BadResponse,
    ConnectFailed,
    ConnectionLost,
    ConnectTimeout,
    PoolClosed,
    PoolTimeout,
    ResponseTimeout,
    ResponseTooLarge,
    TransportError,
)
from testkit.fast_fake import self_signed_certificate, server_ssl_context
from tests.helpers import Reply, ScriptedHttp

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
Start = Callable[..., Awaitable[HttpProvider]]


@pytest.fixture(params=ADAPTERS, ids=[a.name for a in ADAPTERS])
def adapter(request: pytest.FixtureRequest) -> Adapter:
    chosen: Adapter = request.param
    return chosen


@pytest.fixture
async def started(http: ScriptedHttp) -> AsyncIterator[Start]:
    """Build and start providers (on the scripted server unless told); all are closed at
    the end."""
    providers: list[HttpProvider] = []

    async def start(adapter: Adapter, base: str | None = None, **overrides: Any) -> HttpProvider:
        provider = adapter.make(http.url if base is None else base, **overrides)
        await provider.start()
        providers.append(provider)
        return provider

    yield start
    for provider in providers:
        await provider.close()


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
    adapter: Adapter, started: Start, http: ScriptedHttp
) -> None:
    http.post(adapter.path, **adapter.success)
    # A trailing slash on base_url is not doubled.
    provider = await started(adapter, http.url + "/")
    receipt = await provider.send(adapter.sms())
    assert (receipt.provider, receipt.provider_message_id) == (adapter.name, "ID-1")
    [request] = http.requests
    assert (request.method, request.path) == ("POST", adapter.path)
    assert "User-Agent" not in request.headers
    for name, value in provider.headers.items():
        assert request.headers[name] == value
    assert request.body == provider.encode(adapter.sms())


async def test_a_path_prefix_in_base_url_is_kept(
    adapter: Adapter, started: Start, http: ScriptedHttp
) -> None:
    http.post("/gateway" + adapter.path, **adapter.success)
    provider = await started(adapter, http.url + "/gateway/")
    assert (await provider.send(adapter.sms())).provider_message_id == "ID-1"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(ca.pem, cert.pem, key.pem): a private CA and a server certificate for 127.0.0.1."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = self_signed_certificate(directory)
    return directory / "ca.pem", cert, key


async def test_tls_with_the_entry_s_ca_file(
    adapter: Adapter, started: Start, certificates: tuple[Path, Path, Path]
) -> None:
    ca, cert, key = certificates
    async with ScriptedHttp(server_ssl_context(cert, key)) as https:
        https.post(adapter.path, **adapter.success)
        provider = await started(adapter, https.url, ca_file=str(ca))
        assert (await provider.send(adapter.sms())).provider_message_id == "ID-1"
        assert len(https.requests) == 1


async def test_tls_refused_by_the_system_cas_is_not_sent(
    adapter: Adapter, started: Start, certificates: tuple[Path, Path, Path]
) -> None:
    _, cert, key = certificates
    async with ScriptedHttp(server_ssl_context(cert, key)) as https:
        https.post(adapter.path, **adapter.success)
        error = await failure(await started(adapter, https.url), adapter)
        assert https.requests == []
    assert_retryable(error, ambiguous=False)
    assert error.detail == "cannot connect"
    assert type(error.__cause__) is ConnectFailed


@pytest.mark.parametrize(
    ("base", "overrides", "key"),
    [
        ("http://127.0.0.1:9", {"ca_file": "/etc/ssl/certs/ca-certificates.crt"}, "ca_file"),
        ("https://127.0.0.1:9", {"ca_file": "/nonexistent/ca.pem"}, "ca_file"),
        ("http://127.0.0.1:9/?x=1", {}, "base_url"),
        ("http://user@127.0.0.1:9", {}, "base_url"),
    ],
    ids=["ca-file-for-http", "missing-ca-file", "query", "user-info"],
)
def test_unusable_entries_are_refused_when_built(
    adapter: Adapter, base: str, overrides: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as info:
        adapter.make(base, **overrides)
    assert info.value.key == f"providers.{adapter.name}.{key}"


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
    adapter: Adapter, started: Start
) -> None:
    provider = await started(adapter, f"http://127.0.0.1:{_closed_port()}")
    error = await failure(provider, adapter)
    assert_retryable(error, ambiguous=False)
    assert error.detail == "cannot connect"
    assert type(error.__cause__) is ConnectFailed


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A server that accepts connections and never says a word: a TLS handshake with it
    never ends."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()  # until the client gives up

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_no_connection_within_the_connect_timeout_is_not_ambiguous(
    adapter: Adapter, started: Start, silent_port: int
) -> None:
    # Nothing of the request can have left: the TLS handshake never finished.
    provider = await started(adapter, f"https://127.0.0.1:{silent_port}", connect_timeout_s=0.2)
    error = await failure(provider, adapter)
    assert_retryable(error, ambiguous=False)
    assert error.detail == "connect timeout"
    assert type(error.__cause__) is ConnectTimeout


# The provider read the whole request, then the exchange broke: it may have taken the SMS.
# (Reply fields, the detail, the transport error underneath.)
BROKEN_EXCHANGES: list[tuple[dict[str, Any], str, type[TransportError]]] = [
    ({"drop": "reset"}, "connection lost", ConnectionLost),
    ({"drop": "close"}, "connection lost", ConnectionLost),
    (
        {
            "raw": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b'Content-Length: 200\r\n\r\n{"id',
            "drop": "reset",
        },
        "connection lost",
        ConnectionLost,
    ),
    (
        {"raw": b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n{", "drop": "close"},
        "connection lost",
        ConnectionLost,
    ),
    (
        {"raw": b"HTTP/1.1 200 OK\r\nContent-Type: app", "drop": "reset"},
        "connection lost",
        ConnectionLost,
    ),
    ({"raw": b"220 smtp.example.com ESMTP\r\n", "drop": "close"}, "unreadable answer", BadResponse),
    ({"body": b"x" * (1024 * 1024 + 1)}, "answer too large", ResponseTooLarge),
]


@pytest.mark.parametrize(
    ("reply", "detail", "cause"),
    BROKEN_EXCHANGES,
    ids=[
        "reset-before-the-answer",
        "closed-before-the-answer",
        "reset-mid-body",
        "closed-mid-body",
        "reset-mid-head",
        "not-http",
        "too-large",
    ],
)
async def test_a_broken_exchange_after_sending_is_ambiguous(
    adapter: Adapter,
    started: Start,
    http: ScriptedHttp,
    reply: dict[str, Any],
    detail: str,
    cause: type[TransportError],
) -> None:
    http.post(adapter.path, **reply)
    error = await failure(await started(adapter), adapter)
    assert_retryable(error, ambiguous=True)
    assert error.detail == detail
    assert type(error.__cause__) is cause
    assert len(http.requests) == 1


async def test_no_answer_within_the_timeout_is_ambiguous(
    adapter: Adapter, started: Start, http: ScriptedHttp
) -> None:
    http.post(adapter.path, hang=True)
    provider = await started(adapter, timeout_s=0.2)
    error = await failure(provider, adapter)
    assert_retryable(error, ambiguous=True)
    assert error.detail == "timeout"
    assert type(error.__cause__) is ResponseTimeout


async def test_no_free_connection_is_not_ambiguous(
    adapter: Adapter, started: Start, http: ScriptedHttp
) -> None:
    # max_in_flight bounds the pool; a held connection leaves none, for timeout_s.
    provider = await started(adapter, max_in_flight=1, timeout_s=0.2)
    held = await provider.ready()
    try:
        error = await failure(provider, adapter)
    finally:
        held.cancel()
    assert_retryable(error, ambiguous=False)
    assert error.detail == "no free connection"
    assert type(error.__cause__) is PoolTimeout
    assert http.requests == []


async def test_a_send_waiting_for_a_connection_when_the_provider_closes_is_not_sent(
    adapter: Adapter, started: Start, http: ScriptedHttp
) -> None:
    provider = await started(adapter, max_in_flight=1)
    held = await provider.ready()
    waiting = asyncio.create_task(failure(provider, adapter))
    for _ in range(100):  # until it waits in the pool
        stats = provider.pool_stats()
        if stats is not None and stats.waiting:
            break
        await asyncio.sleep(0.01)
    await provider.close()
    held.cancel()
    error = await waiting
    assert_retryable(error, ambiguous=False)
    assert error.detail == "provider closed"
    assert type(error.__cause__) is PoolClosed
    assert http.requests == []


# --- the transport as the adapters use it -------------------------------------------------


async def test_a_chunked_answer_is_read_whole(
    adapter: Adapter, started: Start, http: ScriptedHttp
) -> None:
    http.post(adapter.path, Reply(**adapter.success, chunked=True))
    receipt = await (await started(adapter)).send(adapter.sms())
    assert receipt.provider_message_id == "ID-1"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_refused_not_followed(
    adapter: Adapter, started: Start, http: ScriptedHttp, status: int
) -> None:
    async with ScriptedHttp() as elsewhere:
        elsewhere.post(adapter.path, **adapter.success)
        http.post(adapter.path, status=status, headers={"Location": elsewhere.url + adapter.path})
        error = await failure(await started(adapter), adapter)
        assert elsewhere.requests == []  # our credentials went nowhere else
    assert_retryable(error, ambiguous=False)
    assert error.detail == "redirected"


async def test_sends_reuse_one_kept_alive_connection(
    adapter: Adapter, started: Start, http: ScriptedHttp
) -> None:
    http.post(adapter.path, **adapter.success, repeat=True)
    provider = await started(adapter)
    for _ in range(3):
        assert (await provider.send(adapter.sms())).provider_message_id == "ID-1"
    assert len(http.requests) == 3
    assert len(http.peers()) == 1
    stats = provider.pool_stats()
    assert stats is not None
    assert (stats.connects, stats.requests, stats.idle) == (1, 3, 1)


async def test_cancel_gives_the_ready_connection_back(
    adapter: Adapter, started: Start, http: ScriptedHttp
) -> None:
    http.post(adapter.path, **adapter.success)
    # One connection at most, and a short wait for it: a connection kept by cancel() would
    # make the send below fail as "no free connection".
    provider = await started(adapter, max_in_flight=1, timeout_s=0.5)
    handle = await provider.ready()
    handle.cancel()
    handle.cancel()  # a second cancel changes nothing
    stats = provider.pool_stats()
    assert stats is not None
    assert (stats.open, stats.idle) == (1, 1)
    assert (await provider.send(adapter.sms())).provider_message_id == "ID-1"
    assert len(http.peers()) == 1  # the connection ready() made, reused
    after = provider.pool_stats()
    assert after is not None
    assert (after.open, after.idle, after.connects, after.requests) == (1, 1, 1, 1)
    with pytest.raises(RuntimeError, match="once"):
        handle.launch(adapter.sms())


async def test_launch_writes_the_request_before_it_returns(
    adapter: Adapter, started: Start, http: ScriptedHttp
) -> None:
    http.post(adapter.path, **adapter.success)
    provider = await started(adapter)
    handle = await provider.ready()
    pending = handle.launch(adapter.sms())
    # Written synchronously: counted before this task yielded once.
    stats = provider.pool_stats()
    assert stats is not None
    assert (stats.requests, stats.in_flight) == (1, 1)
    # And it is on the wire: the server reads it while nobody awaits the answer.
    for _ in range(500):
        if http.requests:
            break
        await asyncio.sleep(0.01)
    [request] = http.requests
    assert request.body == provider.encode(adapter.sms())
    receipt = await pending
    assert receipt.provider_message_id == "ID-1"
    assert receipt.latency_s >= 0


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
    started: Start,
    http: ScriptedHttp,
    retry_after: str | None,
    expected: float,
) -> None:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    http.post(adapter.path, status=429, body="", headers=headers)
    error = await failure(await started(adapter), adapter)
    assert isinstance(error, ThrottledError)
    assert (error.retry_after_s, error.ambiguous) == (expected, False)


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_our_credentials_or_endpoint_refused_are_retryable_not_ambiguous(
    adapter: Adapter, started: Start, http: ScriptedHttp, status: int
) -> None:
    # Our configuration, not the message: another provider can send it.
    http.post(adapter.path, status=status, body="")
    assert_retryable(await failure(await started(adapter), adapter), ambiguous=False)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_retryable_and_ambiguous(
    adapter: Adapter, started: Start, http: ScriptedHttp, status: int
) -> None:
    http.post(adapter.path, status=status, body="<html>oops</html>", content_type="text/html")
    error = await failure(await started(adapter), adapter)
    assert_retryable(error, ambiguous=True)
    assert str(status) in error.detail


@pytest.mark.parametrize("status", [400, 405, 413, 415])
async def test_other_4xx_are_permanent(
    adapter: Adapter, started: Start, http: ScriptedHttp, status: int
) -> None:
    http.post(adapter.path, status=status, body="")
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
    started: Start,
    http: ScriptedHttp,
    body: str,
    content_type: str,
) -> None:
    # A 2xx we cannot read may still have queued the SMS.
    status = adapter.success["status"]
    http.post(adapter.path, status=status, body=body, content_type=content_type)
    assert_retryable(await failure(await started(adapter), adapter), ambiguous=True)


async def test_success_without_an_id_is_ambiguous(
    adapter: Adapter, started: Start, http: ScriptedHttp
) -> None:
    http.post(adapter.path, **adapter.success_without_id)
    error = await failure(await started(adapter), adapter)
    assert_retryable(error, ambiguous=True)
    assert error.detail.startswith("success without")


# Providers' error texts can echo what was sent; none of it may reach our errors or logs.
def _echo(adapter: Adapter) -> str:
    return f"{' '.join(adapter.secrets)} to={adapter.to} {adapter.to[1:]} text={BODY}"


@pytest.mark.parametrize("status", [400, 401, 429, 500])
async def test_an_answer_echoing_the_request_leaks_nothing(
    adapter: Adapter, started: Start, http: ScriptedHttp, status: int
) -> None:
    http.post(adapter.path, status=status, body=_echo(adapter), content_type="text/plain")
    await failure(await started(adapter), adapter)  # checks every text
