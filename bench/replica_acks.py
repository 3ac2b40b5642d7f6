"""What waiting for a replica costs a 202: `POST /v1/messages/batch` and `POST /v1/otp` with
redis.min_replicas_ack 0 against 1, side by side, on one Sentinel-watched Redis.

    .venv/bin/python -m bench.replica_acks [--rounds 3] [--batches 300] [--otps 3000]

One `smsgw serve --role api` (it only accepts: messages stay in the Redis stream) on a Redis
primary with two replicas and three sentinels (testkit.services.SentinelSet), all on
loopback; the replica round trip of WAIT is a loopback one here (add your network's). The
two settings alternate round by round in fresh servers on the same Redis; medians reported.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from testkit.harness import Smsgw, smsgw_config
from testkit.services import SentinelSet

BATCH = 100


async def _timed(
    session: aiohttp.ClientSession, count: int, concurrency: int, request: Any
) -> tuple[float, list[float], int]:
    """(seconds, latencies in ms, non-202 answers) of `count` requests, `concurrency` open."""
    latencies: list[float] = []
    refused = 0
    next_index = 0

    async def worker() -> None:
        nonlocal next_index, refused
        while next_index < count:
            index = next_index
            next_index += 1
            started = time.perf_counter()
            status = await request(session, index)
            latencies.append((time.perf_counter() - started) * 1000)
            refused += status != 202

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, refused


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _round(
    directory: Path, sentinels: list[str], acks: int, args: argparse.Namespace, seq: int
) -> dict[str, dict[str, float]]:
    config = smsgw_config(
        [],
        server={"role": "api", "host": "127.0.0.1", "drain_timeout_s": 5.0},
        redis={"sentinels": sentinels, "min_replicas_ack": acks, "key_prefix": f"b{seq}:"},
        queue={"max_size": 10_000_000},
        # All numbers in +1 415 look like SMS pumping: floors this high never refuse a start.
        abuse={"prefix_floor": 10**9, "country_floor": 10**9, "daily_sends_per_number": 10**6},
        audit={"path": str(directory / f"audit-{seq}.sqlite3"), "spool_dir": str(directory)},
    )
    server = Smsgw(directory, f"smsgw-{seq}", config).start()
    results: dict[str, dict[str, float]] = {}
    try:
        async with aiohttp.ClientSession() as session:
            url = server.url

            async def batch(session: aiohttp.ClientSession, index: int) -> int:
                messages = [
                    {"to": f"+1415555{(index * BATCH + n) % 10000:04d}", "body": f"b {index} {n}"}
                    for n in range(BATCH)
                ]
                async with session.post(
                    f"{url}/v1/messages/batch", json={"messages": messages}
                ) as r:
                    await r.read()
                    return r.status

            numbers = itertools.count(2_000_000 + seq * 100_000)  # a new number each start

            async def otp(session: aiohttp.ClientSession, index: int) -> int:
                phone = f"+1415{next(numbers)}"
                async with session.post(f"{url}/v1/otp", json={"phone": phone}) as r:
                    await r.read()
                    return r.status

            await _timed(session, 20, 4, batch)  # warm-up
            for name, count, concurrency, request, per in (
                ("batch", args.batches, 4, batch, BATCH),
                ("otp", args.otps, 32, otp, 1),
                # One at a time: the latency WAIT adds, without queueing behind others.
                ("otp-serial", args.otps // 10, 1, otp, 1),
            ):
                seconds, latencies, refused = await _timed(session, count, concurrency, request)
                results[name] = {
                    "req_s": count / seconds,
                    "msg_s": count * per / seconds,
                    "p50_ms": _p(latencies, 0.5),
                    "p99_ms": _p(latencies, 0.99),
                    "refused": refused,
                }
    finally:
        server.stop()
    return results


async def main_async(args: argparse.Namespace) -> None:
    directory = Path(tempfile.mkdtemp(prefix="smsgw-acks-"))
    redis_set = SentinelSet(directory / "redis", replicas=2)
    await asyncio.to_thread(redis_set.start)
    runs: dict[int, list[dict[str, dict[str, float]]]] = {0: [], 1: []}
    try:
        seq = 0
        for _ in range(args.rounds):
            for acks in (0, 1):
                seq += 1
                runs[acks].append(await _round(directory, redis_set.sentinels, acks, args, seq))
    finally:
        redis_set.stop()
    print("| endpoint | min_replicas_ack | req/s | messages/s | p50 ms | p99 ms | not 202 |")
    print("|---|---|---|---|---|---|---|")
    for name in ("batch", "otp", "otp-serial"):
        for acks in (0, 1):
            med = {
                key: statistics.median(run[name][key] for run in runs[acks])
                for key in ("req_s", "msg_s", "p50_ms", "p99_ms", "refused")
            }
            print(
                f"| {name} | {acks} | {med['req_s']:,.0f} | {med['msg_s']:,.0f} "
                f"| {med['p50_ms']:.2f} | {med['p99_ms']:.2f} | {med['refused']:.0f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.replica_acks", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--otps", type=int, default=3000)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
