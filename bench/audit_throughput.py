"""Audit trail to DynamoDB (dynalite): the writer against a plain aiobotocore loop, and the
audit lag of the whole pipeline at stepped offered rates.

    .venv/bin/python -m bench.audit_throughput [--events 20000] [--rounds 3]
        [--rates 500,750,1000,1500,2000] [--seconds 10]

Everything runs on loopback against a private dynalite (temporary directory, free port);
tables are made by `DynamoDbStore.migrate()`, a fresh one for every run.

1. Write speed. `--events` events of realistic messages (accepted with a ~60-character
   body, queued, sending, sent) are recorded into smsgw's AuditWriter (the real
   DynamoDbStore, default settings) as fast as `record()` takes them, yielding to the loop
   every 100 events as a server would between requests; the clock stops when the writer
   has stored all of them. The baseline writes the same items, built beforehand with
   `encode_item`, by the loop a developer would write by hand: `batch_write_item` of 25
   items, one call after the other, resending UnprocessedItems. The two alternate for
   `--rounds` rounds after a short warm-up of both; medians and their ratio are reported,
   with the CPU time of this process per 1000 events, the CPU share dynalite used and how
   busy the whole machine was (from /proc: the machine is shared).
2. Audit lag. The real app (`create_app`, memory queue, Twilio provider pointed at
   `bench.fake_provider` in its own process, DynamoDB audit on the same dynalite) runs in
   this process behind `web.AppRunner`, fresh for each offered rate. An aiohttp client in
   the same process and loop offers messages through `POST /v1/messages/batch`, rate/10
   every 0.1 s for `--seconds` (its CPU counts as smsgw's), then the run
   waits (at most 30 s) until every message is sent and every event stored, directly or
   replayed from the spool. The lag of an event is the time it was stored minus its event
   time (`AuditWriter.lags`, in the order of storing). A rate is sustained when every
   message was sent and every event stored within 2 s of the end of the offer, nothing was
   spooled, and the lag did not climb: the median lag of the last second's worth of events
   stored (rate x 4) exceeds that of the first second's by less than 0.5 s. A writer
   falling behind stores each event a little later than the one before.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
from aiobotocore.session import get_session  # type: ignore[import-untyped]
from aiohttp import web

from bench.loadgen import start_process, stop_process, wait_ready
from smsgw.app import create_app
from smsgw.app_keys import AUDIT, DISPATCHER
from smsgw.audit import AuditEvent, AuditWriter, Spool
from smsgw.audit.dynamodb import DynamoDbStore, encode_item
from smsgw.log import configure_logging
from smsgw.settings import AuditSettings, parse_settings
from testkit.fake_provider import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN
from testkit.services import DynaliteServer

BODY = "Your Acme order 4417 ships today. Track: acme.example/t/4417"
TO = "+14155550100"
EVENTS_PER_MESSAGE = 4
YIELD_EVERY = 100
DRAIN_LIMIT_S = 30.0
CAUGHT_UP_WITHIN_S = 2.0
LAG_GROWTH_LIMIT_S = 0.5
RETENTION_S = 400 * 86400

Event = tuple[str, str, dict[str, Any]]


def _events(count: int) -> list[Event]:
    """(message id, kind, details): four events per message, as the gateway records them."""
    out: list[Event] = []
    expires = time.time() + 86400
    for n in range(count // EVENTS_PER_MESSAGE):
        mid = f"msg_{os.urandom(16).hex()}"
        accepted = {"client": "default", "to": TO, "body": BODY, "priority": "normal"}
        out.append((mid, "accepted", {**accepted, "expires_at": expires}))
        out.append((mid, "queued", {}))
        out.append((mid, "sending", {"provider": "twilio", "attempt": 1}))
        sent = {"provider": "twilio", "attempt": 1, "provider_message_id": f"SM{n:032x}"}
        out.append((mid, "sent", sent))
    return out


def _audit_settings(url: str, table: str, spool: Path) -> AuditSettings:
    return AuditSettings(
        backend="dynamodb",
        endpoint_url=url,
        access_key_id="bench",
        secret_access_key="bench",
        table=table,
        spool_dir=str(spool),
    )


async def _migrate(settings: AuditSettings) -> None:
    store = await DynamoDbStore.open(settings)
    try:
        await store.migrate()
    finally:
        await store.close()


# -- CPU of other processes, from /proc --


def _find_pid(argument: str) -> int:
    """The process with `argument` as one of its command-line arguments."""
    wanted = argument.encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if wanted in argv:
                return int(entry.name)
    raise RuntimeError(f"no process with argument {argument}")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine() -> tuple[float, float]:
    """(busy, total) jiffies of all cores together, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _busy_since(start: tuple[float, float]) -> float:
    """Share of the whole machine (all cores) busy since `start`, whoever used it."""
    busy, total = _machine()
    return (busy - start[0]) / max(total - start[1], 1.0)


@dataclass(frozen=True, slots=True)
class WriteRun:
    events_per_s: float
    cpu_ms_per_1000: float  # this process
    dynalite_cpu_share: float  # of one core, over the run
    machine_busy: float  # share of all cores, over the run


async def _writer_run(settings: AuditSettings, events: Sequence[Event], dynalite: int) -> WriteRun:
    await _migrate(settings)
    store = await DynamoDbStore.open(settings)
    writer = AuditWriter(store, Spool.open(settings.spool_dir), settings, "bench")
    writer.start()
    try:
        dynalite_cpu, cpu, machine = _cpu_s(dynalite), time.process_time(), _machine()
        started = time.monotonic()
        for n, (message_id, kind, details) in enumerate(events, 1):
            writer.record(message_id, kind, **details)  # type: ignore[arg-type]
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        while writer.stats.stored < len(events):
            if writer.stats.spooled:
                raise RuntimeError(f"the writer spooled {writer.stats.spooled} events")
            await asyncio.sleep(0.001)
        elapsed = time.monotonic() - started
        cpu = time.process_time() - cpu
        dynalite_cpu = _cpu_s(dynalite) - dynalite_cpu
        busy = _busy_since(machine)
    finally:
        await writer.close()
        await store.close()
    return WriteRun(len(events) / elapsed, cpu / len(events) * 1e6, dynalite_cpu / elapsed, busy)


async def _plain_run(settings: AuditSettings, events: Sequence[Event], dynalite: int) -> WriteRun:
    await _migrate(settings)
    items = []
    for n, (message_id, kind, details) in enumerate(events):
        at = time.time()
        event = AuditEvent(
            message_id=message_id,
            key=f"{int(at * 1_000_000):016d}:plain0{n:08x}",
            kind=kind,  # type: ignore[arg-type]
            at=at,
            replica="bench",
            **details,
        )
        items.append({"PutRequest": {"Item": encode_item(event, RETENTION_S)}})
    async with get_session().create_client(
        "dynamodb",
        region_name=settings.region,
        endpoint_url=settings.endpoint_url,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    ) as client:
        dynalite_cpu, cpu, machine = _cpu_s(dynalite), time.process_time(), _machine()
        started = time.monotonic()
        for start in range(0, len(items), 25):
            request = {settings.table: items[start : start + 25]}
            while request:
                answer = await client.batch_write_item(RequestItems=request)
                request = answer.get("UnprocessedItems") or {}
        elapsed = time.monotonic() - started
        cpu = time.process_time() - cpu
        dynalite_cpu = _cpu_s(dynalite) - dynalite_cpu
        busy = _busy_since(machine)
    return WriteRun(len(events) / elapsed, cpu / len(events) * 1e6, dynalite_cpu / elapsed, busy)


# -- the whole pipeline --


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass(frozen=True, slots=True)
class Step:
    rate: int
    offered: int
    offer_s: float  # first POST to the last answer
    sent: int
    send_rate: float  # sent / (first offer -> last send, or the end of the wait; >= --seconds)
    sent_after_s: float | None  # the last send, after the end of the offer
    stored_after_s: float | None  # the last event stored, after the end of the offer
    stored: int  # directly, and replayed from the spool
    lags: list[float]  # sorted
    early_p50: float  # median lag of the first second's worth of events stored, and of the last
    late_p50: float
    backlog_at_offer_end: int
    max_backlog: int
    spooled: int
    store_failures: int
    cpu_app: float  # shares of one core over the step
    cpu_dynalite: float
    cpu_fake: float
    machine_busy: float  # share of all cores

    @property
    def sustained(self) -> bool:
        return (
            self.spooled == 0
            and self.sent_after_s is not None
            and self.sent_after_s <= CAUGHT_UP_WITHIN_S
            and self.stored_after_s is not None
            and self.stored_after_s <= CAUGHT_UP_WITHIN_S
            and self.late_p50 - self.early_p50 < LAG_GROWTH_LIMIT_S
        )

    def lag(self, q: float) -> float:
        return self.lags[min(len(self.lags) - 1, int(len(self.lags) * q))]


def _app_settings(audit: AuditSettings, fake_url: str, directory: Path) -> Any:
    return parse_settings(
        {
            "otp": {"secret": "bench-secret-0123456789"},
            "audit": {
                "backend": "dynamodb",
                "endpoint_url": audit.endpoint_url,
                "access_key_id": "bench",
                "secret_access_key": "bench",
                "table": audit.table,
                "spool_dir": audit.spool_dir,
            },
            "queue": {"max_size": 200_000},
            "providers": [
                {
                    "name": "twilio",
                    "kind": "twilio",
                    "account_sid": DEFAULT_ACCOUNT_SID,
                    "auth_token": DEFAULT_AUTH_TOKEN,
                    "from": "+15005550006",
                    "base_url": fake_url,
                }
            ],
        },
        env={},
    )


async def _offer(url: str, rate: int, seconds: float) -> tuple[int, float]:
    """POST rate/10 messages every 0.1 s for `seconds`; (messages offered, seconds until the
    last answer)."""
    per_batch = max(1, rate // 10)
    body = json.dumps({"messages": [{"to": TO, "body": BODY}] * per_batch}).encode()
    headers = {"Content-Type": "application/json"}

    async def post(http: aiohttp.ClientSession) -> None:
        async with http.post(url, data=body, headers=headers) as response:
            if response.status != 202:
                raise RuntimeError(f"HTTP {response.status}: {await response.text()}")

    async with aiohttp.ClientSession() as http:
        started = time.monotonic()
        ticks = round(seconds * 10)
        posts = []
        for tick in range(ticks):
            await asyncio.sleep(max(0.0, started + tick * 0.1 - time.monotonic()))
            posts.append(asyncio.create_task(post(http)))
        await asyncio.gather(*posts)
        return ticks * per_batch, time.monotonic() - started


async def _pipeline(
    dynalite_url: str,
    dynalite: int,
    fake_url: str,
    fake: int,
    directory: Path,
    rate: int,
    seconds: float,
) -> Step:
    audit = _audit_settings(dynalite_url, f"lag-{rate}", directory / f"spool-lag-{rate}")
    await _migrate(audit)
    app = create_app(_app_settings(audit, fake_url, directory))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    watcher = None
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/messages/batch"
        writer: AuditWriter = app[AUDIT]
        stats = app[DISPATCHER].stats
        max_backlog = 0

        async def watch() -> None:
            nonlocal max_backlog
            while True:
                max_backlog = max(max_backlog, writer.backlog)
                await asyncio.sleep(0.02)

        watcher = asyncio.create_task(watch())
        cpu = (time.process_time(), _cpu_s(dynalite), _cpu_s(fake))
        machine = _machine()
        started = time.monotonic()
        offered, offer_s = await _offer(url, rate, seconds)
        backlog_at_offer_end = writer.backlog
        offer_end = time.monotonic()
        all_sent_at = all_stored_at = None
        counts = writer.stats
        while time.monotonic() - offer_end < DRAIN_LIMIT_S:
            if all_sent_at is None and stats.sent + stats.failed >= offered:
                all_sent_at = time.monotonic()
            if all_sent_at is not None and counts.stored + counts.replayed >= counts.recorded:
                all_stored_at = time.monotonic()
                break
            await asyncio.sleep(0.01)
        ended = time.monotonic()
        wall = ended - started
        cpu_app = (time.process_time() - cpu[0]) / wall
        cpu_dynalite = (_cpu_s(dynalite) - cpu[1]) / wall
        cpu_fake = (_cpu_s(fake) - cpu[2]) / wall
        busy = _busy_since(machine)
        sent_by = all_sent_at or ended
        in_order = list(writer.lags)
        one_second = rate * EVENTS_PER_MESSAGE
        return Step(
            rate=rate,
            offered=offered,
            offer_s=offer_s,
            sent=stats.sent,
            send_rate=stats.sent / max(sent_by - started, seconds),
            sent_after_s=None if all_sent_at is None else all_sent_at - offer_end,
            stored_after_s=None if all_stored_at is None else all_stored_at - offer_end,
            stored=counts.stored + counts.replayed,
            lags=sorted(in_order),
            early_p50=_median(in_order[:one_second]),
            late_p50=_median(in_order[-one_second:]),
            backlog_at_offer_end=backlog_at_offer_end,
            max_backlog=max_backlog,
            spooled=counts.spooled,
            store_failures=counts.store_failures,
            cpu_app=cpu_app,
            cpu_dynalite=cpu_dynalite,
            cpu_fake=cpu_fake,
            machine_busy=busy,
        )
    finally:
        if watcher is not None:
            watcher.cancel()
        await runner.cleanup()


# -- report --


def _print_write_table(writer_runs: list[WriteRun], plain_runs: list[WriteRun]) -> None:
    print(
        "| writer | events/s (median) | runs | CPU ms / 1000 events, this process "
        "| dynalite CPU, of one core | machine busy |"
    )
    print("|---|---|---|---|---|---|")
    for label, runs in (
        ("smsgw AuditWriter (DynamoDbStore, 8 calls in flight)", writer_runs),
        ("plain `batch_write_item` loop, one call at a time", plain_runs),
    ):
        rates = ", ".join(f"{r.events_per_s:.0f}" for r in runs)
        median = statistics.median(r.events_per_s for r in runs)
        cpu = statistics.median(r.cpu_ms_per_1000 for r in runs)
        dyn = statistics.median(r.dynalite_cpu_share for r in runs)
        busy = statistics.median(r.machine_busy for r in runs)
        print(f"| {label} | {median:.0f} | {rates} | {cpu:.0f} | {dyn:.0%} | {busy:.0%} |")
    ours = statistics.median(r.events_per_s for r in writer_runs)
    plain = statistics.median(r.events_per_s for r in plain_runs)
    print(f"\nRatio writer / plain loop (medians): **{ours / plain:.2f}**\n")


def _after(seconds: float | None) -> str:
    return f"> {DRAIN_LIMIT_S:.0f}" if seconds is None else f"{seconds:.1f}"


def _print_steps(steps: list[Step]) -> None:
    columns = [
        "offered msg/s",
        "sent",
        "send rate msg/s",
        "events stored",
        "last sent / stored, s after the offer",
        "audit lag p50 / p99 / max",
        "lag p50: first / last second",
        "writer backlog: end of offer / max",
        "spooled (failed writes)",
        "CPU of one core: smsgw / dynalite / fake",
        "machine busy",
        "sustained",
    ]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for s in steps:
        lag = f"{s.lag(0.5):.2f} / {s.lag(0.99):.2f} / {s.lags[-1]:.2f} s" if s.lags else "-"
        cpu = f"{s.cpu_app:.0%} / {s.cpu_dynalite:.0%} / {s.cpu_fake:.0%}"
        after = f"{_after(s.sent_after_s)} / {_after(s.stored_after_s)}"
        trend = f"{s.early_p50:.2f} / {s.late_p50:.2f} s"
        print(
            f"| {s.rate} | {s.sent} / {s.offered} | {s.send_rate:.0f} "
            f"| {s.stored} / {s.offered * EVENTS_PER_MESSAGE} | {after} | {lag} | {trend} "
            f"| {s.backlog_at_offer_end} / {s.max_backlog} | {s.spooled} ({s.store_failures}) "
            f"| {cpu} | {s.machine_busy:.0%} | {'yes' if s.sustained else 'no'} |"
        )
    sustained = [s for s in steps if s.sustained]
    if sustained:
        best = max(sustained, key=lambda s: s.rate)
        verdict = "met" if best.lag(0.99) < 2.0 else "not met"
        print(
            f"\nHighest sustained step: {best.rate} msg/s ({best.rate * EVENTS_PER_MESSAGE} "
            f"events/s); audit lag p99 {best.lag(0.99):.2f} s (goal < 2 s: {verdict})"
        )
    else:
        print("\nNo step was sustained.")


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="smsgw-audit-bench-") as tmp:
        directory = Path(tmp)
        (directory / "dynalite").mkdir()
        dynalite = DynaliteServer(directory / "dynalite")
        dynalite.start()
        fake = None
        try:
            dynalite_pid = _find_pid(str(directory / "dynalite" / "data"))
            events = _events(args.events)
            # Warm-up, not counted: first connections, botocore's lazily built models.
            warm = _audit_settings(dynalite.url, "warm-up", directory / "spool-warm-up")
            await _writer_run(warm, events[:2000], dynalite_pid)
            await _plain_run(warm, events[:2000], dynalite_pid)
            writer_runs: list[WriteRun] = []
            plain_runs: list[WriteRun] = []
            for n in range(args.rounds):
                spool = directory / f"spool-{n}"
                writer_runs.append(
                    await _writer_run(
                        _audit_settings(dynalite.url, f"writer-{n}", spool), events, dynalite_pid
                    )
                )
                plain_runs.append(
                    await _plain_run(
                        _audit_settings(dynalite.url, f"plain-{n}", spool), events, dynalite_pid
                    )
                )
                print(
                    f"round {n + 1}: writer {writer_runs[-1].events_per_s:.0f} events/s, "
                    f"plain loop {plain_runs[-1].events_per_s:.0f} events/s",
                    flush=True,
                )

            fake, port = start_process(
                ["python", "-m", "bench.fake_provider"], directory / "fake.port"
            )
            fake_url = f"http://127.0.0.1:{port}"
            wait_ready(f"{fake_url}/healthz")
            steps = []
            for rate in (int(r) for r in args.rates.split(",")):
                step = await _pipeline(
                    dynalite.url, dynalite_pid, fake_url, fake.pid, directory, rate, args.seconds
                )
                print(
                    f"{rate} msg/s: offered in {step.offer_s:.1f} s, sent {step.sent}/"
                    f"{step.offered}, lag p99 {step.lag(0.99) if step.lags else float('nan'):.2f}"
                    f" s, spooled {step.spooled}",
                    flush=True,
                )
                steps.append(step)

            print(f"\n{len(events)} events per run, {args.rounds} rounds, medians\n")
            _print_write_table(writer_runs, plain_runs)
            print(f"{args.seconds:.0f} s per offered rate\n")
            _print_steps(steps)
        finally:
            if fake is not None:
                stop_process(fake)
            dynalite.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--rates", default="500,750,1000,1500,2000", help="offered msg/s, one step each"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="offer time per step")
    args = parser.parse_args()
    configure_logging("error")
    uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
