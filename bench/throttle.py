"""One provider limit shared by 3 replicas: our RedisLimiter against two Redis libraries.

    .venv/bin/python -m bench.throttle [--messages 60000] [--replicas 3] [--rate 5000]
        [--limiters redis,fixed-window,moving-window] [--chart bench/throttle.png]
        [--lease-size N] [--lookahead-ms MS] [--pace P] [--max-run-s 40]

Benchmark-only packages: `.venv/bin/pip install matplotlib limits`. Plain `limits`: its
async Redis storage runs on the redis-py we have (its `async-redis` extra would add coredis,
which pins packaging<26). asyncio-redis-rate-limit is already a dependency of smsgw.

Runs as separate processes on loopback: a private redis-server, the fake Twilio server
(`bench.fake_provider`) as the one provider with `rate`, and for each limiter in turn N
replica processes. Each replica runs the real dispatcher on uvloop (MemoryQueue filled with
messages / N before the clock starts, TwilioProvider pointed at the fake, concurrency 128)
with the limiter under test; the replicas start together behind a barrier and stop when
their queue is empty (or after --max-run-s). Limiters:

- redis: smsgw.limiter.RedisLimiter with the default LimiterSettings;
- fixed-window: asyncio-redis-rate-limit `RateLimiter` + `RateSpec(rate, 1)`;
- moving-window: the `limits` package's moving window on its async Redis storage;
  the last two retry 10 ms after a refusal (bench/limiter_adapters.py);
- memory-split (a control, only when named): each replica paces alone at rate / N with
  smsgw's MemoryLimiter, no Redis: what a perfect split would do on this machine.

Reported per limiter:
- from the fake's arrival stamps (CLOCK_MONOTONIC, system-wide): the most arrivals in any
  sliding 1 s window, how many windows (one starting at each arrival) hold more than the
  rate, and the sustained rate from the first to the last arrival as a share of the rate;
- the most send starts in any sliding 1 s, noted in the replicas on the same clock: the
  limiter's own output, before loopback and the fake's scheduling add their jitter;
- Redis commands per SMS (INFO commandstats delta; commands run inside scripts and inside
  MULTI/EXEC count) and round trips per SMS (EVALSHA, EVAL and EXEC calls);
- p99 queue wait: per message, from the moment the replicas start (every message is
  queued by then) to the start of its successful send;
- slots the dispatcher dropped as late, and CPU seconds used by the replicas, the fake
  and redis-server (a 2-core machine runs all of them: lag hurts every limiter).
A PNG of arrivals per 100 ms against the limit line goes to --chart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import uvloop
from redis.asyncio import Redis

from bench.limiter_adapters import FixedWindowLimiter, MovingWindowLimiter
from bench.loadgen import start_process, stop_process, wait_ready
from bench.no_audit import NoAudit
from smsgw.dispatch import Dispatcher, Route, Router
from smsgw.limiter import MemoryLimiter, ProviderLimiter, RedisLimiter
from smsgw.log import configure_logging
from smsgw.providers import OutgoingSms, SendReceipt, TwilioProvider
from smsgw.queue import MemoryQueue, Message
from smsgw.redis_keys import RedisKeys
from smsgw.settings import DispatchSettings, LimiterSettings, TwilioProviderSettings
from testkit.fake_provider import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, max_in_sliding_window
from testkit.services import RedisServer

LIMITERS = ("redis", "fixed-window", "moving-window")
# A control, not run by default: each replica paces alone at rate / replicas, no Redis.
CONTROLS = ("memory-split",)
PROVIDER = "twilio"
CHART = Path(__file__).with_name("throttle.png")
_ROUND_TRIPS = ("evalsha", "eval", "exec")
# Commands of this script itself, not of the limiters.
_OURS = ("info", "config|resetstat", "flushall", "script|flush", "ping")


@dataclass(frozen=True)
class Fake:
    process: subprocess.Popen[bytes]
    url: str


@dataclass(frozen=True)
class ReplicaSpec:
    limiter: str
    index: int
    messages: int
    rate: float
    redis_url: str
    fake_url: str
    concurrency: int
    max_run_s: float
    replicas: int
    limiter_settings: LimiterSettings


@dataclass
class ReplicaResult:
    started: float
    send_starts: list[float]  # per message, its last (successful) attempt
    stats: dict[str, int]
    counters: dict[str, int]
    finished: bool
    cpu_s: float  # this replica's user + system CPU over the run


class _TimedTwilio(TwilioProvider):
    """TwilioProvider that notes when each message's send starts."""

    def __init__(self, settings: TwilioProviderSettings) -> None:
        super().__init__(settings)
        self.send_starts: dict[str, float] = {}

    async def send(self, sms: OutgoingSms) -> SendReceipt:
        self.send_starts[sms.message_id] = time.monotonic()
        return await super().send(sms)


def _make_limiter(spec: ReplicaSpec, client: Redis) -> ProviderLimiter:
    rates: dict[str, float | None] = {PROVIDER: spec.rate}
    if spec.limiter == "memory-split":
        pace = spec.limiter_settings.pace
        return MemoryLimiter({PROVIDER: spec.rate / spec.replicas}, pace=pace)
    if spec.limiter == "redis":
        return RedisLimiter(client, rates, RedisKeys("bench:"), spec.limiter_settings)
    if spec.limiter == "fixed-window":
        return FixedWindowLimiter(client, rates)
    return MovingWindowLimiter(spec.redis_url, rates, max_connections=2 * spec.concurrency)


async def _run_replica(spec: ReplicaSpec, start: Any) -> ReplicaResult:
    provider = _TimedTwilio(
        TwilioProviderSettings(
            name=PROVIDER,
            account_sid=DEFAULT_ACCOUNT_SID,
            auth_token=DEFAULT_AUTH_TOKEN,
            from_="+15005550006",
            base_url=spec.fake_url,
            rate=spec.rate,
        )
    )
    await provider.start()
    queue = MemoryQueue(max_size=spec.messages)
    first = spec.index * spec.messages
    await queue.put_many(
        [
            Message(to=f"+1415{2000000 + n}", country="US", body=f"bench {n}", client="bench")
            for n in range(first, first + spec.messages)
        ]
    )
    # Room for every worker's call at once: the other libraries make one call per permit.
    client = Redis.from_url(spec.redis_url, max_connections=2 * spec.concurrency)
    limiter = _make_limiter(spec, client)
    dispatcher = Dispatcher(
        queue,
        Router([Route(provider, 1.0, frozenset())]),
        limiter,
        DispatchSettings(concurrency=spec.concurrency),
        NoAudit(),
    )
    await asyncio.get_running_loop().run_in_executor(None, start.wait)
    started = time.monotonic()
    cpu_before = time.process_time()
    dispatcher.start()
    try:
        await asyncio.wait_for(queue.wait_empty(), spec.max_run_s)
        finished = True
    except TimeoutError:
        finished = False
    cpu_s = time.process_time() - cpu_before
    await dispatcher.stop()
    await limiter.close()
    await provider.close()
    await client.aclose()
    counters = dict(limiter.stats)
    return ReplicaResult(
        started,
        list(provider.send_starts.values()),
        dispatcher.stats.as_dict(),
        counters,
        finished,
        cpu_s,
    )


def _replica(spec: ReplicaSpec, start: Any, out: Any) -> None:
    configure_logging("warning")
    out.put(uvloop.run(_run_replica(spec, start)))


# -- one run per limiter ----------------------------------------------------------------


@dataclass
class RunResult:
    limiter: str
    arrivals: list[float]
    replicas: list[ReplicaResult]
    commands: dict[str, int]
    started: float
    fake_cpu_s: float
    redis_cpu_s: float
    sent: int = field(init=False)

    def __post_init__(self) -> None:
        self.sent = sum(r.stats["sent"] for r in self.replicas)


def _post(url: str, method: str = "GET") -> Any:
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=60) as response:
        body = response.read()
    return json.loads(body) if body else None


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a child process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _redis_cpu_s(admin: redis.Redis) -> float:
    cpu = admin.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def _limiter_settings(args: argparse.Namespace) -> LimiterSettings:
    """The defaults, unless --lease-size / --lookahead-ms / --pace say otherwise."""
    changes: dict[str, Any] = {}
    if args.lease_size is not None:
        changes["lease_size"] = args.lease_size
    if args.lookahead_ms is not None:
        changes["lookahead_s"] = args.lookahead_ms / 1000
    if args.pace is not None:
        changes["pace"] = args.pace
    return LimiterSettings(**changes)


def _run(name: str, args: argparse.Namespace, redis_url: str, fake: Fake) -> RunResult:
    fake_url = fake.url
    admin = redis.Redis.from_url(redis_url)
    admin.flushall()
    admin.script_flush()
    admin.config_resetstat()
    _post(f"{fake_url}/_reset", "POST")

    context = multiprocessing.get_context("spawn")
    start = context.Barrier(args.replicas + 1)
    out: Any = context.Queue()
    per_replica = args.messages // args.replicas
    specs = [
        ReplicaSpec(
            name,
            i,
            per_replica,
            args.rate,
            redis_url,
            fake_url,
            args.concurrency,
            args.max_run_s,
            args.replicas,
            _limiter_settings(args),
        )
        for i in range(args.replicas)
    ]
    processes = [
        context.Process(target=_replica, args=(spec, start, out), daemon=True) for spec in specs
    ]
    for process in processes:
        process.start()
    fake_cpu, redis_cpu = _process_cpu_s(fake.process.pid), _redis_cpu_s(admin)
    try:
        start.wait(timeout=60)
        started = time.monotonic()
        results = [out.get(timeout=args.max_run_s + 60) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    fake_cpu = _process_cpu_s(fake.process.pid) - fake_cpu
    redis_cpu = _redis_cpu_s(admin) - redis_cpu
    stats = admin.info("commandstats")
    admin.close()
    commands = {
        key.removeprefix("cmdstat_"): int(value["calls"])
        for key, value in stats.items()
        if key.removeprefix("cmdstat_") not in _OURS
    }
    arrivals = sorted(float(t) for t in _post(f"{fake_url}/_stats")["arrivals"])
    return RunResult(name, arrivals, results, commands, started, fake_cpu, redis_cpu)


# -- report -------------------------------------------------------------------------------


def _windows_over(times: list[float], limit: float) -> int:
    """Sliding 1 s windows, one starting at each arrival, holding more than `limit`."""
    over = end = 0
    for i, start in enumerate(times):
        end = max(end, i)
        while end < len(times) and times[end] < start + 1.0:
            end += 1
        over += end - i > limit
    return over


def _over_at(times: list[float], limit: float) -> str:
    """Where (seconds after the first arrival) the windows over `limit` start, as ranges."""
    spans: list[list[float]] = []
    end = 0
    for i, start in enumerate(times):
        end = max(end, i)
        while end < len(times) and times[end] < start + 1.0:
            end += 1
        if end - i > limit:
            at = start - times[0]
            if spans and at - spans[-1][1] < 0.05:
                spans[-1][1] = at
            else:
                spans.append([at, at])
    return ", ".join(f"{a:.2f}-{b:.2f} s" for a, b in spans)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else float("nan")


def _row(run: RunResult, rate: float, messages: int) -> str:
    times = run.arrivals
    span = times[-1] - times[0] if len(times) > 1 else float("nan")
    sustained = (len(times) - 1) / span / rate if len(times) > 1 else 0.0
    commands = sum(run.commands.values())
    round_trips = sum(run.commands.get(name, 0) for name in _ROUND_TRIPS)
    waits = [t - r.started for r in run.replicas for t in r.send_starts]
    late = sum(r.stats["late_slots"] for r in run.replicas)
    unfinished = sum(not r.finished for r in run.replicas)
    note = f" ({unfinished} replicas hit --max-run-s)" if unfinished else ""
    sent = max(run.sent, 1)
    replicas_cpu = sum(r.cpu_s for r in run.replicas)
    cpu = f"{replicas_cpu:.1f} / {run.fake_cpu_s:.1f} / {run.redis_cpu_s:.1f}"
    sends = sorted(t for r in run.replicas for t in r.send_starts)
    cells = [
        run.limiter,
        f"{run.sent}/{messages}{note}",
        max_in_sliding_window(times),
        _windows_over(times, rate),
        max_in_sliding_window(sends),
        f"{sustained:.1%}",
        f"{commands / sent:.3f}",
        f"{round_trips / sent:.3f}",
        f"{_percentile(waits, 0.99):.2f} s",
        late,
        cpu,
    ]
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _chart(runs: list[RunResult], rate: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(11, 4.5))
    for run in runs:
        if not run.arrivals:
            continue
        buckets = [0] * (int((run.arrivals[-1] - run.started) / 0.1) + 1)
        for at in run.arrivals:
            buckets[max(0, int((at - run.started) / 0.1))] += 1
        axis.plot([i * 0.1 for i in range(len(buckets))], buckets, label=run.limiter, lw=1)
    axis.axhline(rate / 10, color="red", linestyle="--", label=f"limit {rate / 10:.0f} / 100 ms")
    axis.set_xlabel("seconds since the replicas started")
    axis.set_ylabel("arrivals at the provider per 100 ms")
    axis.set_title(
        f"{len(runs[0].replicas)} replicas sharing one Redis, one provider at {rate:.0f}/s"
    )
    axis.legend(loc="lower center")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--limiters", default=",".join(LIMITERS))
    parser.add_argument("--max-run-s", type=float, default=40.0, help="bound on each run")
    parser.add_argument("--lease-size", type=int, default=None, help="default: LimiterSettings")
    parser.add_argument("--lookahead-ms", type=float, default=None, help="default: LimiterSettings")
    parser.add_argument("--pace", type=float, default=None, help="default: LimiterSettings")
    parser.add_argument("--chart", type=Path, default=CHART)
    args = parser.parse_args()
    names = [name for name in args.limiters.split(",") if name]
    if unknown := set(names) - set(LIMITERS) - set(CONTROLS):
        parser.error(f"unknown limiter(s): {', '.join(sorted(unknown))}")

    runs: list[RunResult] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        fake = None
        try:
            fake, port = start_process(
                ["python", "-m", "bench.fake_provider"], Path(tmp) / "fake.port"
            )
            fake_url = f"http://127.0.0.1:{port}"
            wait_ready(f"{fake_url}/healthz")
            for name in names:
                print(f"running {name} ...", file=sys.stderr, flush=True)
                runs.append(_run(name, args, server.url, Fake(fake, fake_url)))
        finally:
            if fake is not None:
                stop_process(fake)
            server.stop()

    messages = args.replicas * (args.messages // args.replicas)
    limit = f"{args.rate:.0f}"
    print(
        f"| limiter | sent | most arrivals in any sliding 1 s (limit {limit}) "
        f"| windows over {limit} | most send starts in 1 s | sustained, share of {limit} "
        "| Redis commands / SMS "
        "| round trips / SMS | p99 queue wait | late slots dropped "
        "| CPU s: replicas / fake / Redis |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        print(_row(run, args.rate, messages))
    for run in runs:
        if over := _over_at(run.arrivals, args.rate):
            print(f"{run.limiter}: windows over start at {over}", file=sys.stderr)
        counters = [r.counters for r in run.replicas if r.counters]
        if counters:
            totals = {k: sum(c[k] for c in counters) for k in counters[0]}
            print(f"\n{run.limiter} limiter counters: {totals}", file=sys.stderr)
    _chart(runs, args.rate, args.chart)
    print(f"\nchart: {args.chart}", file=sys.stderr)


if __name__ == "__main__":
    main()
