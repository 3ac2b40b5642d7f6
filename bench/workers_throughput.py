"""Sustained SMS/s of `smsgw serve --workers 1` against `--workers 2` on this machine.

    .venv/bin/python -m bench.workers_throughput [--messages 40000] [--rounds 2]

Separate processes on loopback: the fake Twilio server (`bench.fake_provider`) and
`smsgw serve --workers N` (memory queue, memory limiter with no rate on the provider, the
SQLite audit on: the whole embedded pipeline, except the OTP state, which --workers needs in
a shared Redis: a private redis-server, which this benchmark's messages do not touch). The
messages are offered through `POST /v1/messages/batch` (1000 per call, 8 calls in flight,
each on a new connection so the kernel spreads them over the processes), and the time runs
from the first offer to the last message's arrival at the fake. N = 1 and N = 2 alternate
for `--rounds` rounds; the medians and their ratio are reported. The fake provider and the
load generator share the same two cores, so the ratio is what one host gets out of a second
process here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

from bench.loadgen import start_process, stop_process, wait_ready
from bench.queue_throughput import private_redis
from testkit.fake_provider import twilio_provider_toml
from testkit.services import free_port

BATCH = 1000
IN_FLIGHT = 8


def _config(directory: Path, fake_url: str, redis_url: str) -> Path:
    path = directory / "smsgw.toml"
    # OTP state in Redis, as --workers requires; the queue and the limiter in each process.
    path.write_text(
        f"""
[server]
drain_timeout_s = 10
[redis]
url = "{redis_url}"
[limiter]
backend = "memory"
[audit]
path = "{directory}/audit.sqlite3"
spool_dir = "{directory}/audit-spool"
[otp]
secret = "bench-secret-0123456789"
[queue]
backend = "memory"
max_size = 200000
[dispatch]
concurrency = 128
{twilio_provider_toml(fake_url)}
"""
    )
    return path


def _cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _arrived(fake_url: str) -> int:
    with urllib.request.urlopen(f"{fake_url}/_stats?summary=1", timeout=60) as response:
        stats = json.load(response)
    return int(stats["by_status"].get("201", 0))


async def _offer(base: str, messages: int) -> None:
    batches = asyncio.Queue[int]()
    for index in range((messages + BATCH - 1) // BATCH):
        batches.put_nowait(index)

    async def poster() -> None:
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            while not batches.empty():
                index = batches.get_nowait()
                first = index * BATCH
                batch = [
                    {"to": f"+1415{2000000 + n}", "body": f"b{n}"}
                    for n in range(first, min(first + BATCH, messages))
                ]
                async with session.post(
                    f"{base}/v1/messages/batch", json={"messages": batch}
                ) as response:
                    if response.status != 202:
                        raise RuntimeError(f"batch {index}: HTTP {response.status}")

    await asyncio.gather(*(poster() for _ in range(IN_FLIGHT)))


def _run(workers: int, messages: int, redis_url: str) -> tuple[float, float]:
    """(SMS/s, share of the machine's CPU busy during the run)."""
    with tempfile.TemporaryDirectory(prefix="smsgw-workers-") as tmp:
        directory = Path(tmp)
        fake, fake_port = start_process(
            ["python", "-m", "bench.fake_provider"], directory / "fake.port"
        )
        gateway = None
        try:
            fake_url = f"http://127.0.0.1:{fake_port}"
            wait_ready(f"{fake_url}/healthz")
            port = free_port()
            config = _config(directory, fake_url, redis_url)
            argv = ["python", "-m", "smsgw", "serve", "--config", str(config)]
            argv += ["--log-level", "warning", "--workers", str(workers)]
            # A fixed port: the worker processes share it.
            gateway, _ = start_process(argv, directory / "gw.port", port=port)
            base = f"http://127.0.0.1:{port}"
            wait_ready(f"{base}/readyz")
            started = time.monotonic()
            busy_before, total_before = _cpu_times()
            asyncio.run(_offer(base, messages))
            deadline = time.monotonic() + 300
            while _arrived(fake_url) < messages:
                if time.monotonic() > deadline:
                    raise RuntimeError("not every message arrived")
                time.sleep(0.05)
            busy, total = _cpu_times()
            share = (busy - busy_before) / max(total - total_before, 1.0)
            return messages / (time.monotonic() - started), share
        finally:
            if gateway is not None:
                stop_process(gateway, timeout=30)
            stop_process(fake)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    results: dict[int, list[float]] = {1: [], 2: []}
    busy: dict[int, list[float]] = {1: [], 2: []}
    with private_redis() as redis_url:
        for _ in range(args.rounds):
            for workers in (1, 2):
                rate, share = _run(workers, args.messages, redis_url)
                results[workers].append(rate)
                busy[workers].append(share)
                print(f"--workers {workers}: {rate:.0f} SMS/s, machine CPU busy {share:.0%}")
    one, two = statistics.median(results[1]), statistics.median(results[2])
    print(f"\n{args.messages} messages, {args.rounds} rounds, medians")
    print("| processes | SMS/s (median) | runs | machine CPU busy (median) |")
    print("|---|---|---|---|")
    for workers, median in ((1, one), (2, two)):
        runs = ", ".join(f"{r:.0f}" for r in results[workers])
        cpu = statistics.median(busy[workers])
        print(f"| --workers {workers} | {median:.0f} | {runs} | {cpu:.0%} |")
    print(f"\nratio workers 2 / workers 1: {two / one:.2f}")


if __name__ == "__main__":
    main()
