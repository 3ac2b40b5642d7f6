"""The whole gateway against a sender alone: SMS/s and CPU per SMS, side by side, one run.

    .venv/bin/python -m bench.pipeline [--messages 40000] [--schemes tcp,tls]
        [--audits sqlite,dynamodb] [--rounds 1] [--profile]

Against the same fast fake Twilio (`testkit.fast_fake`, a process of its own; TLS with a
self-signed CA made at run time), in one run:

  raw      the raw asyncio sender of `bench.transports` (request bytes by hand, keep-alive):
           what Python can do here
  naive    aiohttp written the naive way (form dict, BasicAuth), nothing else
  smsgw    one `smsgw serve` process, embedded defaults (memory queue, memory limiter, the
           audit on: SQLite, or DynamoDB on a private dynalite), the provider without a
           rate: the messages are offered through `POST /v1/messages/batch` (1000 per call,
           4 calls in flight, bodies built before the clock starts) by this process

The senders send `--messages` requests each with 64 in flight. For smsgw the clock runs from
the first offer until the fake has counted every message and the gateway's audit backlog is
empty (every event stored); CPU is user + system of the gateway process over that window
(from /proc), with the fake's and this load generator's beside it. Afterwards the audit is
read back: every message must have its accepted, queued, sending and sent events.

It also reports the gateway's event-loop lag while it took the batches in (the histogram
`smsgw_event_loop_lag_seconds`: the share of probes later than 5 ms and the largest bucket
reached). `--profile` runs the gateway once more under `py-spy record` (not in the numbers)
and prints the functions that hold most samples, by their own time and with their callees.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import orjson

from bench import transports
from testkit.fake_provider import fetch_stats, twilio_provider_toml
from testkit.processes import (
    REPO_ROOT,
    process_cpu_s,
    start_process,
    stop_process,
    thread_cpu_s,
    wait_ready,
)
from testkit.services import DynaliteServer

BATCH: Final = 1000
BATCHES_IN_FLIGHT: Final = 4
# Messages through the gateway before its clock starts (the senders warm up as well).
WARM_UP: Final = 4 * BATCH
SENDER_CONCURRENCY: Final = 64
EVENTS_PER_MESSAGE: Final = ("accepted", "queued", "sending", "sent")
# Installed beside this interpreter (pip install py-spy), or on PATH.
PY_SPY: Final = str(Path(sys.executable).with_name("py-spy"))


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    scheme: str
    audit: str = ""
    sms_s: float = 0.0
    cpu_us: float = 0.0
    loop_us: float = 0.0
    connections: int = 0
    store_us: float = 0.0
    fake_us: float = 0.0
    loadgen_us: float = 0.0
    lag_over_5ms: float = 0.0
    lag_max_bucket: str = ""
    complete: str = ""
    error: str | None = None


# -- the senders alone (bench.transports' children) ----------------------------------------


def run_sender(name: str, scheme: str, port: int, ca_file: str | None, messages: int) -> Result:
    candidate = {"raw": "raw", "naive": "aiohttp-naive"}[name]
    args = argparse.Namespace(requests=messages, concurrency=SENDER_CONCURRENCY)
    row = transports._run_child(candidate, scheme, port, ca_file, args)
    if row.error is not None:
        return Result(name, scheme, error=row.error)
    return Result(
        name,
        scheme,
        sms_s=row.rps,
        cpu_us=row.client_us,
        fake_us=row.fake_us,
        complete=f"{row.ok}/{messages} answered 201",
    )


# -- the whole gateway ---------------------------------------------------------------------


def gateway_config(
    directory: Path,
    fake_url: str,
    ca_file: str | None,
    audit: str,
    dynamo: str,
    table: str = "smsgw-audit",
    **provider: Any,
) -> Path:
    if audit == "dynamodb":
        audit_toml = f"""
backend = "dynamodb"
endpoint_url = "{dynamo}"
access_key_id = "bench"
secret_access_key = "bench"
table = "{table}"
"""
    else:
        audit_toml = f'path = "{directory}/audit.sqlite3"\n'
    extra: dict[str, Any] = provider if ca_file is None else {"ca_file": ca_file, **provider}
    path = directory / f"smsgw-{audit}.toml"
    path.write_text(
        f"""
[server]
drain_timeout_s = 10
[otp]
secret = "bench-secret-0123456789"
[audit]
spool_dir = "{directory}/audit-spool-{audit}"
{audit_toml}
[queue]
max_size = 200000
{twilio_provider_toml(fake_url, **extra)}
"""
    )
    return path


def batch_bodies(messages: int, run: int, first: int = 0) -> list[bytes]:
    """The batch requests, encoded before the clock starts (distinct numbers and bodies)."""
    bodies = []
    for start in range(first, first + messages, BATCH):
        batch = [
            {"to": f"+1415{2_000_000 + n % 1_000_000}", "body": f"Parcel {run}-{n} arrives today"}
            for n in range(start, min(start + BATCH, first + messages))
        ]
        bodies.append(orjson.dumps({"messages": batch}))
    return bodies


def drained(
    base: str, fake_url: str, ca_file: str | None, requests: int
) -> tuple[dict[str, Any], dict[str, float]]:
    """Wait until the fake has counted `requests` in all and every audit event is stored
    (none buffered, being written or in the spool); the fake's stats and the metrics then."""
    deadline = time.monotonic() + 600
    while True:
        stats = fetch_stats(fake_url, ca_file=ca_file)
        if stats["requests"] >= requests:
            metrics = scrape(base)
            backlog = metrics.get("smsgw_audit_backlog_events", 1.0)
            if backlog == 0.0 and metrics.get("smsgw_audit_spool_bytes", 1.0) == 0.0:
                return stats, metrics
        if time.monotonic() > deadline:
            raise RuntimeError("not every message arrived and was audited in time")
        time.sleep(0.02)


async def offer(base: str, bodies: list[bytes]) -> None:
    pending = iter(bodies)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:

        async def poster() -> None:
            for body in pending:
                async with session.post(
                    f"{base}/v1/messages/batch", data=body, headers=headers
                ) as response:
                    if response.status != 202:
                        raise RuntimeError(f"HTTP {response.status}: {await response.text()}")

        await asyncio.gather(*(poster() for _ in range(BATCHES_IN_FLIGHT)))


async def offer_paced(base: str, bodies: list[bytes], per_second: float) -> None:
    """One batch every 1/per_second s, each sent on time whatever the others are doing."""
    headers = {"Content-Type": "application/json"}
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with aiohttp.ClientSession() as session:

        async def post(index: int, body: bytes) -> None:
            await asyncio.sleep(max(start + index / per_second - loop.time(), 0.0))
            async with session.post(
                f"{base}/v1/messages/batch", data=body, headers=headers
            ) as response:
                if response.status != 202:
                    raise RuntimeError(f"HTTP {response.status}: {await response.text()}")

        await asyncio.gather(*(post(i, body) for i, body in enumerate(bodies)))


def scrape(base: str) -> dict[str, float]:
    """The gateway's /metrics as {"name{labels}": value} (the lines we read)."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                values[name] = float(value)
    return values


def histogram(before: dict[str, float], after: dict[str, float], prefix: str) -> list[Bucket]:
    """A histogram's cumulative buckets between two scrapes: [(le, count)], ascending; the
    series whose key starts with `prefix` (name and any labels before `le=`)."""
    buckets = []
    for key, value in after.items():
        if key.startswith(prefix) and 'le="' in key:
            le = float(key.rsplit('le="', 1)[1].split('"', 1)[0])
            buckets.append((le, value - before.get(key, 0.0)))
    return sorted(buckets)


Bucket = tuple[float, float]


def share_over(buckets: list[Bucket], bound: float) -> float:
    total = buckets[-1][1] if buckets else 0.0
    if not total:
        return 0.0
    within = max((count for le, count in buckets if le <= bound), default=0.0)
    return 1 - within / total


def quantile_bucket(buckets: list[Bucket], q: float) -> str:
    """The smallest bucket bound holding a share `q` of the observations, as text."""
    total = buckets[-1][1] if buckets else 0.0
    if not total:
        return "-"
    top = next(le for le, count in buckets if count >= q * total)
    return "+Inf" if top == float("inf") else f"≤ {top * 1000:g} ms"


LOOP_LAG = "smsgw_event_loop_lag_seconds_bucket{"
DECISION_DELAY = "smsgw_send_decision_delay_seconds_bucket{"


def lag_summary(before: dict[str, float], after: dict[str, float]) -> tuple[float, str]:
    """(share of loop-lag probes over 5 ms, the smallest bucket holding every probe) between
    two scrapes."""
    buckets = histogram(before, after, LOOP_LAG)
    return share_over(buckets, 0.005), quantile_bucket(buckets, 1.0)


def audit_complete_sqlite(path: Path, messages: int) -> str:
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute(
            "SELECT json_extract(event, '$.kind'), count(*) FROM audit_events GROUP BY 1"
        ).fetchall()
    return _completeness(Counter(dict(rows)), messages)


def audit_complete_dynamodb(url: str, table: str, messages: int) -> str:
    import botocore.session

    client = botocore.session.get_session().create_client(
        "dynamodb",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    kinds: Counter[str] = Counter()
    for page in client.get_paginator("scan").paginate(TableName=table, ProjectionExpression="kind"):
        kinds.update(item["kind"]["S"] for item in page["Items"])
    return _completeness(kinds, messages)


def _completeness(kinds: Counter[str], messages: int) -> str:
    missing = {
        kind: messages - kinds[kind] for kind in EVENTS_PER_MESSAGE if kinds[kind] < messages
    }
    if missing:
        return "MISSING " + ", ".join(f"{k} {n}" for k, n in missing.items())
    return f"{messages}/{messages} with {len(EVENTS_PER_MESSAGE)} events"


def run_gateway(
    scheme: str,
    fake_url: str,
    ca_file: str | None,
    audit: str,
    messages: int,
    *,
    dynamo: str,
    run: int,
    profile_to: Path | None = None,
    dynamo_pid: int | None = None,
) -> Result:
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        directory = Path(tmp)
        table = f"smsgw-audit-{run}"  # a table per run: the completeness check counts it
        config = gateway_config(directory, fake_url, ca_file, audit, dynamo, table=table)
        argv = [sys.executable, "-m", "smsgw", "serve", "--config", str(config)]
        argv += ["--log-level", "warning"]
        if audit == "dynamodb":
            subprocess.run(
                [sys.executable, "-m", "smsgw", "migrate", "--config", str(config)],
                cwd=REPO_ROOT,
                check=True,
                capture_output=True,
            )
        gateway, port = start_process(argv, directory / "gw.port", log_path=directory / "gw.log")
        spy = None
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(f"{base}/readyz")
            bodies = batch_bodies(messages, run)
            if profile_to is not None:
                spy = subprocess.Popen(
                    [
                        *(PY_SPY, "record", "--pid", str(gateway.pid), "--rate", "1000"),
                        *("--format", "raw", "--output", str(profile_to), "--nonblocking", "--gil"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(1.0)
            # Warmed up first, as the senders are (bench.transports): connections open (TLS
            # handshakes done) and every code path run once, so the clock measures the
            # steady cost of a message, not the pool's first seconds.
            start = fetch_stats(fake_url, ca_file=ca_file)["requests"]
            asyncio.run(offer(base, batch_bodies(WARM_UP, run, first=10**6)))
            drained(base, fake_url, ca_file, start + WARM_UP)
            fake0 = fetch_stats(fake_url, ca_file=ca_file)
            metrics0 = scrape(base)
            cpu0 = process_cpu_s(gateway.pid)
            loop0, _ = thread_cpu_s(gateway.pid)
            store0 = process_cpu_s(dynamo_pid) if dynamo_pid else 0.0
            load0 = time.process_time()
            started = time.monotonic()
            asyncio.run(offer(base, bodies))
            loadgen = time.process_time() - load0
            metrics1 = scrape(base)
            fake1, metrics = drained(base, fake_url, ca_file, fake0["requests"] + messages)
            seconds = time.monotonic() - started
            cpu = process_cpu_s(gateway.pid) - cpu0
            loop = thread_cpu_s(gateway.pid)[0] - loop0
            store = (process_cpu_s(dynamo_pid) - store0) if dynamo_pid else 0.0
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
                spy.wait(30)
            stop_process(gateway, timeout=30)
        if audit == "sqlite":
            complete = audit_complete_sqlite(directory / "audit.sqlite3", messages + WARM_UP)
        else:
            complete = audit_complete_dynamodb(dynamo, table, messages + WARM_UP)
        over, top = lag_summary(metrics0, metrics1)
        # Events that took the slow way: copied to disk while a write was slow (guarded), or
        # written to the spool and replayed (spooled).
        detours = {
            result: int(metrics.get(f'smsgw_audit_events_total{{result="{result}"}}', 0))
            for result in ("guarded", "spooled")
        }
        complete += "; " + ", ".join(f"{n} {result}" for result, n in detours.items())
        fake_requests = max(fake1["requests"] - fake0["requests"], 1)
        return Result(
            "smsgw",
            scheme,
            audit,
            sms_s=messages / seconds,
            cpu_us=cpu / messages * 1e6,
            loop_us=loop / messages * 1e6,
            connections=fake1["connections"] - fake0["connections"],
            store_us=store / messages * 1e6,
            fake_us=(fake1["cpu_s"] - fake0["cpu_s"]) / fake_requests * 1e6,
            loadgen_us=loadgen / messages * 1e6,
            lag_over_5ms=over,
            lag_max_bucket=top,
            complete=complete,
        )


# -- the loop under batch intake, sends paced -----------------------------------------

# 1000-message batches at 4 a second (4000 SMS/s) to a provider with a rate of 5000: the
# loop has time to spare, so what the lag shows is what a batch's intake holds it for.
PACED_RATE: Final = 5000
PACED_BATCHES_PER_S: Final = 4


@dataclass(frozen=True, slots=True)
class Paced:
    scheme: str
    offered_s: float
    sent_s: float
    probes: int
    lag_over_5ms: float
    lag_p99: str
    lag_max: str
    decision_p99: str
    decision_max: str
    connections: int


def run_paced(scheme: str, fake_url: str, ca_file: str | None, seconds: float, run: int) -> Paced:
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        directory = Path(tmp)
        config = gateway_config(directory, fake_url, ca_file, "sqlite", "", rate=PACED_RATE)
        argv = [sys.executable, "-m", "smsgw", "serve", "--config", str(config)]
        argv += ["--log-level", "warning"]
        gateway, port = start_process(argv, directory / "gw.port", log_path=directory / "gw.log")
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(f"{base}/readyz")
            bodies = batch_bodies(round(seconds * PACED_BATCHES_PER_S) * BATCH, run)
            messages = len(bodies) * BATCH
            before = fetch_stats(fake_url, ca_file=ca_file)
            fake0 = before["requests"]
            metrics0 = scrape(base)
            started = time.monotonic()
            asyncio.run(offer_paced(base, bodies, PACED_BATCHES_PER_S))
            offered_for = time.monotonic() - started
            deadline = started + 300
            while fetch_stats(fake_url, ca_file=ca_file)["requests"] - fake0 < messages:
                if time.monotonic() > deadline:
                    raise RuntimeError("not every paced message arrived in time")
                time.sleep(0.02)
            sent_for = time.monotonic() - started
            metrics1 = scrape(base)
            connections = (
                fetch_stats(fake_url, ca_file=ca_file)["connections"] - before["connections"]
            )
        finally:
            stop_process(gateway, timeout=30)
    lag = histogram(metrics0, metrics1, LOOP_LAG)
    decision = histogram(metrics0, metrics1, DECISION_DELAY)
    return Paced(
        scheme,
        offered_s=messages / offered_for,
        sent_s=messages / sent_for,
        probes=int(lag[-1][1]) if lag else 0,
        lag_over_5ms=share_over(lag, 0.005),
        lag_p99=quantile_bucket(lag, 0.99),
        lag_max=quantile_bucket(lag, 1.0),
        decision_p99=quantile_bucket(decision, 0.99),
        decision_max=quantile_bucket(decision, 1.0),
        connections=connections,
    )


def print_paced(results: list[Paced]) -> None:
    print(
        f"\nBatch intake with sends paced: 1000-message batches, {PACED_BATCHES_PER_S} a second, "
        f"provider rate {PACED_RATE}/s, SQLite audit; lag probes every 50 ms over the whole run\n"
    )
    print(
        "| scheme | offered SMS/s | sent SMS/s | lag probes | probes > 5 ms | lag p99 | lag max "
        "| slot-to-write p99 | slot-to-write max | connections opened |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for p in results:
        print(
            f"| {p.scheme} | {p.offered_s:,.0f} | {p.sent_s:,.0f} | {p.probes} "
            f"| {p.lag_over_5ms:.1%} | {p.lag_p99} | {p.lag_max} | {p.decision_p99} "
            f"| {p.decision_max} | {p.connections} |"
        )


# -- the profile --------------------------------------------------------------------------


def profile_summary(path: Path, top: int = 25) -> list[str]:
    """py-spy's raw (collapsed) stacks: the functions with most samples on their own and
    with their callees, as shares of every sample."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [_short(frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return ["no samples"]
    lines = [f"{total} samples", "", "| own | function |", "|---|---|"]
    lines += [f"| {n / total:.1%} | {f} |" for f, n in own.most_common(top)]
    lines += ["", "| with callees | function |", "|---|---|"]
    lines += [f"| {n / total:.1%} | {f} |" for f, n in inclusive.most_common(top)]
    return lines


def _short(frame: str) -> str:
    """`func (path/to/module.py:12)` -> `func (module.py)`: lines merged, paths cut."""
    name, _, where = frame.partition(" (")
    module = where.rsplit(":", 1)[0].rsplit("/", 2)
    return f"{name} ({'/'.join(module[-2:])})"


# -- the table ----------------------------------------------------------------------------


def print_table(results: list[Result]) -> None:
    print(
        "| sender | scheme | audit | SMS/s | CPU µs/SMS (loop thread) | ÷ naive SMS/s "
        "| ÷ raw SMS/s | fake µs/req | loadgen µs/SMS | loop lag > 5 ms (max) | complete |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if r.error is not None:
            print(f"| {r.name} | {r.scheme} | {r.audit} | {r.error} | | | | | | | |")
            continue
        base = {b.name: b for b in results if b.scheme == r.scheme and b.error is None}
        naive = f"{r.sms_s / base['naive'].sms_s:.2f}" if "naive" in base else ""
        raw = f"{r.sms_s / base['raw'].sms_s:.2f}" if "raw" in base else ""
        lag = f"{r.lag_over_5ms:.1%} ({r.lag_max_bucket})" if r.name == "smsgw" else ""
        loadgen = f"{r.loadgen_us:.1f}" if r.name == "smsgw" else ""
        cpu = f"{r.cpu_us:.1f} ({r.loop_us:.1f})" if r.name == "smsgw" else f"{r.cpu_us:.1f}"
        print(
            f"| {r.name} | {r.scheme} | {r.audit} | {r.sms_s:,.0f} | {cpu} | {naive} "
            f"| {raw} | {r.fake_us:.1f} | {loadgen} | {lag} | {r.complete} |"
        )


def median_result(runs: list[Result]) -> Result:
    good = [r for r in runs if r.error is None]
    if not good:
        return runs[0]
    middle = sorted(good, key=lambda r: r.sms_s)[len(good) // 2]
    return Result(
        middle.name,
        middle.scheme,
        middle.audit,
        sms_s=statistics.median(r.sms_s for r in good),
        cpu_us=statistics.median(r.cpu_us for r in good),
        loop_us=statistics.median(r.loop_us for r in good),
        fake_us=statistics.median(r.fake_us for r in good),
        loadgen_us=statistics.median(r.loadgen_us for r in good),
        lag_over_5ms=max(r.lag_over_5ms for r in good),
        lag_max_bucket=middle.lag_max_bucket,
        complete="; ".join(sorted({r.complete for r in good})),
    )


@contextlib.contextmanager
def fakes(directory: Path, schemes: list[str]) -> Iterator[dict[str, tuple[str, int]]]:
    started = {}
    try:
        for scheme in schemes:
            argv = [sys.executable, "-m", "testkit.fast_fake"]
            if scheme == "tls":
                argv += ["--tls-dir", str(directory / "tls")]
            proc, port = start_process(argv, directory / f"fake-{scheme}.port")
            started[scheme] = (proc, port)
        yield {
            scheme: (f"{'https' if scheme == 'tls' else 'http'}://127.0.0.1:{port}", port)
            for scheme, (_, port) in started.items()
        }
    finally:
        for proc, _ in started.values():
            stop_process(proc)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=40_000)
    parser.add_argument("--schemes", default="tcp,tls")
    parser.add_argument("--audits", default="sqlite,dynamodb")
    parser.add_argument("--senders", default="raw,naive", help="the senders alone to run")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--paced-seconds", type=float, default=5.0, help="the paced intake run (0: none)"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the gateway (sqlite, tcp)")
    parser.add_argument("--profile-out", type=Path, help="keep py-spy's raw stacks in this file")
    parser.add_argument("--profile-audit", default="sqlite", choices=("sqlite", "dynamodb"))
    args = parser.parse_args(argv)
    schemes = [s for s in args.schemes.split(",") if s]
    audits = [a for a in args.audits.split(",") if a]
    senders = [s for s in args.senders.split(",") if s]
    load_before = os.getloadavg()
    runs: dict[tuple[str, str, str], list[Result]] = {}
    profile: list[str] = []
    paced: list[Paced] = []
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        directory = Path(tmp)
        dynalite = DynaliteServer(directory / "dynalite") if "dynamodb" in audits else None
        if dynalite is not None:
            (directory / "dynalite").mkdir()
            dynalite.start()
        try:
            with fakes(directory, schemes) as urls:
                ca_file = str(directory / "tls" / "ca.pem")
                run = 0
                for round_ in range(args.rounds):
                    for scheme in schemes:
                        url, port = urls[scheme]
                        ca = ca_file if scheme == "tls" else None
                        for name in senders:
                            result = run_sender(name, scheme, port, ca, args.messages)
                            runs.setdefault((scheme, name, ""), []).append(result)
                            _progress(round_, result)
                        for audit in audits:
                            result = run_gateway(
                                scheme,
                                url,
                                ca,
                                audit,
                                args.messages,
                                dynamo=dynalite.url if dynalite else "",
                                run=run,
                                dynamo_pid=dynalite.pid
                                if dynalite and audit == "dynamodb"
                                else None,
                            )
                            run += 1
                            runs.setdefault((scheme, "smsgw", audit), []).append(result)
                            _progress(round_, result)
                if args.paced_seconds > 0:
                    for scheme in schemes:
                        ca = ca_file if scheme == "tls" else None
                        paced.append(
                            run_paced(scheme, urls[scheme][0], ca, args.paced_seconds, run)
                        )
                        run += 1
                if args.profile:
                    if shutil.which(PY_SPY) is None:
                        profile = ["py-spy is not installed (pip install py-spy)"]
                    else:
                        raw_profile = directory / "profile.txt"
                        run_gateway(
                            schemes[0],
                            urls[schemes[0]][0],
                            ca_file if schemes[0] == "tls" else None,
                            args.profile_audit,
                            args.messages,
                            dynamo=dynalite.url if dynalite else "",
                            run=run,
                            profile_to=raw_profile,
                        )
                        profile = profile_summary(raw_profile)
                        if args.profile_out is not None:
                            shutil.copyfile(raw_profile, args.profile_out)
        finally:
            if dynalite is not None:
                dynalite.stop()
    load_after = os.getloadavg()
    print(
        f"\n{args.messages} messages per sender, {args.rounds} round(s) (medians); "
        f"load average before {' '.join(f'{x:.2f}' for x in load_before)}, "
        f"after {' '.join(f'{x:.2f}' for x in load_after)}\n"
    )
    print_table([median_result(r) for r in runs.values()])
    if paced:
        print_paced(paced)
    if profile:
        print(
            f"\npy-spy, the gateway ({args.profile_audit} audit, {schemes[0]}), "
            "not in the numbers above:\n"
        )
        print("\n".join(profile))


def _progress(round_: int, r: Result) -> None:
    what = r.error or (
        f"{r.sms_s:,.0f} SMS/s, {r.cpu_us:.1f} µs/SMS, {r.connections} connections opened, "
        f"store {r.store_us:.1f} µs/SMS, {r.complete}"
    )
    print(f"round {round_ + 1} {r.scheme} {r.name} {r.audit}: {what}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
