"""`smsgw supervise` as a real process with real workers, a private Redis and the fake provider.

A backlog of 20,000 messages behind a slow provider scales the workers up to max; a worker
SIGKILLed meanwhile is replaced and what it held is claimed by the others (every message
reaches the provider, a copy sent twice only if it was in flight at the kill); the empty queue
scales back to min after the down cooldown; a worker whose heartbeat stops is replaced; SIGTERM
stops everything and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from smsgw import cli
from smsgw.queue.message import Message
from smsgw.queue.redis import RedisQueue
from smsgw.queue.sealing import QueueCipher
from smsgw.redis_keys import QUEUE_GROUP, RedisKeys
from smsgw.replicas import BEAT_TTL_S, beats
from smsgw.settings import QueueSettings
from smsgw.supervise.supervisor import heartbeat_silence
from testkit.fake_provider import twilio_provider_toml
from testkit.services import RedisServer, free_port
from tests.test_serve import OTP_SECRET, REPO, clean_env, fake_provider, wait_exit
from tests.test_workers import children_of

KEYS = RedisKeys()
MESSAGES = 20_000
LATENCY_MS = 100
CONCURRENCY = 48  # per worker: 480/s each at 100 ms
VISIBILITY_S = 2.0
INTERVAL_S = 0.25
DOWN_COOLDOWN_S = 4.0
PHONES = [f"+141555501{n:02d}" for n in range(100)]


def write_config(tmp_path: Path, redis_url: str, fake_url: str) -> Path:
    config = tmp_path / "smsgw.toml"
    config.write_text(
        f"""
[server]
host = "127.0.0.1"
drain_timeout_s = 10

[redis]
url = "{redis_url}"

[otp]
secret = "{OTP_SECRET}"

[queue]
max_size = 100000
visibility_timeout_s = {VISIBILITY_S}

[dispatch]
concurrency = {CONCURRENCY}

[audit]
path = "{tmp_path / "audit.sqlite3"}"
spool_dir = "{tmp_path / "spool"}"

# Any backlog above 200 asks for 3 workers: the fleet stays at max until the queue is
# (almost) empty, so the way down is the down cooldown alone.
[scaling]
backlog_per_worker = 100
worker_rate = 100.0
drain_s = 10.0
max_age_s = 600.0
up_cooldown_s = 1.0
down_cooldown_s = {DOWN_COOLDOWN_S}

{twilio_provider_toml(fake_url)}
"""
    )
    return config


class Supervise:
    """A running `smsgw supervise`, its log (workers log there too) and its /metrics."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path, metrics_url: str) -> None:
        self.proc = proc
        self.log_path = log_path
        self.metrics_url = metrics_url
        self.seen: set[int] = set()  # every worker pid seen, to end orphans at the end

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self, event: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log().splitlines():
            if f'"{event}"' in line:
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if record.get("event") == event:
                        found.append(record)
        return found

    def workers(self) -> list[int]:
        pids = sorted(children_of(self.proc.pid))
        self.seen.update(pids)
        return pids

    def end_orphans(self) -> None:
        """SIGKILL workers left behind if the supervisor itself died (checked to still be
        our workers: a pid may have been reused since)."""
        for pid in self.seen:
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"smsgw" in cmdline and b"worker" in cmdline:
                    os.kill(pid, signal.SIGKILL)

    async def metric(self, http: aiohttp.ClientSession, name: str, **labels: str) -> float:
        async with http.get(self.metrics_url) as response:
            text = await response.text()
        total = 0.0
        for line in text.splitlines():
            match = re.match(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
            if match is None or match.group(1) != name:
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            if labels.items() <= found.items():
                total += float(match.group(3))
        return total


@contextlib.asynccontextmanager
async def supervise(config: Path, tmp_path: Path, *args: str) -> AsyncIterator[Supervise]:
    port = free_port()
    log_path = tmp_path / "supervise.log"
    argv = [sys.executable, "-m", "smsgw", "supervise", "--config", str(config)]
    argv += ["--interval", str(INTERVAL_S), "--metrics-port", str(port), *args]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv, cwd=tmp_path, env=clean_env(), stdout=log, stderr=subprocess.STDOUT
        )
    running = Supervise(proc, log_path, f"http://127.0.0.1:{port}/metrics")
    try:
        await until(lambda: bool(running.events("metrics_listening")), 20, running.log)
        yield running
    finally:
        running.workers()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        running.end_orphans()


async def until(check: Callable[[], Any], timeout_s: float, why: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, why()[-4000:]
        await asyncio.sleep(0.1)


async def enqueue(redis_url: str, count: int) -> None:
    client = aioredis.Redis.from_url(redis_url)
    # Sealed as the workers expect: under the key derived from the config's otp.secret.
    cipher = QueueCipher(OTP_SECRET)
    queue = RedisQueue(
        client, KEYS, QueueSettings(max_size=100_000), "test-producer", cipher=cipher
    )
    try:
        for start in range(0, count, 1000):
            await queue.put_many(
                [
                    Message(to=PHONES[i % 100], country="US", body=f"m {i}", client="test")
                    for i in range(start, min(start + 1000, count))
                ]
            )
    finally:
        await client.aclose()


async def unfinished(client: aioredis.Redis) -> int:
    lengths = [await client.xlen(KEYS.stream(p)) for p in ("high", "normal")]
    return sum(lengths) + int(await client.zcard(KEYS.delayed))


async def pending_of(client: aioredis.Redis, pid: int) -> int:
    """Entries held by the queue consumer of worker `pid` (its name: host-pid-random)."""
    prefix = f"{socket.gethostname()}-{pid}-"
    consumers = await client.xinfo_consumers(KEYS.stream("normal"), QUEUE_GROUP)
    return sum(int(c["pending"]) for c in consumers if str(c["name"], "utf-8").startswith(prefix))


async def fake_summary(http: aiohttp.ClientSession, fake_url: str) -> dict[str, Any]:
    async with http.get(f"{fake_url}/_stats", params={"summary": "1"}) as response:
        stats: dict[str, Any] = await response.json()
        return stats


def at(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(record["timestamp"]).timestamp()


@pytest.mark.timeout(150)
async def test_backlog_scales_to_max_a_killed_worker_is_replaced_then_back_to_min(
    tmp_path: Path, redis_url: str
) -> None:
    await enqueue(redis_url, MESSAGES)
    async with aioredis.Redis.from_url(redis_url) as client:
        stats, killed_at = await scale_kill_and_drain(tmp_path, redis_url, client)

    assert stats["by_status"] == {"201": stats["count"]}
    copies = Counter(a["body"] for a in stats["accepted"])
    assert set(copies) == {f"m {i}" for i in range(MESSAGES)}
    twice = {body for body, n in copies.items() if n > 1}
    assert max(copies.values()) <= 2
    # In flight at the kill (at most CONCURRENCY) or answered just before it, not yet marked
    # sent (the settle linger): a few dozen here.
    assert len(twice) <= CONCURRENCY * 3, len(twice)
    first: dict[str, float] = {}
    for record in stats["accepted"]:
        first.setdefault(record["body"], record["at"])
    ambiguous = [b for b in twice if killed_at - 1.5 <= first[b] <= killed_at + 0.1]
    assert sorted(ambiguous) == sorted(twice), [first[b] - killed_at for b in twice]


async def scale_kill_and_drain(
    tmp_path: Path, redis_url: str, client: aioredis.Redis
) -> tuple[dict[str, Any], float]:
    """The scenario; the fake provider's records and when the worker was killed."""
    with fake_provider(tmp_path, "--latency-ms", str(LATENCY_MS)) as fake_url:
        config = write_config(tmp_path, redis_url, fake_url)
        async with (
            supervise(config, tmp_path, "--min", "1", "--max", "3") as sup,
            aiohttp.ClientSession() as http,
        ):
            # Up to max at once: 20,000 waiting is far beyond 2 x 100 per worker.
            async def three_beating() -> bool:
                workers = sup.workers()
                roll = await beats(client, KEYS, "worker")
                names = {f"{socket.gethostname()}:{pid}" for pid in workers}
                return len(workers) == 3 and names <= roll.keys()

            await until(three_beating, 30, sup.log)
            assert await sup.metric(http, "smsgw_supervised_workers") == 3
            assert await sup.metric(http, "smsgw_desired_workers") == 3
            [up] = sup.events("scale_up")
            assert (up["workers_before"], up["workers"], up["backlog"]) == (1, 3, MESSAGES)

            # A worker dies holding messages: it is replaced, and what it held is claimed.
            async def busy() -> bool:
                return (await fake_summary(http, fake_url))["count"] >= 2000

            await until(busy, 40, sup.log)
            holding = {pid: await pending_of(client, pid) for pid in sup.workers()}
            victim = max(holding, key=lambda pid: holding[pid])
            assert holding[victim] > 0, holding
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)

            def replaced() -> bool:
                restarts = [r for r in sup.events("worker_restarted") if r["pid"] == victim]
                workers = sup.workers()
                return bool(restarts) and len(workers) == 3 and victim not in workers

            await until(replaced, 15, sup.log)
            [restart] = [r for r in sup.events("worker_restarted") if r["pid"] == victim]
            assert restart["reason"] == "exited"
            assert restart["exit_code"] == -signal.SIGKILL
            assert await sup.metric(http, "smsgw_worker_restarts_total", reason="exited") == 1

            async def claimed() -> bool:
                return await pending_of(client, victim) == 0

            await until(claimed, VISIBILITY_S * 3 + 5, sup.log)

            # The backlog drains. Fewer than 3 workers are wanted only once 200 or fewer
            # messages wait (a fraction of a second before empty): from then on the down
            # cooldown runs, and the fleet goes back to min after it, not before.
            async def low() -> bool:
                return await unfinished(client) <= 2 * 100

            await until(low, 90, sup.log)
            low_at = time.time()
            assert sup.events("scale_down") == []

            async def drained() -> bool:
                return await unfinished(client) == 0

            await until(drained, 30, sup.log)

            def at_min() -> bool:
                return len(sup.workers()) == 1 and bool(sup.events("scale_down"))

            await until(at_min, DOWN_COOLDOWN_S + 20, sup.log)
            downs = sup.events("scale_down")
            assert [(d["workers_before"], d["workers"]) for d in downs] == [(3, 1)]
            assert downs[0]["backlog"] == 0
            waited = at(downs[0]) - low_at
            assert DOWN_COOLDOWN_S - 1.0 <= waited <= DOWN_COOLDOWN_S + 8.0, waited
            cooled = await sup.metric(
                http, "smsgw_supervisor_decisions_total", reason="down_cooldown"
            )
            assert cooled >= DOWN_COOLDOWN_S / INTERVAL_S - 4
            assert await sup.metric(http, "smsgw_supervised_workers") == 1
            retired = sup.events("worker_retired")
            assert len(retired) == 3  # the SIGKILLed one and the two scaled down
            assert sorted(r["exit_code"] for r in retired) == sorted([-9, 0, 0])

            # Every message reached the provider; a copy twice only if it was in flight
            # (or answered, not yet marked sent) when its worker was killed.
            async with http.get(f"{fake_url}/_stats") as response:
                stats = await response.json()
            sup.proc.send_signal(signal.SIGTERM)
            assert await wait_exit(sup.proc, 30) == 0, sup.log()[-4000:]
            assert sup.workers() == []
            assert sup.events("supervisor_stopped")
    return stats, killed_at


@pytest.mark.timeout(90)
async def test_a_worker_whose_heartbeat_stops_is_killed_and_replaced(
    tmp_path: Path, redis_url: str
) -> None:
    async with aioredis.Redis.from_url(redis_url) as client:
        await heartbeat_scenario(tmp_path, redis_url, client)


async def heartbeat_scenario(tmp_path: Path, redis_url: str, client: aioredis.Redis) -> None:
    with fake_provider(tmp_path) as fake_url:
        config = write_config(tmp_path, redis_url, fake_url)
        async with (
            supervise(config, tmp_path, "--min", "1", "--max", "1") as sup,
            aiohttp.ClientSession() as http,
        ):

            async def one_beating() -> bool:
                workers = sup.workers()
                roll = await beats(client, KEYS, "worker")
                return len(workers) == 1 and f"{socket.gethostname()}:{workers[0]}" in roll

            await until(one_beating, 30, sup.log)
            [hung] = sup.workers()
            # Stopped, not dead: the process is there, but it neither works nor beats.
            os.kill(hung, signal.SIGSTOP)
            stopped_at = time.monotonic()

            def restarted() -> bool:
                return any(r["pid"] == hung for r in sup.events("worker_restarted"))

            await until(restarted, BEAT_TTL_S + 10, sup.log)
            assert time.monotonic() - stopped_at >= BEAT_TTL_S - 2.5  # beats every 2 s
            [restart] = sup.events("worker_restarted")
            assert restart["reason"] == "heartbeat"
            assert restart["silent_s"] >= BEAT_TTL_S

            async def replaced() -> bool:
                # The hung worker may still be listed (and on the roll) a moment after the
                # restart is logged: wait for its successor, beating alone.
                return sup.workers() != [hung] and await one_beating()

            await until(replaced, 30, sup.log)
            assert not Path(f"/proc/{hung}").exists()  # SIGKILLed (a stopped process too)
            roll = await beats(client, KEYS, "worker")
            assert f"{socket.gethostname()}:{hung}" not in roll  # taken off the roll
            assert await sup.metric(http, "smsgw_worker_restarts_total", reason="heartbeat") == 1

            sup.proc.send_signal(signal.SIGTERM)
            assert await wait_exit(sup.proc, 30) == 0, sup.log()[-4000:]


@pytest.mark.timeout(90)
async def test_a_redis_outage_does_not_make_the_fleet_look_dead(
    tmp_path: Path, redis_server: RedisServer, redis_url: str
) -> None:
    # No worker can beat while Redis is away: once it is back, the supervisor gives the
    # workers BEAT_TTL_S to beat again before it judges their heartbeats.
    with fake_provider(tmp_path) as fake_url:
        config = write_config(tmp_path, redis_url, fake_url)
        async with supervise(config, tmp_path, "--min", "2", "--max", "2") as sup:
            async with aioredis.Redis.from_url(redis_url) as client:
                await until(lambda: all_beating(client, sup, 2), 30, sup.log)
            before = sup.workers()
            redis_server.stop()
            try:
                await asyncio.sleep(BEAT_TTL_S + 1)
                assert sup.events("redis_unreachable"), sup.log()[-4000:]
                assert sup.workers() == before
            finally:
                redis_server.start()
            async with aioredis.Redis.from_url(redis_url) as client:
                # As a Redis that kept its data would have it: the beats from before the
                # outage, now older than BEAT_TTL_S (until each worker beats again).
                seconds, _ = await client.time()
                old = {f"{socket.gethostname()}:{pid}": seconds - BEAT_TTL_S - 2 for pid in before}
                await client.zadd(KEYS.replicas("worker"), old)
                await until(lambda: all_beating(client, sup, 2), 15, sup.log)
                await asyncio.sleep(BEAT_TTL_S + 2 * INTERVAL_S)  # judged again from here on
                assert await all_beating(client, sup, 2)
            assert sup.events("redis_reachable")
            assert sup.workers() == before
            assert sup.events("worker_restarted") == []
            sup.proc.send_signal(signal.SIGTERM)
            assert await wait_exit(sup.proc, 30) == 0, sup.log()[-4000:]


async def all_beating(client: aioredis.Redis, sup: Supervise, count: int) -> bool:
    """`count` workers run, and each one is on the roll with a beat of the last BEAT_TTL_S."""
    workers = sup.workers()
    roll = await beats(client, KEYS, "worker")
    seconds, micros = await client.time()
    now = seconds + micros / 1e6
    names = [f"{socket.gethostname()}:{pid}" for pid in workers]
    return len(workers) == count and all(now - roll.get(n, 0.0) <= BEAT_TTL_S for n in names)


# A Redis queue needs a key to seal messages: derived from this otp.secret.
UNREACHABLE_REDIS = f'[redis]\nurl = "redis://127.0.0.1:1/0"\n[otp]\nsecret = "{OTP_SECRET}"\n'


@pytest.mark.parametrize(
    ("config", "args", "key"),
    [
        ("", [], "redis.url"),
        (UNREACHABLE_REDIS, ["--min", "3", "--max", "2"], "--min/--max"),
        (UNREACHABLE_REDIS, ["--max", "0"], "--min/--max"),
        (UNREACHABLE_REDIS, ["--interval", "0"], "--interval"),
        (
            '[redis]\nurl = "redis://127.0.0.1:1/0"\n[queue]\nbackend = "memory"\n',
            [],
            "queue.backend",
        ),
        (UNREACHABLE_REDIS + '[server]\nhost = "0.0.0.0"\n', [], "server.host"),
        ('[redis]\nurl = "redis://127.0.0.1:1/0"\n', [], "queue.secret"),
    ],
)
def test_a_bad_setup_exits_2_naming_the_key(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    config: str,
    args: list[str],
    key: str,
) -> None:
    for name in [n for n in os.environ if n.startswith("SMSGW_")]:
        monkeypatch.delenv(name)
    path = tmp_path / "smsgw.toml"
    path.write_text(config)
    assert cli.main(["supervise", "--config", str(path), *args]) == 2
    assert f"configuration error: {key}" in capsys.readouterr().err


def test_a_busy_metrics_port_exits_2_before_starting_workers(tmp_path: Path) -> None:
    config = tmp_path / "smsgw.toml"
    config.write_text(UNREACHABLE_REDIS)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = [sys.executable, "-m", "smsgw", "supervise", "--config", str(config)]
        result = subprocess.run(
            [*argv, "--metrics-port", str(port)],
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 2, result
    assert b"metrics_bind_failed" in result.stderr
    assert b"worker_started" not in result.stderr


def test_supervise_is_a_subcommand() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "smsgw", "supervise", "--help"],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        timeout=30,
        check=True,
    )
    for flag in ("--min", "--max", "--interval", "--metrics-port", "--config"):
        assert flag in result.stdout.decode()


@pytest.mark.parametrize(
    ("last_beat", "redis_now", "running_s", "silent"),
    [
        (100.0, 105.0, 60.0, None),  # beat 5 s ago
        (100.0, 100.0 + BEAT_TTL_S, 60.0, None),  # exactly the TTL: still alive
        (100.0, 111.5, 60.0, 11.5),  # silent beyond the TTL
        (None, 0.0, 5.0, None),  # a new worker not yet on the roll
        (None, 0.0, 31.0, 31.0),  # never beat within the grace (or fell off the roll)
    ],
)
def test_heartbeat_silence(
    last_beat: float | None, redis_now: float, running_s: float, silent: float | None
) -> None:
    assert heartbeat_silence(last_beat, redis_now, running_s, grace_s=30.0) == silent
