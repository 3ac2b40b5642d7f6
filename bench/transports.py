"""Provider HTTP transports side by side, in one run, against the same fast fake Twilio.

    .venv/bin/python -m bench.transports [--requests 20000] [--concurrency 64] [--rounds 1]
        [--only raw,aiohttp-naive,...] [--schemes tcp,tls]

Two `bench.fast_fake` servers run as their own processes (plain TCP, and TLS with a
self-signed certificate made at run time); each candidate client runs in a child process of
its own on uvloop, sends `--requests` Twilio-shaped POSTs with `--concurrency` in flight
after a warm-up (connections opened, TLS handshakes done), and reports its own CPU time
(user + system of the whole process, every thread: the Rust clients run a runtime thread)
and the fake's, read from the fake's `/_stats` around the measured window only.

Candidates (`--only` names):
  raw            asyncio Protocol, one connection per sender, request bytes by hand, the
                 answer cut by hand at Content-Length: the ceiling of Python here
  aiohttp-naive  aiohttp the naive way: form dict and BasicAuth per request
  aiohttp-tuned  aiohttp on its cheapest path: prebuilt headers and URL, bytes body, limit,
                 no auto headers, no cookie jar, no decompression
  httptools      asyncio Protocol over a keep-alive pool, llhttp (httptools) parsing (a
                 plain Protocol: over uvloop's TLS each read costs an mmap, mremap and
                 munmap, see smsgw/transport/connection.py; smsgw reads into a buffer)
  h11            the same pool with h11 building requests and parsing answers
  pyreqwest      the Rust client (hyper/reqwest, its own pool)
  aiohttp-afn    aiohttp-tuned on uvloop with aiofastnet's transports (loop_factory)
  httptools-afn  httptools over aiofastnet transports (aiofastnet.create_connection)
  smsgw          smsgw.transport, the module built from these numbers

Ratios are within one scheme of one run: req/s and CPU per request against `raw` and
against `aiohttp-naive`. The machine is shared: read ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench.loadgen import REPO_ROOT, start_process, stop_process
from testkit.fake_provider import fetch_stats
from testkit.fast_fake import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN

CANDIDATES: Final = (
    "raw",
    "aiohttp-naive",
    "aiohttp-tuned",
    "httptools",
    "h11",
    "pyreqwest",
    "aiohttp-afn",
    "httptools-afn",
    "smsgw",
)
PATH: Final = f"/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Messages.json"
AUTHORIZATION: Final = (
    "Basic " + base64.b64encode(f"{DEFAULT_ACCOUNT_SID}:{DEFAULT_AUTH_TOKEN}".encode()).decode()
)
FORM_TYPE: Final = "application/x-www-form-urlencoded"
FROM: Final = "+15005550006"
_RESULT: Final = "RESULT "


def form_body(i: int) -> bytes:
    """The request body every candidate but the naive one sends: built the same cheap way,
    so only the transport differs."""
    return b"To=%%2B1415%d&Body=Your+code+is+%06d&From=%%2B15005550006" % (
        2_000_000 + i % 1_000_000,
        i % 1_000_000,
    )


# -- child: one candidate ------------------------------------------------------------


@dataclass(slots=True)
class Target:
    host: str
    port: int
    tls: bool
    ca_file: str | None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def client_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=self.ca_file)

    def host_header(self) -> str:
        default = 443 if self.tls else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"

    def request(self, body: bytes) -> bytes:
        """The whole request, by hand: a prefix built once, the length and the body."""
        return b"%s%d\r\n\r\n%s" % (self._prefix(), len(body), body)

    def _prefix(self) -> bytes:
        prefix = _PREFIXES.get(self.port)
        if prefix is None:
            prefix = _PREFIXES[self.port] = (
                f"POST {PATH} HTTP/1.1\r\nHost: {self.host_header()}\r\n"
                f"Authorization: {AUTHORIZATION}\r\nContent-Type: {FORM_TYPE}\r\n"
                "Accept: application/json\r\nContent-Length: "
            ).encode()
        return prefix


_PREFIXES: dict[int, bytes] = {}


Send = Callable[[int], Awaitable[int]]


async def _drive(send: Send, requests: int, concurrency: int, first: int = 0) -> int:
    """`concurrency` senders share `requests` sends; returns how many answered 201."""
    counter = iter(range(first, first + requests))
    ok = 0

    async def sender() -> None:
        nonlocal ok
        for i in counter:
            if await send(i) == 201:
                ok += 1

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return ok


class _RawProtocol(asyncio.Protocol):
    """One request at a time; the answer cut by hand (the fake's exact spelling assumed)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[int] | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            self.buffer = buffer
            return
        at = buffer.find(b"Content-Length: ", 0, end) + 16
        length = int(buffer[at : buffer.find(b"\r\n", at)])
        if len(buffer) < end + 4 + length:
            self.buffer = buffer
            return
        self.buffer = b""
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            waiter.set_result(int(buffer[9:12]))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("lost"))


async def _run_raw(target: Target, requests: int, concurrency: int, measure: Measure) -> int:
    loop = asyncio.get_running_loop()
    context = target.client_context()
    connections = [
        (await loop.create_connection(_RawProtocol, target.host, target.port, ssl=context))[1]
        for _ in range(concurrency)
    ]
    free = list(connections)

    async def send(i: int) -> int:
        protocol = free.pop()
        body = form_body(i)
        waiter = loop.create_future()
        protocol.waiter = waiter
        assert protocol.transport is not None
        protocol.transport.write(target.request(body))
        try:
            return await waiter
        finally:
            free.append(protocol)

    ok = await measure(send)
    for protocol in connections:
        assert protocol.transport is not None
        protocol.transport.close()
    return ok


async def _run_aiohttp(
    target: Target, requests: int, concurrency: int, measure: Measure, *, naive: bool
) -> int:
    import aiohttp
    import yarl

    url = target.url + PATH
    if naive:
        warnings.simplefilter("ignore", DeprecationWarning)  # BasicAuth: the naive way
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=target.client_context() or True)
        ) as session:

            async def send_naive(i: int) -> int:
                form = {"To": f"+1415{2_000_000 + i % 1_000_000}", "Body": f"Your code is {i}"}
                form["From"] = FROM
                async with session.post(
                    url,
                    data=form,
                    auth=aiohttp.BasicAuth(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN),
                ) as response:
                    await response.read()
                    return response.status

            return await measure(send_naive)

    prebuilt = yarl.URL(url)
    headers = {"Authorization": AUTHORIZATION, "Content-Type": FORM_TYPE}
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=concurrency, ssl=target.client_context() or False, ttl_dns_cache=None
        ),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        raise_for_status=False,
        timeout=aiohttp.ClientTimeout(total=30, sock_connect=5),
    ) as session:

        async def send_tuned(i: int) -> int:
            async with session.post(prebuilt, data=form_body(i), headers=headers) as response:
                await response.read()
                return response.status

        return await measure(send_tuned)


class _PoolProtocol(asyncio.Protocol):
    """Base of the two parser prototypes: one request at a time on a kept-alive connection."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("lost"))

    def finish(self, status: int) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            waiter.set_result(status)


class _HttptoolsProtocol(_PoolProtocol):
    def __init__(self) -> None:
        import httptools

        super().__init__()
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True

    def send(self, request: bytes) -> None:
        self.headers = []
        self.body = []
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)
        if self.complete:
            self.complete = False
            b"".join(self.body)
            self.finish(self.parser.get_status_code())


class _H11Protocol(_PoolProtocol):
    def __init__(self, target: Target) -> None:
        import h11

        super().__init__()
        self.h11 = h11
        self.connection = h11.Connection(h11.CLIENT)
        self.status = 0
        self.body: list[bytes] = []
        self.fixed_headers = [
            ("Host", target.host_header()),
            ("Authorization", AUTHORIZATION),
            ("Content-Type", FORM_TYPE),
            ("Accept", "application/json"),
        ]

    def send_body(self, body: bytes) -> None:
        h11, connection = self.h11, self.connection
        headers = [*self.fixed_headers, ("Content-Length", str(len(body)))]
        data = connection.send(h11.Request(method="POST", target=PATH, headers=headers))
        data += connection.send(h11.Data(data=body))  # type: ignore[operator]
        data += connection.send(h11.EndOfMessage())  # type: ignore[operator]
        self.body = []
        assert self.transport is not None
        self.transport.write(data)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        h11, connection = self.h11, self.connection
        connection.receive_data(data)
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                return
            if isinstance(event, h11.Response):
                self.status = event.status_code
            elif isinstance(event, h11.Data):
                self.body.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                connection.start_next_cycle()
                b"".join(self.body)
                self.finish(self.status)
                return


async def _run_pool(
    target: Target,
    requests: int,
    concurrency: int,
    measure: Measure,
    *,
    parser: str,
    fast_transport: bool = False,
) -> int:
    """A keep-alive pool: idle connections reused last-in first-out, new ones when none."""
    loop = asyncio.get_running_loop()
    context = target.client_context()
    idle: list[Any] = []
    every: list[Any] = []

    def factory() -> _PoolProtocol:
        return _HttptoolsProtocol() if parser == "httptools" else _H11Protocol(target)

    async def connect() -> Any:
        if fast_transport:
            import aiofastnet

            _, protocol = await aiofastnet.create_connection(
                loop, factory, target.host, target.port, ssl=context
            )
        else:
            _, protocol = await loop.create_connection(
                factory, target.host, target.port, ssl=context
            )
        every.append(protocol)
        return protocol

    async def send(i: int) -> int:
        protocol = idle.pop() if idle else await connect()
        body = form_body(i)
        waiter = loop.create_future()
        protocol.waiter = waiter
        if parser == "httptools":
            protocol.send(target.request(body))
        else:
            protocol.send_body(body)
        status: int = await waiter
        idle.append(protocol)
        return status

    ok = await measure(send)
    for protocol in every:
        protocol.transport.close()
    return ok


async def _run_pyreqwest(target: Target, requests: int, concurrency: int, measure: Measure) -> int:
    from datetime import timedelta

    from pyreqwest.client import ClientBuilder

    builder = (
        ClientBuilder()
        .max_connections(concurrency)
        .follow_redirects(False)
        .gzip(False)
        .brotli(False)
        .zstd(False)
        .deflate(False)
        .referer(False)
        .timeout(timedelta(seconds=30))
        .connect_timeout(timedelta(seconds=5))
        .default_headers({"Authorization": AUTHORIZATION, "Content-Type": FORM_TYPE})
    )
    if target.tls:
        assert target.ca_file is not None
        builder = builder.add_root_certificate_pem(Path(target.ca_file).read_bytes())
    url = target.url + PATH
    async with builder.build() as client:

        async def send(i: int) -> int:
            response = await client.post(url).body_bytes(form_body(i)).build().send()
            await response.bytes()
            return response.status

        return await measure(send)


async def _run_smsgw(target: Target, requests: int, concurrency: int, measure: Measure) -> int:
    from smsgw import transport

    pool = transport.Pool(
        target.url,
        max_connections=concurrency,
        connect_timeout_s=5,
        timeout_s=30,
        ca_file=target.ca_file,
    )
    template = transport.RequestTemplate(
        "POST",
        PATH,
        pool.host_header,
        {"Authorization": AUTHORIZATION, "Content-Type": FORM_TYPE, "Accept": "application/json"},
    )

    async def send(i: int) -> int:
        connection = await pool.connection()
        response = await connection.send(template.build(form_body(i)))
        return response.status

    try:
        return await measure(send)
    finally:
        await pool.close()


Measure = Callable[[Send], Awaitable[int]]


def _fake_stats(target: Target) -> dict[str, Any]:
    return fetch_stats(target.url, ca_file=target.ca_file)


async def _child_main(args: argparse.Namespace) -> dict[str, Any]:
    target = Target(args.host, args.port, args.scheme == "tls", args.ca_file)
    report: dict[str, Any] = {}

    async def measure(send: Send) -> int:
        warm = max(args.concurrency * 4, 256)
        await _drive(send, warm, args.concurrency, first=10**6)
        before = _fake_stats(target)
        cpu0 = time.process_time()
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        ok = await _drive(send, args.requests, args.concurrency)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        usage = resource.getrusage(resource.RUSAGE_SELF)
        after = _fake_stats(target)
        report.update(
            seconds=seconds,
            cpu_s=cpu,
            user_s=usage.ru_utime - usage0.ru_utime,
            sys_s=usage.ru_stime - usage0.ru_stime,
            fake_cpu_s=after["cpu_s"] - before["cpu_s"],
            fake_requests=after["requests"] - before["requests"],
        )
        return ok

    name, n, c = args.child, args.requests, args.concurrency
    runners: dict[str, Callable[[], Awaitable[int]]] = {
        "raw": lambda: _run_raw(target, n, c, measure),
        "aiohttp-naive": lambda: _run_aiohttp(target, n, c, measure, naive=True),
        "aiohttp-tuned": lambda: _run_aiohttp(target, n, c, measure, naive=False),
        "aiohttp-afn": lambda: _run_aiohttp(target, n, c, measure, naive=False),
        "httptools": lambda: _run_pool(target, n, c, measure, parser="httptools"),
        "httptools-afn": lambda: _run_pool(
            target, n, c, measure, parser="httptools", fast_transport=True
        ),
        "h11": lambda: _run_pool(target, n, c, measure, parser="h11"),
        "pyreqwest": lambda: _run_pyreqwest(target, n, c, measure),
        "smsgw": lambda: _run_smsgw(target, n, c, measure),
    }
    report["ok"] = await runners[name]()
    return report


def _child(args: argparse.Namespace) -> None:
    import uvloop

    try:
        if args.child == "aiohttp-afn":
            import aiofastnet

            factory = aiofastnet.loop_factory(uvloop.new_event_loop)
            with asyncio.Runner(loop_factory=factory) as runner:
                report = runner.run(_child_main(args))
        else:
            report = uvloop.run(_child_main(args))
    except ImportError as exc:
        report = {"error": f"not installed: {exc.name or exc}"}
    print(_RESULT + json.dumps(report), flush=True)


# -- parent: the fakes, the children, the table --------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    scheme: str
    rps: float = 0.0
    client_us: float = 0.0
    client_sys_us: float = 0.0
    fake_us: float = 0.0
    ok: int = 0
    error: str | None = None


def _run_child(name: str, scheme: str, port: int, ca_file: str | None, args: Any) -> Row:
    argv = [sys.executable, "-m", "bench.transports", "--child", name, "--scheme", scheme]
    argv += ["--port", str(port), "--requests", str(args.requests)]
    argv += ["--concurrency", str(args.concurrency)]
    if ca_file is not None:
        argv += ["--ca-file", ca_file]
    proc = subprocess.run(
        argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    for line in proc.stdout.splitlines():
        if line.startswith(_RESULT):
            data = json.loads(line[len(_RESULT) :])
            if "error" in data:
                return Row(name, scheme, error=data["error"])
            n = args.requests
            return Row(
                name,
                scheme,
                rps=n / data["seconds"],
                client_us=data["cpu_s"] / n * 1e6,
                client_sys_us=data["sys_s"] / n * 1e6,
                fake_us=data["fake_cpu_s"] / max(data["fake_requests"], 1) * 1e6,
                ok=data["ok"],
            )
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return Row(name, scheme, error=f"exit {proc.returncode}: {tail[:120]}")


def _median_row(rows: list[Row]) -> Row:
    good = [r for r in rows if r.error is None]
    if not good:
        return rows[0]
    return Row(
        rows[0].name,
        rows[0].scheme,
        rps=statistics.median(r.rps for r in good),
        client_us=statistics.median(r.client_us for r in good),
        client_sys_us=statistics.median(r.client_sys_us for r in good),
        fake_us=statistics.median(r.fake_us for r in good),
        ok=min(r.ok for r in good),
    )


def _print_table(rows: list[Row], requests: int) -> None:
    print(
        "| transport | scheme | req/s | client CPU µs/req (sys) | fake CPU µs/req "
        "| req/s ÷ raw | req/s ÷ naive | CPU ÷ raw | CPU ÷ naive | 201s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        if row.error is not None:
            print(f"| {row.name} | {row.scheme} | {row.error} | | | | | | | |")
            continue
        raw = next((r for r in rows if r.scheme == row.scheme and r.name == "raw"), None)
        naive = next(
            (r for r in rows if r.scheme == row.scheme and r.name == "aiohttp-naive"), None
        )

        def ratios(base: Row | None, row: Row = row) -> tuple[str, str]:
            if base is None or base.error is not None or not base.rps:
                return "", ""
            return f"{row.rps / base.rps:.2f}", f"{row.client_us / base.client_us:.2f}"

        raw_rps, raw_cpu = ratios(raw)
        naive_rps, naive_cpu = ratios(naive)
        print(
            f"| {row.name} | {row.scheme} | {row.rps:,.0f} | {row.client_us:.1f} "
            f"({row.client_sys_us:.1f}) | {row.fake_us:.1f} | {raw_rps} | {naive_rps} "
            f"| {raw_cpu} | {naive_cpu} | {row.ok}/{requests} |"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--only", default=",".join(CANDIDATES))
    parser.add_argument("--schemes", default="tcp,tls")
    # Child mode (internal): one candidate against one fake.
    parser.add_argument("--child", choices=CANDIDATES, help=argparse.SUPPRESS)
    parser.add_argument("--scheme", choices=("tcp", "tls"), help=argparse.SUPPRESS)
    parser.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ca-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return

    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - set(CANDIDATES)
    if unknown:
        parser.error(f"unknown candidates: {', '.join(sorted(unknown))}")
    schemes = [s for s in args.schemes.split(",") if s]
    load_before = os.getloadavg()
    results: dict[tuple[str, str], list[Row]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-transports-") as tmp:
        directory = Path(tmp)
        fakes = {}
        try:
            for scheme in schemes:
                argv_ = ["python", "-m", "bench.fast_fake"]
                if scheme == "tls":
                    argv_ += ["--tls-dir", str(directory / "tls")]
                fakes[scheme] = start_process(argv_, directory / f"{scheme}.port")
            ca_file = str(directory / "tls" / "ca.pem")
            for round_ in range(args.rounds):
                for scheme in schemes:
                    for name in names:
                        row = _run_child(
                            name,
                            scheme,
                            fakes[scheme][1],
                            ca_file if scheme == "tls" else None,
                            args,
                        )
                        results.setdefault((scheme, name), []).append(row)
                        print(
                            f"round {round_ + 1} {scheme} {name}: "
                            + (row.error or f"{row.rps:,.0f} req/s, {row.client_us:.1f} µs"),
                            file=sys.stderr,
                            flush=True,
                        )
        finally:
            for proc, _ in fakes.values():
                stop_process(proc)
    load_after = os.getloadavg()
    rows = [_median_row(results[(s, n)]) for s in schemes for n in names]
    print(
        f"{args.requests} requests, {args.concurrency} in flight, "
        f"{args.rounds} round(s) (medians), CPU = user + system of each process; "
        f"load average (1/5/15 min) before {' '.join(f'{x:.2f}' for x in load_before)}, "
        f"after {' '.join(f'{x:.2f}' for x in load_after)}"
    )
    _print_table(rows, args.requests)


if __name__ == "__main__":
    main()
