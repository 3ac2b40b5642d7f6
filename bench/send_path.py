"""Issue 14's send path, side by side in one run: segments paced, the rate used in full at
real provider latency, a shared concurrency cap.

    .venv/bin/python -m bench.send_path [--seconds 20] [--only a b c d]

Every scenario runs as real processes on loopback: the fake Twilio (`bench.fake_provider`,
which stamps each arrival when the request is in and answers after its own delay, counting
segments with its own counter, not smsgw's), a private redis-server where replicas share
state, and `smsgw serve` replicas with the **default** dispatch and limiter settings. The
message mix is issue 14's: 60% short OTP-like bodies (1 segment), 25% 200-character GSM-7 (2),
15% 100-character Cyrillic with an emoji (UCS-2, 2): 1.4 segments per message. Messages are
offered through `POST /v1/messages/batch` about as fast as the provider can take them (a
backlog of ~2 s ahead of the rate, topped up every 0.25 s), for `--seconds`.

    a  3 replicas, Redis, rate 1000 segments/s, latency 250 ± 80 ms
    b  1 replica, embedded defaults (memory queue and limiter), rate 1000, 300 ± 100 ms
    c  as a, with max_in_flight = 150: the ceiling is 150 / 0.25 s = 600 msg/s = 840 seg/s
    d  3 replicas, Redis, rate 2000, no latency
    e  as a, latency 50 ± 15 ms          f  as a, latency 500 ± 150 ms

Reported per scenario: segments and messages at the fake, the most segments in any sliding
second and the arrivals that closed a sliding second over the rate, sustained segments/s
(first to last arrival) against the rate (c: against its ceiling), the peak of requests open
at the fake and its 429s, and the decision-to-write delay p50/p99/p99.9 (interpolated in the
replicas' `smsgw_send_decision_delay_seconds` buckets, all replicas summed).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from testkit.fake_provider import fetch_stats, twilio_provider_toml, wait_taken
from testkit.mix import body
from testkit.processes import start_process, start_replicas, stop_process, wait_ready
from testkit.services import RedisServer

BATCH = 500
DECISION_METRIC = "smsgw_send_decision_delay_seconds"


@dataclass(frozen=True)
class Scenario:
    name: str
    replicas: int
    rate: int
    latency_ms: float
    jitter_ms: float
    redis: bool = True
    max_in_flight: int | None = None

    def ceiling(self, segments_per_message: float) -> float:
        """Segments/s the provider can take: the rate, or what the cap lets through."""
        if self.max_in_flight is None or self.latency_ms == 0:
            return float(self.rate)
        by_cap = self.max_in_flight / (self.latency_ms / 1000) * segments_per_message
        return min(float(self.rate), by_cap)

    def describe(self) -> str:
        parts = [f"{self.replicas} replica{'s' if self.replicas > 1 else ''}"]
        parts.append("Redis" if self.redis else "embedded (memory)")
        parts.append(f"rate {self.rate} seg/s")
        if self.latency_ms:
            parts.append(f"latency {self.latency_ms:g} ± {self.jitter_ms:g} ms")
        else:
            parts.append("no latency")
        if self.max_in_flight is not None:
            parts.append(f"max_in_flight {self.max_in_flight}")
        return ", ".join(parts)


SCENARIOS = {
    "a": Scenario("a", 3, 1000, 250, 80),
    "b": Scenario("b", 1, 1000, 300, 100, redis=False),
    "c": Scenario("c", 3, 1000, 250, 80, max_in_flight=150),
    "d": Scenario("d", 3, 2000, 0, 0),
    # The same defaults at a fast and at a slow provider (issue 14: "the defaults reach the
    # rate at 50 ms and at 500 ms latency alike").
    "e": Scenario("e", 3, 1000, 50, 15),
    "f": Scenario("f", 3, 1000, 500, 150),
}


def _config(directory: Path, scenario: Scenario, fake_url: str, redis_url: str | None) -> Path:
    path = directory / f"smsgw-{scenario.name}.toml"
    shared = f'[redis]\nurl = "{redis_url}"\n' if redis_url else ""
    extra: dict[str, object] = {"rate": scenario.rate}
    if scenario.max_in_flight is not None:
        extra["max_in_flight"] = scenario.max_in_flight
    path.write_text(
        f"""
[server]
drain_timeout_s = 5
[audit]
path = "{directory}/audit-{scenario.name}.sqlite3"
spool_dir = "{directory}/audit-spool-{scenario.name}"
[otp]
secret = "bench-secret-0123456789"
[queue]
max_size = 500000
{shared}
{twilio_provider_toml(fake_url, **extra)}
"""
    )
    return path


async def _offer(urls: Sequence[str], messages: int) -> float:
    """Offer every message at once, as fast as the replicas accept them (far faster than the
    rate), so the providers' pacing alone sets the pace; seconds it took."""
    started = time.monotonic()
    replica = itertools.cycle(urls)
    async with aiohttp.ClientSession() as session:

        async def post(first: int) -> None:
            batch = [{"to": f"+1415{2000000 + n % 1000000}", "body": body(n)}
                     for n in range(first, min(first + BATCH, messages))]  # fmt: skip
            url = f"{next(replica)}/v1/messages/batch"
            async with session.post(url, json={"messages": batch}) as response:
                if response.status != 202:
                    raise RuntimeError(f"HTTP {response.status}: {await response.text()}")

        starts = list(range(0, messages, BATCH))
        for i in range(0, len(starts), len(urls)):  # one batch per replica at a time
            await asyncio.gather(*(post(first) for first in starts[i : i + len(urls)]))
    return time.monotonic() - started


def _get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=60) as response:
        data: dict[str, object] = json.load(response)
    return data


def _decision_buckets(urls: Sequence[str]) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of the decision-delay histogram, replicas summed."""
    totals: dict[float, float] = {}
    for url in urls:
        with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
            text = response.read().decode()
        for line in text.splitlines():
            if not line.startswith(f"{DECISION_METRIC}_bucket"):
                continue
            labels, value = line.rsplit(" ", 1)
            bound = labels.split('le="', 1)[1].split('"', 1)[0]
            upper = math.inf if bound == "+Inf" else float(bound)
            totals[upper] = totals.get(upper, 0.0) + float(value)
    return sorted(totals.items())


def quantile(buckets: Sequence[tuple[float, float]], q: float) -> float:
    """Linear interpolation inside the bucket holding the q-th observation."""
    total = buckets[-1][1] if buckets else 0.0
    if total == 0:
        return math.nan
    target = q * total
    lower_bound, lower_count = 0.0, 0.0
    for upper, count in buckets:
        if count >= target:
            if math.isinf(upper):
                return lower_bound
            share = (target - lower_count) / (count - lower_count) if count > lower_count else 1
            return lower_bound + (upper - lower_bound) * share
        lower_bound, lower_count = upper, count
    return lower_bound


def _steady(accepted: Sequence[dict[str, object]]) -> float:
    """Segments/s between the 10th and 90th percentile arrival: the rate held once the
    start (cold connections, the offer's own CPU) and the last partial second are past."""
    stamped = sorted((float(str(a["at"])), int(str(a["segments"]))) for a in accepted)
    lo, hi = len(stamped) // 10, len(stamped) * 9 // 10
    segments = sum(units for _, units in stamped[lo:hi])
    return segments / (stamped[hi][0] - stamped[lo][0])


def run(scenario: Scenario, seconds: float, per_message: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        redis_server = RedisServer(directory) if scenario.redis else None
        processes = []
        try:
            redis_url = None
            if redis_server is not None:
                redis_server.start()
                redis_url = redis_server.url
            fake_argv = ["python", "-m", "bench.fake_provider", "--limit-segments",
                         str(scenario.rate)]  # fmt: skip
            if scenario.latency_ms:
                fake_argv += ["--latency-ms", str(scenario.latency_ms)]
                fake_argv += ["--jitter-ms", str(scenario.jitter_ms)]
            if scenario.max_in_flight is not None:
                fake_argv += ["--max-concurrent", str(scenario.max_in_flight)]
            fake, fake_port = start_process(fake_argv, directory / "fake.port")
            processes.append(fake)
            fake_url = f"http://127.0.0.1:{fake_port}"
            wait_ready(f"{fake_url}/healthz")
            config = _config(directory, scenario, fake_url, redis_url)
            urls = start_replicas(config, directory, scenario.replicas, processes)
            offered = round(scenario.ceiling(per_message) / per_message * seconds)
            offer_s = asyncio.run(_offer(urls, offered))
            print(f"  offered {offered} in {offer_s:.1f} s", file=sys.stderr)
            wait_taken(fake_url, offered, seconds * 3 + 30)
            buckets = _decision_buckets(urls)
            dispatch = [_get_json(f"{url}/readyz").get("dispatch") for url in urls]
            print(f"  dispatch: {dispatch}", file=sys.stderr)
            stats = fetch_stats(fake_url)
        finally:
            for process in reversed(processes):
                stop_process(process, timeout=15)
            if redis_server is not None:
                redis_server.stop()
    accepted = stats["accepted"]
    assert isinstance(accepted, list)
    times = sorted(float(a["at"]) for a in accepted)
    duration = times[-1] - times[0] if len(times) > 1 else math.nan
    segments = int(str(stats["segments_total"]))
    per_second: dict[int, int] = {}
    for a in accepted:
        second = int(float(a["at"]) - times[0])
        per_second[second] = per_second.get(second, 0) + int(a["segments"])
    print(f"  segments per second: {[per_second[s] for s in sorted(per_second)]}",
          file=sys.stderr)  # fmt: skip
    return {
        "offered": offered,
        "messages": len(accepted),
        "segments": segments,
        "max_sliding": stats["max_segments_in_sliding_second"],
        "over": stats["arrivals_over_segment_limit"],
        "sustained": segments / duration,
        "steady": _steady(accepted),
        "in_flight_peak": stats["in_flight_peak"],
        "concurrency_429": stats["concurrency_429"],
        "delay": [quantile(buckets, q) for q in (0.5, 0.99, 0.999)],
        "per_message": segments / max(len(accepted), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), default=sorted(SCENARIOS))
    args = parser.parse_args()
    per_message = 1.4
    rows = []
    for name in args.only:
        scenario = SCENARIOS[name]
        print(f"running {name}: {scenario.describe()} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        result = run(scenario, args.seconds, per_message)
        print(f"  done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        rows.append((scenario, result))
    print(
        "| run | setup | messages / segments at the fake (seg/msg) | most segments in a "
        "sliding 1 s | arrivals closing a second over the rate | seg/s first to last arrival "
        "| steady seg/s (p10-p90 arrivals) | steady, of the goal's base | peak open at the "
        "fake / 429s | decision-to-write p50 / p99 / p99.9 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for scenario, r in rows:
        ceiling = scenario.ceiling(float(str(r["per_message"])))
        base = "rate" if ceiling == scenario.rate else f"ceiling {ceiling:.0f}"
        p50, p99, p999 = (f"{v * 1e6:.0f} µs" for v in r["delay"])  # type: ignore[attr-defined]
        sustained, steady = float(str(r["sustained"])), float(str(r["steady"]))
        print(
            f"| {scenario.name} | {scenario.describe()} | {r['messages']} / {r['segments']} "
            f"({float(str(r['per_message'])):.3f}) | {r['max_sliding']} | {r['over']} | "
            f"{sustained:.0f} ({sustained / ceiling:.1%}) | {steady:.0f} | "
            f"{steady / ceiling:.1%} ({base}) | {r['in_flight_peak']} / {r['concurrency_429']} "
            f"| {p50} / {p99} / {p999} |"
        )


if __name__ == "__main__":
    main()
