"""How fast `smsgw supervise` goes from min to max workers under a backlog, and back.

    .venv/bin/python -m bench.supervise_scaling [--messages 20000] [--max 3]
        [--latency-ms 100] [--concurrency 48] [--interval 0.5]
        [--up-cooldown 2] [--down-cooldown 10] [--timeout 240]

Loopback only: a private redis-server, the fake Twilio server (`bench.fake_provider`) with
`--latency-ms` per send, and `smsgw supervise --min 1 --max N` running `smsgw serve --role
worker` processes (dispatch.concurrency sends in flight each, so one worker sends about
concurrency / latency per second and more workers really drain faster). Once one worker runs
idle, the backlog is put straight into the Redis queue and the timeline is sampled every
0.1 s: workers the supervisor runs (its /metrics), workers beating in Redis (up and
dispatching), the backlog and the provider's arrivals per second.

Reported: time from the backlog to the decision for max and to max workers beating; time to
drain; time from the empty queue to min again (the down cooldown, then a worker's drain); and
the time SIGTERM takes to stop the supervisor with its workers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from bench.loadgen import start_process, stop_process
from bench.queue_throughput import private_redis
from smsgw.queue.message import Message
from smsgw.queue.redis import RedisQueue
from smsgw.queue.sealing import QueueCipher
from smsgw.redis_keys import RedisKeys
from smsgw.replicas import BEAT_TTL_S, beats
from smsgw.settings import QueueSettings
from testkit.fake_provider import twilio_provider_toml
from testkit.services import free_port

KEYS = RedisKeys()
OTP_SECRET = "bench-secret-0123456789"
SAMPLE_S = 0.1


@dataclass(slots=True)
class Sample:
    at: float  # seconds since the backlog was put
    supervised: int
    desired: int  # what the policy asks for, before cooldowns
    beating: int
    backlog: int
    sent: int


def _config(directory: Path, redis_url: str, fake_url: str, args: argparse.Namespace) -> Path:
    path = directory / "smsgw.toml"
    path.write_text(
        f"""
[server]
host = "127.0.0.1"
drain_timeout_s = 10
[redis]
url = "{redis_url}"
[otp]
secret = "{OTP_SECRET}"
[audit]
path = "{directory}/audit.sqlite3"
spool_dir = "{directory}/audit-spool"
[queue]
max_size = 200000
visibility_timeout_s = 5
[dispatch]
concurrency = {args.concurrency}
[scaling]
up_cooldown_s = {args.up_cooldown}
down_cooldown_s = {args.down_cooldown}
{twilio_provider_toml(fake_url)}
"""
    )
    return path


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2.0) as response:
        text: str = response.read().decode()
        return text


def _gauge(text: str, name: str) -> int:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return int(float(match.group(1))) if match else -1


async def _enqueue(client: Redis, count: int) -> None:
    # Sealed as the workers expect: under the key derived from the config's otp.secret.
    cipher = QueueCipher(OTP_SECRET)
    queue = RedisQueue(
        client, KEYS, QueueSettings(max_size=200_000), "bench-producer", cipher=cipher
    )
    for start in range(0, count, 1000):
        await queue.put_many(
            [
                Message(to=f"+1415{2000000 + i}", country="US", body=f"m {i}", client="bench")
                for i in range(start, min(start + 1000, count))
            ]
        )


async def _beating(client: Redis) -> int:
    roll = await beats(client, KEYS, "worker")
    seconds, micros = await client.time()
    now = seconds + micros / 1e6
    return sum(1 for last in roll.values() if now - last <= BEAT_TTL_S)


async def _sample(client: Redis, metrics_url: str, fake_url: str, t0: float) -> Sample:
    text, stats = await asyncio.gather(
        asyncio.to_thread(_get, metrics_url),
        asyncio.to_thread(_get, f"{fake_url}/_stats?summary=1"),
    )
    backlog = sum([await client.xlen(KEYS.stream(p)) for p in ("high", "normal")])
    sent = int(re.search(r'"count":\s*(\d+)', stats).group(1))  # type: ignore[union-attr]
    supervised = _gauge(text, "smsgw_supervised_workers")
    desired = _gauge(text, "smsgw_desired_workers")
    beating = await _beating(client)
    return Sample(time.monotonic() - t0, supervised, desired, beating, backlog, sent)


async def _run(args: argparse.Namespace, directory: Path, redis_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}
    fake, fake_port = start_process(
        ["python", "-m", "bench.fake_provider", "--latency-ms", str(args.latency_ms)],
        directory / "fake.port",
    )
    fake_url = f"http://127.0.0.1:{fake_port}"
    config = _config(directory, redis_url, fake_url, args)
    metrics_port = free_port()
    log = (directory / "supervise.log").open("ab")
    argv = [sys.executable, "-m", "smsgw", "supervise", "--config", str(config)]
    argv += ["--min", "1", "--max", str(args.max), "--interval", str(args.interval)]
    argv += ["--metrics-port", str(metrics_port)]
    supervisor = subprocess.Popen(argv, cwd=directory, env=env, stdout=log, stderr=log)
    client = Redis.from_url(redis_url)
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    deadline = time.monotonic() + args.timeout
    try:
        while True:  # steady at min: one worker up and beating
            with contextlib.suppress(OSError):
                supervised = _gauge(_get(metrics_url), "smsgw_supervised_workers")
                if supervised == 1 and await _beating(client) == 1:
                    break
            if supervisor.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("supervise did not start: see " + str(log.name))
            await asyncio.sleep(SAMPLE_S)
        t0 = time.monotonic()
        await _enqueue(client, args.messages)
        put_s = time.monotonic() - t0
        samples = await _timeline(client, metrics_url, fake_url, t0, args.max, deadline)
        stop_at = time.monotonic()
        code = stop_process(supervisor, timeout=60)
        stop_s = time.monotonic() - stop_at
    finally:
        stop_process(supervisor, timeout=60)
        stop_process(fake)
        await client.aclose()
        log.close()
    _report(args, samples, put_s, stop_s, code)


async def _timeline(
    client: Redis, metrics_url: str, fake_url: str, t0: float, top: int, deadline: float
) -> list[Sample]:
    samples: list[Sample] = []
    emptied = False
    while time.monotonic() < deadline:
        sample = await _sample(client, metrics_url, fake_url, t0)
        samples.append(sample)
        emptied = emptied or (sample.backlog == 0 and any(s.beating == top for s in samples))
        if emptied and sample.supervised == 1 and sample.beating == 1:
            return samples
        await asyncio.sleep(max(0.0, t0 + len(samples) * SAMPLE_S - time.monotonic()))
    raise TimeoutError("the fleet did not go back to min within --timeout")


def _first(samples: list[Sample], after: float, test: Callable[[Sample], bool]) -> float:
    return next((s.at for s in samples if s.at >= after and test(s)), float("nan"))


def _report(
    args: argparse.Namespace, samples: list[Sample], put_s: float, stop_s: float, code: int
) -> None:
    top = args.max
    decided = _first(samples, 0, lambda s: s.supervised == top)
    ready = _first(samples, 0, lambda s: s.beating == top)
    empty = _first(samples, ready, lambda s: s.backlog == 0)
    fewer = _first(samples, ready, lambda s: 0 < s.desired < top)
    down = _first(samples, ready, lambda s: s.supervised < top)
    back = _first(samples, empty, lambda s: s.supervised == 1 and s.beating == 1)
    print(
        f"backlog {args.messages} msgs, provider {args.latency_ms:g} ms, concurrency "
        f"{args.concurrency}/worker, --min 1 --max {top} --interval {args.interval:g}, "
        f"up_cooldown {args.up_cooldown:g} s, down_cooldown {args.down_cooldown:g} s"
    )
    print(f"put the backlog: {put_s:.2f} s (t=0 is its start)")
    print("timeline (every change of the counts, and every 2 s):")
    print("     t s  desired  supervised  beating  backlog  sent/s (last 1 s)")
    previous: tuple[int, int, int] | None = None
    shown = -math.inf
    for index, s in enumerate(samples):
        counts = (s.desired, s.supervised, s.beating)
        last = index == len(samples) - 1
        if counts == previous and s.at - shown < 2.0 and not last:
            continue
        previous, shown = counts, s.at
        before = samples[max(0, index - 10)]
        rate = (s.sent - before.sent) / max(s.at - before.at, 1e-9)
        print(
            f"  {s.at:6.1f}  {s.desired:7d}  {s.supervised:10d}  {s.beating:7d}  "
            f"{s.backlog:7d}  {rate:6.0f}"
        )
    print(f"min -> max decided:        {decided:6.1f} s")
    print(f"min -> max workers beating: {ready:5.1f} s")
    print(f"backlog drained at:        {empty:6.1f} s")
    print(f"fewer than max wanted at:  {fewer:6.1f} s (the down cooldown starts)")
    print(f"first scale down at:       {down:6.1f} s ({down - fewer:.1f} s later)")
    print(f"empty -> one worker left:  {back - empty:6.1f} s")
    print(f"min -> max -> min total:   {back:6.1f} s")
    print(f"SIGTERM -> supervisor exit: {stop_s:5.2f} s (exit code {code})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--max", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--concurrency", type=int, default=48)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--up-cooldown", type=float, default=2.0)
    parser.add_argument("--down-cooldown", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=240.0, help="bound on the whole run")
    args = parser.parse_args()
    with private_redis() as redis_url, tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_run(args, Path(tmp), redis_url))


if __name__ == "__main__":
    main()
