"""Helpers shared by tests: settings builder, console SMS reader, code extraction, and the
scripted HTTP server that stands in for a provider's API."""

from __future__ import annotations

import asyncio
import collections
import re
import socket
import ssl
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qs

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient

from smsgw.app import create_app
from smsgw.settings import Settings, parse_settings
from testkit.fake_provider import segments_in_sliding_window

OTP_SECRET = "test-secret-0123456789abcdef"


def make_settings(sms_path: Path, **sections: Any) -> Settings:
    """Settings for tests: console provider writing to `sms_path`, short drain, fixed secret.

    Keyword arguments are TOML sections (dicts) or arrays (lists) merged over the defaults.
    """
    raw: dict[str, Any] = {
        "server": {"drain_timeout_s": 5.0},
        "audit": {
            "path": str(sms_path.parent / "audit.sqlite3"),
            "spool_dir": str(sms_path.parent / "audit-spool"),
        },
        "otp": {"secret": OTP_SECRET},
        "providers": [{"name": "console", "kind": "console", "path": str(sms_path)}],
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return parse_settings(raw, env={})


class RecordedAudit:
    """An AuditRecorder that keeps (message_id, kind, details) in order, for assertions."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def record(self, message_id: str, kind: str, at: float | None = None, **details: Any) -> None:
        self.events.append((message_id, kind, details))

    def accepted(self, message_id: str, at: float, **details: Any) -> None:
        self.record(message_id, "accepted", at, **details)
        self.record(message_id, "queued")

    def kinds(self, message_id: str) -> list[str]:
        return [kind for mid, kind, _ in self.events if mid == message_id]


def read_sms(path: Path) -> list[dict[str, Any]]:
    """The SMS the console provider wrote, one dict per line."""
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


def code_in(sms_body: str) -> str:
    match = re.search(r"code is (\d+)", sms_body)
    assert match, sms_body
    return match.group(1)


async def wait_sms(path: Path, count: int, timeout: float = 2.0) -> list[dict[str, Any]]:
    """The SMS lines once at least `count` arrived, or whatever is there after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        sms = read_sms(path)
        if len(sms) >= count or time.monotonic() > deadline:
            return sms
        await asyncio.sleep(0.01)


async def app_client(
    aiohttp_client: Callable[..., Any], sms_path: Path, **sections: Any
) -> TestClient[Any, Any]:
    """The real app from its factory with settings from make_settings(sms_path, **sections)."""
    client: TestClient[Any, Any] = await aiohttp_client(
        create_app(make_settings(sms_path, **sections))
    )
    return client


# --- a scripted HTTP server standing in for a provider's API -----------------------------


@dataclass(frozen=True)
class Reply:
    """What ScriptedHttp answers to one request.

    `payload` is sent as JSON (and sets the content type), else `body`. `raw` bytes are
    written as they are instead of an answer (a cut head or body, garbage), then `drop`
    ends the connection: "close" (FIN) or "reset" (RST) without an answer. `hang` never
    answers (until the server closes). `chunked` sends the body in chunks, no length.
    """

    status: int = 200
    payload: Any = None
    body: bytes | str = b""
    content_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    chunked: bool = False
    raw: bytes | None = None
    drop: Literal["close", "reset"] | None = None
    hang: bool = False


@dataclass(frozen=True)
class Recorded:
    """One request as the server read it. `peer` is the client's (host, port): the same
    peer for two requests means one kept-alive connection."""

    method: str
    path: str
    query_string: str
    headers: Mapping[str, str]  # names in any case
    body: bytes
    peer: tuple[str, int]
    wall: float  # time.time() and time.monotonic() when it was read
    mono: float

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode(), keep_blank_values=True, strict_parsing=True)

    def json(self) -> Any:
        return orjson.loads(self.body)


Script = Callable[[Recorded], Reply]


class ScriptedHttp:
    """A real HTTP/1.1 server (aiohttp.web) on a free 127.0.0.1 port that records every
    request and answers each path from a script: replies queued by `post()` (each used
    once, the last one again if `repeat`), or a function of the request (`script()`).
    A request nobody scripted is answered 599 and kept in `unscripted`.

        async with ScriptedHttp() as http:
            http.post("/sms/json", status=200, payload={...})
            provider = make(base_url=http.url)
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        """With `ssl_context`, it serves https (its `url` says so)."""
        self._ssl = ssl_context
        self.requests: list[Recorded] = []
        self.unscripted: list[Recorded] = []
        self._queued: dict[str, collections.deque[Reply]] = {}
        self._repeat: dict[str, bool] = {}
        self._scripts: dict[str, Script] = {}
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    def post(
        self, path: str, reply: Reply | None = None, *, repeat: bool = False, **fields: Any
    ) -> None:
        """Queue `reply` (or Reply(**fields)) for the next request to `path`."""
        self._queued.setdefault(path, collections.deque()).append(reply or Reply(**fields))
        self._repeat[path] = repeat

    def script(self, path: str, answer: Script) -> None:
        """Answer every request to `path` with `answer(request)`."""
        self._scripts[path] = answer

    def sent(self, path: str | None = None) -> list[Recorded]:
        """The requests read so far (to `path`), in order."""
        return [r for r in self.requests if path is None or r.path == path]

    def peers(self) -> set[tuple[str, int]]:
        """The client connections requests came on."""
        return {r.peer for r in self.requests}

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # No access log: it would print every request (bodies hold codes in some tests).
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"{'https' if self._ssl else 'http'}://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def _reply_for(self, recorded: Recorded) -> Reply | None:
        script = self._scripts.get(recorded.path)
        if script is not None:
            return script(recorded)
        queued = self._queued.get(recorded.path)
        if not queued:
            return None
        if len(queued) == 1 and self._repeat.get(recorded.path):
            return queued[0]
        return queued.popleft()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        recorded = Recorded(
            method=request.method,
            path=request.path,
            query_string=request.query_string,
            headers=request.headers.copy(),
            body=body,
            peer=(peer[0], peer[1]) if peer else ("", 0),
            wall=time.time(),
            mono=time.monotonic(),
        )
        self.requests.append(recorded)
        reply = self._reply_for(recorded)
        if reply is None:
            self.unscripted.append(recorded)
            return web.Response(status=599, text="no reply scripted")
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.hang:
            await self._closing.wait()
            return web.Response(status=599)
        if reply.raw is not None or reply.drop is not None:
            return self._drop(request, reply)
        payload: bytes = (
            orjson.dumps(reply.payload)
            if reply.payload is not None
            else reply.body.encode()
            if isinstance(reply.body, str)
            else reply.body
        )
        content_type = reply.content_type or (
            "application/json" if reply.payload is not None else "text/plain"
        )
        if not reply.chunked:
            return web.Response(
                status=reply.status, body=payload, headers=reply.headers, content_type=content_type
            )
        response = web.StreamResponse(status=reply.status, headers=reply.headers)
        response.content_type = content_type
        response.enable_chunked_encoding()
        await response.prepare(request)
        # In pieces, each a chunk of its own written (and awaited) apart: the client must
        # join chunks, perhaps across reads.
        for start in range(0, len(payload), 7):
            await response.write(payload[start : start + 7])
        await response.write_eof()
        return response

    def _drop(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        transport = request.transport
        assert transport is not None
        if reply.raw is not None:
            transport.write(reply.raw)
        if reply.drop == "reset":
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.close()
        # Never written: the connection is gone.
        return web.Response(status=599)


def max_units_in_window(grants: Sequence[tuple[float, int]]) -> int:
    """Most units in any half-open 1 s window [t, t + 1) of (time, units) grants: the fake
    provider's own segment counter, so tests and the fake judge a window alike."""
    return segments_in_sliding_window([at for at, _ in grants], [u for _, u in grants])[0]
