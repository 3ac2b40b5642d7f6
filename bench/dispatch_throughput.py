"""Dispatcher throughput into the fake Twilio server, limit off and limit on, in one run.

    .venv/bin/python -m bench.dispatch_throughput [--messages 50000] [--concurrency 128]
        [--rate 5000] [--profile]

The fake provider runs as its own process; the dispatcher (memory queue, limiter, real
TwilioProvider over HTTP) runs here on uvloop, as inside `smsgw serve`. The queue is filled
first, then the clock runs until every message has an outcome. With the limit on, the
fake's arrival log gives the most arrivals in any sliding second (must stay <= rate).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import uvloop

from bench.loadgen import start_process, stop_process, wait_ready
from bench.no_audit import NoAudit
from smsgw.dispatch import Dispatcher, Route, Router
from smsgw.limiter import MemoryLimiter
from smsgw.log import configure_logging
from smsgw.providers import TwilioProvider
from smsgw.queue import MemoryQueue, Message
from smsgw.settings import DispatchSettings, TwilioProviderSettings
from testkit.fake_provider import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, max_in_sliding_window


@dataclass(frozen=True, slots=True)
class RunResult:
    label: str
    messages: int
    seconds: float
    sent: int
    max_per_second: int

    @property
    def rate(self) -> float:
        return self.sent / self.seconds


async def _dispatch(
    base_url: str, messages: int, concurrency: int, rate: float | None
) -> tuple[float, int]:
    settings = TwilioProviderSettings(
        name="twilio",
        account_sid=DEFAULT_ACCOUNT_SID,
        auth_token=DEFAULT_AUTH_TOKEN,
        from_="+15005550006",
        base_url=base_url,
        rate=rate,
    )
    provider = TwilioProvider(settings)
    await provider.start()
    queue = MemoryQueue(max_size=messages)
    await queue.put_many(
        [
            Message(to=f"+1415{2000000 + i}", country="US", body=f"bench {i}", client="bench")
            for i in range(messages)
        ]
    )
    limiter = MemoryLimiter({"twilio": rate})
    dispatcher = Dispatcher(
        queue,
        Router([Route(provider, 1.0, frozenset())]),
        limiter,
        DispatchSettings(concurrency=concurrency),
        NoAudit(),
    )
    started = time.perf_counter()
    dispatcher.start()
    await queue.wait_empty()
    seconds = time.perf_counter() - started
    await dispatcher.stop()
    await limiter.close()
    await provider.close()
    return seconds, dispatcher.stats.sent


def _fake_stats(base_url: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{base_url}/_stats", timeout=30) as response:
        stats: dict[str, object] = json.load(response)
    request = urllib.request.Request(f"{base_url}/_reset", method="POST")
    urllib.request.urlopen(request, timeout=10).close()
    return stats


def _run(base_url: str, label: str, args: argparse.Namespace, rate: float | None) -> RunResult:
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    seconds, sent = uvloop.run(_dispatch(base_url, args.messages, args.concurrency, rate))
    if profiler:
        profiler.disable()
        print(f"--- profile: {label}", file=sys.stderr)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(20)
    stats = _fake_stats(base_url)
    arrivals = stats["arrivals"]
    assert isinstance(arrivals, list)
    return RunResult(label, args.messages, seconds, sent, max_in_sliding_window(arrivals))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--profile", action="store_true", help="cProfile the limit-off run")
    args = parser.parse_args()
    configure_logging("warning")

    with tempfile.TemporaryDirectory() as tmp:
        fake, port = start_process(["python", "-m", "bench.fake_provider"], Path(tmp) / "fake.port")
        try:
            base_url = f"http://127.0.0.1:{port}"
            wait_ready(f"{base_url}/healthz")
            results = [_run(base_url, "limit off", args, None)]
            args.profile = False
            results.append(_run(base_url, f"limit {args.rate:.0f}/s", args, args.rate))
        finally:
            stop_process(fake)

    print("| run | messages | seconds | SMS/s | most arrivals in any 1 s |")
    print("|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.label} | {r.sent}/{r.messages} | {r.seconds:.2f} | {r.rate:.0f} "
            f"| {r.max_per_second} |"
        )


if __name__ == "__main__":
    main()
