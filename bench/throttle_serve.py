"""5000 SMS/s across 3 real `smsgw serve` replicas sharing one Redis.

    .venv/bin/python -m bench.throttle_serve [--messages 60000] [--replicas 3] [--rate 5000]

Everything runs as separate processes on loopback: a private redis-server, the fake Twilio
server (`bench.fake_provider`), and N replicas of `smsgw serve` configured with the Redis
queue, the Redis limiter and one Twilio provider pointed at the fake with `rate`. The
messages are offered through `POST /v1/messages/batch` (1000 per call, spread over the
replicas, as fast as they are accepted: far faster than the rate). Each body carries the
CLOCK_MONOTONIC time it was offered, so queue wait = arrival at the fake - offered.

Reported: most arrivals at the fake in any sliding 1 s window and how many windows (one
starting at each arrival) exceed the rate; the sustained rate between the first and last
arrival as a share of the rate; Redis commands per SMS (INFO commandstats delta over the
run); p50/p99 queue wait. A PNG of arrivals per 100 ms goes to bench/throttle_serve.png
(bench/throttle_serve_N.png for another number of replicas).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import redis

from testkit.fake_provider import (
    fetch_stats,
    max_in_sliding_window,
    twilio_provider_toml,
    wait_taken,
)
from testkit.processes import process_cpu_s, start_process, start_replicas, stop_process, wait_ready
from testkit.services import RedisServer

BATCH = 1000


# The default run's chart is bench/throttle_serve.png; other replica counts get their own file.
def _chart_path(replicas: int) -> Path:
    suffix = "" if replicas == 3 else f"_{replicas}"
    return Path(__file__).with_name(f"throttle_serve{suffix}.png")


def _config(directory: Path, redis_url: str, fake_url: str, rate: float, limiter: str) -> Path:
    path = directory / "smsgw.toml"
    path.write_text(
        f"""
[server]
drain_timeout_s = 5
[audit]
path = "{directory}/audit.sqlite3"
spool_dir = "{directory}/audit-spool"
[otp]
secret = "bench-secret-0123456789"
[redis]
url = "{redis_url}"
[queue]
max_size = 200000
[limiter]
backend = "{limiter}"
[dispatch]
concurrency = 128
{twilio_provider_toml(fake_url, rate=rate)}
"""
    )
    return path


async def _offer(urls: list[str], messages: int) -> float:
    """POST all messages in batches, round-robin over the replicas; return seconds taken."""
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:

        async def post(index: int) -> None:
            first = index * BATCH
            batch = [
                {"to": f"+1415{2000000 + n}", "body": f"b{n} t{time.monotonic():.6f}"}
                for n in range(first, min(first + BATCH, messages))
            ]
            url = f"{urls[index % len(urls)]}/v1/messages/batch"
            async with session.post(url, json={"messages": batch}) as response:
                if response.status != 202:
                    raise RuntimeError(f"batch {index}: HTTP {response.status}")

        batches = (messages + BATCH - 1) // BATCH
        await asyncio.gather(*(post(i) for i in range(batches)))
    return time.monotonic() - started


def _busiest_window_start(times: list[float]) -> float:
    """Seconds after the first arrival at which the busiest sliding second starts."""
    best, best_start, j = 0, 0.0, 0
    for i, start in enumerate(times):
        j = max(j, i)
        while j < len(times) and times[j] < start + 1.0:
            j += 1
        if j - i > best:
            best, best_start = j - i, start - times[0]
    return best_start


def _windows_over(times: list[float], limit: int) -> int:
    over, j = 0, 0
    for i, start in enumerate(times):
        j = max(j, i)
        while j < len(times) and times[j] < start + 1.0:
            j += 1
        over += j - i > limit
    return over


def _chart(times: list[float], rate: float, replicas: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = times[0]
    buckets = [0] * (int((times[-1] - start) / 0.1) + 1)
    for at in times:
        buckets[int((at - start) / 0.1)] += 1
    figure, axis = plt.subplots(figsize=(10, 4))
    axis.plot([i * 0.1 for i in range(len(buckets))], buckets, label="arrivals per 100 ms")
    axis.axhline(rate / 10, color="red", linestyle="--", label=f"limit ({rate:.0f}/s)")
    axis.set_xlabel("seconds since first arrival")
    axis.set_ylabel("SMS per 100 ms")
    replicas_named = (
        "1 smsgw serve replica" if replicas == 1 else f"{replicas} smsgw serve replicas"
    )
    axis.set_title(f"{replicas_named}, one Redis, one provider")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def _redis_cpu_s(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument(
        "--limiter", choices=["redis", "memory"], default="redis",
        help="memory: each replica paces alone (only right for one replica; a control run)",
    )  # fmt: skip
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        redis_server = RedisServer(directory)
        redis_server.start()
        processes = []
        try:
            fake, fake_port = start_process(
                ["python", "-m", "bench.fake_provider"], directory / "fake.port"
            )
            processes.append(fake)
            fake_url = f"http://127.0.0.1:{fake_port}"
            wait_ready(f"{fake_url}/healthz")
            config = _config(directory, redis_server.url, fake_url, args.rate, args.limiter)
            urls = start_replicas(config, directory, args.replicas, processes)
            client = redis.Redis.from_url(redis_server.url)
            client.config_resetstat()
            replicas = processes[-args.replicas :]
            cpu0 = sum(process_cpu_s(p.pid) for p in replicas)
            redis_cpu0 = _redis_cpu_s(client)
            offered_s = asyncio.run(_offer(urls, args.messages))
            wait_taken(fake_url, args.messages, args.timeout, poll_s=1.0)
            replicas_cpu = sum(process_cpu_s(p.pid) for p in replicas) - cpu0
            redis_cpu = _redis_cpu_s(client) - redis_cpu0
            commands = client.info("commandstats")
            traffic = client.info("stats")
            client.close()
            stats = fetch_stats(fake_url)
        finally:
            for process in reversed(processes):
                stop_process(process, timeout=15)
            redis_server.stop()

    accepted = stats["accepted"]
    assert isinstance(accepted, list)
    times = sorted(float(a["at"]) for a in accepted)
    waits = sorted(float(a["at"]) - float(a["body"].rsplit(" t", 1)[1]) for a in accepted)
    calls = {name.removeprefix("cmdstat_"): v["calls"] for name, v in commands.items()}
    total_calls = sum(calls.values())
    duration = times[-1] - times[0]
    limit = int(args.rate)
    print(f"offered {args.messages} in {offered_s:.2f} s", file=sys.stderr)
    print("| metric | value |")
    print("|---|---|")
    print(f"| replicas | {args.replicas} |")
    print(f"| messages sent (201 at the fake) | {len(accepted)} / {args.messages} |")
    print(
        f"| most arrivals in any sliding 1 s | {max_in_sliding_window(times)} (limit {limit}), "
        f"starting {_busiest_window_start(times):.2f} s after the first |"
    )
    print(f"| sliding windows over the limit | {_windows_over(times, limit)} |")
    print(f"| sustained rate, first to last arrival | {len(times) / duration:.0f}/s "
          f"= {len(times) / duration / args.rate:.1%} of {limit} |")  # fmt: skip
    print(f"| Redis commands per SMS | {total_calls / len(accepted):.4f} |")
    bytes_in = int(traffic["total_net_input_bytes"]) / len(accepted)
    bytes_out = int(traffic["total_net_output_bytes"]) / len(accepted)
    print(f"| Redis bytes per SMS (to Redis / from Redis) | {bytes_in:.0f} / {bytes_out:.0f} |")
    print(f"| replicas' CPU per SMS (all replicas, user + system) | "
          f"{replicas_cpu / len(accepted) * 1e6:.1f} µs |")  # fmt: skip
    print(f"| Redis server CPU per SMS | {redis_cpu / len(accepted) * 1e6:.1f} µs |")
    top = sorted(calls.items(), key=lambda item: -item[1])[:6]
    print(f"| busiest Redis commands | {', '.join(f'{n} {c}' for n, c in top)} |")
    print(f"| queue wait p50 / p99 | {statistics.median(waits):.2f} s / "
          f"{waits[int(len(waits) * 0.99)]:.2f} s |")  # fmt: skip
    chart = _chart_path(args.replicas)
    _chart(times, args.rate, args.replicas, chart)
    print(f"\nchart: {chart}")


if __name__ == "__main__":
    main()
