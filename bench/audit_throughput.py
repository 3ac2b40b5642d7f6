"""Audit trail to DynamoDB (dynalite): the writer against a plain aiobotocore loop, and the
audit lag of the whole pipeline at several rates.

    .venv/bin/python -m bench.audit_throughput [--events 20000] [--rounds 2] [--rates 250,500,1000]

1. Write speed. N events of realistic messages (accepted with a body, queued, sending, sent)
   into a fresh table of a private dynalite, alternately by smsgw's AuditWriter (record() as
   fast as it takes them, then until all are stored) and by the loop a developer would write
   by hand (`batch_write_item` of 25 items, one call after the other, retrying
   UnprocessedItems). Same items, same server; medians of the rounds and their ratio.
2. Audit lag. The real app in-process (console provider to a file, memory queue, DynamoDB
   audit on the same dynalite) takes messages through `POST /v1/messages/batch` at each
   offered rate for 10 s; every stored event's lag (stored - event time) is recorded by
   timing the store's writes. Reported per rate: messages sent, events stored, lag p50/p99,
   and whether the writer had to spool (the store could not keep up).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiobotocore.session import get_session  # type: ignore[import-untyped]
from aiohttp.test_utils import TestServer

from smsgw.api.keys import AUDIT, DISPATCHER
from smsgw.app import create_app
from smsgw.audit import AuditEvent, AuditStore, AuditWriter, Spool
from smsgw.audit.dynamodb import DynamoDbStore, encode_item
from smsgw.settings import AuditSettings, parse_settings
from tests.services import DynaliteServer

BODY = "Your parcel 4417 arrives today between 10:00 and 12:00. Reply STOP to opt out."


def _events(count: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(message id, kind, details): four events per message, as the gateway records them."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    for n in range(count // 4):
        mid = f"msg_{n:032x}"
        out.append((mid, "accepted", {"client": "bench", "to": "+14155550100", "body": BODY}))
        out.append((mid, "queued", {}))
        out.append((mid, "sending", {"provider": "twilio", "attempt": 1}))
        out.append((mid, "sent", {"provider": "twilio", "provider_message_id": f"SM{n:032x}"}))
    return out


def _settings(url: str, table: str, spool: Path) -> AuditSettings:
    return AuditSettings(
        backend="dynamodb",
        endpoint_url=url,
        access_key_id="bench",
        secret_access_key="bench",
        table=table,
        spool_dir=str(spool),
    )


async def _writer_run(settings: AuditSettings, events: Sequence[tuple[str, str, Any]]) -> float:
    store = await DynamoDbStore.open(settings)
    await store.migrate()
    writer = AuditWriter(store, Spool.open(settings.spool_dir), settings, "bench")
    writer.start()
    started = time.monotonic()
    cpu = time.process_time()
    for message_id, kind, details in events:
        writer.record(message_id, kind, **details)  # type: ignore[arg-type]
        if writer.backlog >= settings.batch_size:
            await asyncio.sleep(0)  # let the flusher run, as a busy server's loop would
    while writer.stats.stored + writer.stats.spooled < len(events):
        await asyncio.sleep(0.005)
    elapsed = time.monotonic() - started
    cpu_per_1000 = (time.process_time() - cpu) / len(events) * 1000
    await writer.close()
    await store.close()
    if writer.stats.spooled:
        raise RuntimeError(f"the writer spooled {writer.stats.spooled} events")
    print(f"  writer: {len(events) / elapsed:.0f} events/s, CPU {cpu_per_1000 * 1000:.0f} ms/1000")
    return len(events) / elapsed


async def _plain_run(settings: AuditSettings, events: Sequence[tuple[str, str, Any]]) -> float:
    store = await DynamoDbStore.open(settings)
    await store.migrate()
    await store.close()
    items = []
    for index, (message_id, kind, details) in enumerate(events):
        event = AuditEvent(
            message_id=message_id,
            key=f"{1_800_000_000_000_000 + index:016d}:plain00000000",
            kind=kind,  # type: ignore[arg-type]
            at=time.time(),
            replica="bench",
            **details,
        )
        items.append({"PutRequest": {"Item": encode_item(event, 86400 * 400)}})
    async with get_session().create_client(
        "dynamodb",
        region_name=settings.region,
        endpoint_url=settings.endpoint_url,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    ) as client:
        started = time.monotonic()
        for start in range(0, len(items), 25):
            request = {settings.table: items[start : start + 25]}
            while request:
                answer = await client.batch_write_item(RequestItems=request)
                request = answer.get("UnprocessedItems") or {}
        elapsed = time.monotonic() - started
    print(f"  plain loop: {len(events) / elapsed:.0f} events/s")
    return len(events) / elapsed


class _TimedStore:
    """The real store, timing each write: lag = when stored - when the event happened."""

    def __init__(self, store: AuditStore, lags: list[float]) -> None:
        self._store = store
        self._lags = lags

    async def write(self, events: Sequence[AuditEvent]) -> None:
        await self._store.write(events)
        now = time.time()
        self._lags.extend(now - event.at for event in events)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def _pipeline(url: str, directory: Path, rate: int, seconds: float) -> dict[str, Any]:
    table = f"bench-lag-{rate}"
    audit = _settings(url, table, directory / f"spool-{rate}")
    store = await DynamoDbStore.open(audit)
    await store.migrate()
    await store.close()
    settings = parse_settings(
        {
            "otp": {"secret": "bench-secret-0123456789"},
            "audit": {
                "backend": "dynamodb",
                "endpoint_url": url,
                "access_key_id": "bench",
                "secret_access_key": "bench",
                "table": table,
                "spool_dir": str(directory / f"spool-{rate}"),
            },
            "queue": {"max_size": 200_000},
            "providers": [
                {"name": "console", "kind": "console", "path": str(directory / "sms.jsonl")}
            ],
        },
        env={},
    )
    app = create_app(settings)
    server = TestServer(app)
    await server.start_server()
    lags: list[float] = []
    writer: AuditWriter = app[AUDIT]
    writer.store = _TimedStore(writer.store, lags)
    per_batch = max(1, rate // 10)
    sent_before = app[DISPATCHER].stats.sent
    async with aiohttp.ClientSession() as http:
        started = time.monotonic()
        tick = 0
        while time.monotonic() - started < seconds:
            batch = [{"to": "+14155550100", "body": BODY} for _ in range(per_batch)]
            async with http.post(
                server.make_url("/v1/messages/batch"), json={"messages": batch}
            ) as response:
                if response.status != 202:
                    raise RuntimeError(f"HTTP {response.status}")
            tick += 1
            await asyncio.sleep(max(0.0, started + tick * 0.1 - time.monotonic()))
    offered = tick * per_batch
    deadline = time.monotonic() + 60
    while app[DISPATCHER].stats.sent - sent_before < offered or writer.backlog:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(2 * settings.audit.flush_interval_s)
    spooled = writer.stats.spooled
    await server.close()
    lags.sort()
    return {
        "rate": rate,
        "offered": offered,
        "sent": app[DISPATCHER].stats.sent,
        "stored": len(lags),
        "p50": lags[len(lags) // 2] if lags else float("nan"),
        "p99": lags[int(len(lags) * 0.99)] if lags else float("nan"),
        "spooled": spooled,
    }


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="smsgw-audit-bench-") as tmp:
        directory = Path(tmp)
        (directory / "dynalite").mkdir()
        dynalite = DynaliteServer(directory / "dynalite")
        dynalite.start()
        try:
            events = _events(args.events)
            writer_rates, plain_rates = [], []
            for round_ in range(args.rounds):
                print(f"round {round_ + 1}")
                spool = directory / f"spool-w{round_}"
                writer_rates.append(
                    await _writer_run(_settings(dynalite.url, f"bench-w{round_}", spool), events)
                )
                plain_rates.append(
                    await _plain_run(_settings(dynalite.url, f"bench-p{round_}", spool), events)
                )
            ours, plain = statistics.median(writer_rates), statistics.median(plain_rates)
            print(f"\n{len(events)} events per run, {args.rounds} rounds, medians")
            ours_runs = ", ".join(f"{r:.0f}" for r in writer_rates)
            plain_runs = ", ".join(f"{r:.0f}" for r in plain_rates)
            print("| writer | events/s (median) | runs |")
            print("|---|---|---|")
            print(f"| smsgw AuditWriter | {ours:.0f} | {ours_runs} |")
            print(f"| plain batch_write_item loop | {plain:.0f} | {plain_runs} |")
            print(f"\nratio writer / plain loop: {ours / plain:.2f}\n")

            rows = []
            for rate in (int(r) for r in args.rates.split(",")):
                rows.append(await _pipeline(dynalite.url, directory, rate, args.seconds))
            columns = ["offered msg/s", "messages offered", "sent", "events stored"]
            columns += ["audit lag p50", "p99", "spooled"]
            print("| " + " | ".join(columns) + " |")
            print("|" + "---|" * len(columns))
            for row in rows:
                print(
                    f"| {row['rate']} | {row['offered']} | {row['sent']} | {row['stored']} "
                    f"| {row['p50']:.3f} s | {row['p99']:.3f} s | {row['spooled']} |"
                )
        finally:
            dynalite.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rates", default="250,500,1000")
    parser.add_argument("--seconds", type=float, default=10.0)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
