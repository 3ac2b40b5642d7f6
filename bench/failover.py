"""Failover time: one provider starts failing under steady traffic; how soon does all new
traffic go through the other one, and is anything lost?

    .venv/bin/python -m bench.failover [--rate 400] [--before 3] [--after 8] [--timeout-s 2]

Separate processes on loopback: two fake provider servers (`bench.fake_provider`), one as
Twilio, one as Vonage, and `smsgw serve` with both at weight 1 and the default circuit
breaker settings. Messages are offered through `POST /v1/messages/batch` at `--rate` per
second. After `--before` seconds the Twilio fake is told (`POST /_control`) to answer every
request with 500, or in the second scenario to hold every request unanswered (a provider that
accepts connections and never answers; smsgw's Twilio `timeout_s` is `--timeout-s`).

Failover time = the last request reaching the failing provider minus the moment it started
failing: from then on every new message went through the other provider (the breaker's
cooldown, 30 s, is longer than the run, so no probe falls inside it). Lost = offered
messages the other provider never accepted; duplicates = bodies accepted more than once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from bench.loadgen import start_process, stop_process, wait_ready
from testkit.fake_provider import twilio_provider_toml
from testkit.vonage_shapes import VonageAccount

BATCH_EVERY_S = 0.05


def _config(directory: Path, twilio_url: str, vonage_url: str, timeout_s: float) -> Path:
    vonage = VonageAccount()
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
[queue]
max_size = 100000
[dispatch]
concurrency = 128
backoff_base_s = 0.05
backoff_max_s = 0.5
{twilio_provider_toml(twilio_url, weight=1, rate=10000, timeout_s=timeout_s, connect_timeout_s=1)}
[[providers]]
name = "vonage"
kind = "vonage"
weight = 1
rate = 10000
api_key = "{vonage.api_key}"
api_secret = "{vonage.api_secret}"
from = "smsgw"
base_url = "{vonage_url}"
"""
    )
    return path


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=60) as response:
        stats: dict[str, Any] = json.load(response)
    return stats


def _post(url: str, payload: dict[str, Any]) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


async def _offer(base: str, rate: float, seconds: float, fail: Any) -> tuple[int, float]:
    """Offer `rate` messages/s for `seconds`; call `fail()` halfway (at the given offset).
    Returns (messages offered, monotonic time the fault was switched on)."""
    per_batch = max(1, round(rate * BATCH_EVERY_S))
    offered = 0
    fault_at = 0.0
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        tick = 0
        while time.monotonic() - started < seconds:
            if not fault_at and time.monotonic() - started >= fail.offset_s:
                fault_at = time.monotonic()
                await asyncio.to_thread(fail)
            batch = [
                {"to": f"+1415{2000000 + offered + n}", "body": f"m{offered + n}"}
                for n in range(per_batch)
            ]
            async with session.post(f"{base}/v1/messages/batch", json={"messages": batch}) as r:
                if r.status != 202:
                    raise RuntimeError(f"batch refused: HTTP {r.status}")
            offered += per_batch
            tick += 1
            await asyncio.sleep(max(0.0, started + tick * BATCH_EVERY_S - time.monotonic()))
    return offered, fault_at


class _Fault:
    def __init__(self, url: str, changes: dict[str, Any], offset_s: float) -> None:
        self.url, self.changes, self.offset_s = url, changes, offset_s

    def __call__(self) -> None:
        _post(f"{self.url}/_control", self.changes)


def _scenario(name: str, changes: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="smsgw-failover-") as tmp:
        directory = Path(tmp)
        processes = []
        try:
            urls = []
            for provider in ("twilio", "vonage"):
                argv = ["python", "-m", "bench.fake_provider"]
                proc, port = start_process(argv, directory / f"{provider}.port")
                processes.append(proc)
                urls.append(f"http://127.0.0.1:{port}")
                wait_ready(f"{urls[-1]}/healthz")
            twilio_url, vonage_url = urls
            config = _config(directory, twilio_url, vonage_url, args.timeout_s)
            argv = ["python", "-m", "smsgw", "serve", "--config", str(config)]
            proc, port = start_process([*argv, "--log-level", "warning"], directory / "gw.port")
            processes.append(proc)
            base = f"http://127.0.0.1:{port}"
            wait_ready(f"{base}/readyz")

            fault = _Fault(twilio_url, changes, args.before)
            offered, fault_at = asyncio.run(
                _offer(base, args.rate, args.before + args.after, fault)
            )
            deadline = time.monotonic() + 60
            while True:
                twilio, vonage = _get(f"{twilio_url}/_stats"), _get(f"{vonage_url}/_stats")
                bodies = Counter(a["body"] for a in twilio["accepted"] + vonage["accepted"])
                if len(bodies) >= offered or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        finally:
            for proc in reversed(processes):
                stop_process(proc)
    after = [t for t in twilio["arrivals"] if t >= fault_at]
    return {
        "scenario": name,
        "offered": offered,
        "failover_s": (max(after) - fault_at) if after else 0.0,
        "failing_provider_requests_after_fault": len(after),
        "lost": offered - len(bodies),
        "duplicates": sum(n - 1 for n in bodies.values() if n > 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=400.0, help="messages offered per second")
    parser.add_argument("--before", type=float, default=3.0, help="seconds before the fault")
    parser.add_argument("--after", type=float, default=8.0, help="seconds after the fault")
    parser.add_argument("--timeout-s", type=float, default=2.0, help="smsgw's Twilio timeout")
    args = parser.parse_args()
    rows = [
        _scenario("Twilio answers 500 to everything", {"fail_5xx": 1.0}, args),
        _scenario("Twilio accepts and never answers", {"hang": 1.0}, args),
    ]
    print(f"offered {args.rate:.0f} msg/s, Twilio timeout_s = {args.timeout_s}")
    print("| scenario | offered | failover time | requests to the failing one after | lost | dup |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['scenario']} | {row['offered']} | {row['failover_s']:.2f} s "
            f"| {row['failing_provider_requests_after_fault']} | {row['lost']} "
            f"| {row['duplicates']} |"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
