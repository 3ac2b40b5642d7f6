"""Put, get and ack throughput of the Redis queue against the memory queue, in one run.

    .venv/bin/python -m bench.queue_throughput [--messages 20000] [--batch 500]
        [--workers 64] [--redis-url redis://...]

Without --redis-url a private redis-server (no persistence) is started on a free port.
Phases, each timed alone on uvloop: `put` (put_many in batches of --batch), then `get+ack`
(--workers tasks each taking a message and acking it at once, as dispatcher workers do
without a provider in between). For Redis, `INFO commandstats` is reset before and read
after each phase: "commands" counts every command Redis ran, including those run inside
our Lua scripts (one XADD per message is the floor for a stream queue); "round trips" are
the calls this process made (scripts count once), from the queue's own counter.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvloop
from redis.asyncio import Redis

from smsgw.queue import MemoryQueue, Message, RedisQueue
from smsgw.queue.sealing import QueueCipher
from smsgw.redis_keys import RedisKeys
from smsgw.settings import QueueSettings
from testkit.services import RedisServer


@dataclass(frozen=True, slots=True)
class PhaseResult:
    backend: str
    phase: str
    messages: int
    seconds: float
    round_trips: int | None = None
    commands: int | None = None
    top: str = ""

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


@contextmanager
def private_redis() -> Iterator[str]:
    """A private redis-server without persistence, on a free port, for the run."""
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory))
        server.start()
        try:
            yield server.url
        finally:
            server.stop()


def make_messages(count: int) -> list[Message]:
    return [
        Message(
            to=f"+1415{2000000 + i}",
            country="US",
            body=f"Your code is {i % 1000000:06d}. It expires in 10 minutes.",
            client="bench",
            priority="high" if i % 10 == 0 else "normal",
            code_span=(13, 19),
            expires_at=time.time() + 600,
        )
        for i in range(count)
    ]


async def put_phase(queue: MemoryQueue | RedisQueue, messages: list[Message], batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(messages), batch):
        await queue.put_many(messages[start : start + batch])
    return time.perf_counter() - started


class Pacer:
    """Spaces takers `1 / rate` apart, as the provider limiter spaces sends."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = time.monotonic()

    async def wait(self) -> None:
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)


async def get_ack_phase(
    queue: MemoryQueue | RedisQueue, count: int, workers: int, rate: float | None = None
) -> float:
    remaining = count
    done = asyncio.Event()
    pacer = None if rate is None else Pacer(rate)

    async def work() -> None:
        nonlocal remaining
        while True:
            message = await queue.get()
            if pacer is not None:
                await pacer.wait()
            await queue.ack(message)
            remaining -= 1
            if remaining == 0:
                done.set()

    started = time.perf_counter()
    tasks = [asyncio.create_task(work()) for _ in range(workers)]
    await done.wait()
    await queue.wait_empty()  # for Redis: every ack written
    seconds = time.perf_counter() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return seconds


async def command_counts(redis: Redis) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name != "cmdstat_config|resetstat"
    }


async def measured_redis_phase(
    redis: Redis, queue: RedisQueue, phase: str, count: int, run: asyncio.Future[float]
) -> PhaseResult:
    calls_before = queue.stats.redis_calls
    seconds = await run
    round_trips = queue.stats.redis_calls - calls_before
    counts = await command_counts(redis)
    await redis.config_resetstat()
    top = sorted(counts.items(), key=lambda item: -item[1])[:4]
    top_text = ", ".join(f"{name} {calls / count:.3f}" for name, calls in top)
    return PhaseResult("redis", phase, count, seconds, round_trips, sum(counts.values()), top_text)


def paced_phase(rate: float) -> str:
    return f"get+ack paced at {rate:g}/s"


async def run_memory(
    messages: list[Message], batch: int, workers: int, rate: float
) -> list[PhaseResult]:
    queue = MemoryQueue(max_size=len(messages))
    put_s = await put_phase(queue, messages, batch)
    get_s = await get_ack_phase(queue, len(messages), workers)
    paced = paced_count(len(messages), rate)
    await put_phase(queue, messages[:paced], batch)
    paced_s = await get_ack_phase(queue, paced, workers, rate)
    return [
        PhaseResult("memory", "put", len(messages), put_s),
        PhaseResult("memory", "get+ack", len(messages), get_s),
        PhaseResult("memory", paced_phase(rate), paced, paced_s),
    ]


def paced_count(messages: int, rate: float) -> int:
    # About two seconds of paced work: enough for steady batches, short enough to bound.
    return min(messages, int(rate * 2))


async def run_redis(
    url: str, messages: list[Message], batch: int, workers: int, rate: float
) -> list[PhaseResult]:
    redis = Redis.from_url(url)
    keys = RedisKeys("bench:")
    await redis.delete(keys.stream("high"), keys.stream("normal"), keys.delayed)
    settings = QueueSettings(max_size=len(messages))
    queue = RedisQueue(redis, keys, settings, "bench", cipher=QueueCipher("bench-" * 6))
    try:
        await redis.config_resetstat()
        count = len(messages)
        put = asyncio.ensure_future(put_phase(queue, messages, batch))
        results = [await measured_redis_phase(redis, queue, "put", count, put)]
        get = asyncio.ensure_future(get_ack_phase(queue, count, workers))
        results.append(await measured_redis_phase(redis, queue, "get+ack", count, get))
        paced = paced_count(count, rate)
        await put_phase(queue, messages[:paced], batch)
        await redis.config_resetstat()
        get = asyncio.ensure_future(get_ack_phase(queue, paced, workers, rate))
        results.append(await measured_redis_phase(redis, queue, paced_phase(rate), paced, get))
        assert await queue.total() == 0, "messages left behind"
        return results
    finally:
        await queue.close()
        await redis.aclose()


def table(results: list[PhaseResult], memory_rates: dict[str, float]) -> str:
    lines = [
        "| backend | phase | messages | msg/s | vs memory | round trips / msg "
        "| commands / msg (incl. inside Lua) | top commands / msg |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        ratio = r.rate / memory_rates[r.phase]
        trips = "-" if r.round_trips is None else f"{r.round_trips / r.messages:.4f}"
        commands = "-" if r.commands is None else f"{r.commands / r.messages:.3f}"
        lines.append(
            f"| {r.backend} | {r.phase} | {r.messages} | {r.rate:,.0f} | {ratio:.3f} "
            f"| {trips} | {commands} | {r.top or '-'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.queue_throughput")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500, help="messages per put_many")
    parser.add_argument("--workers", type=int, default=64, help="concurrent get+ack tasks")
    parser.add_argument("--rate", type=float, default=5000, help="pace of the paced phase")
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    messages = make_messages(args.messages)

    async def run(url: str) -> list[PhaseResult]:
        memory = await run_memory(messages, args.batch, args.workers, args.rate)
        fresh = make_messages(args.messages)
        redis = await run_redis(url, fresh, args.batch, args.workers, args.rate)
        return memory + redis

    def go(url: str) -> list[PhaseResult]:
        # Bounded: a stuck run fails instead of hanging the caller.
        return uvloop.run(asyncio.wait_for(run(url), timeout=300))

    if args.redis_url:
        results = go(args.redis_url)
    else:
        with private_redis() as url:
            results = go(url)
    memory_rates = {r.phase: r.rate for r in results if r.backend == "memory"}
    print(f"`{' '.join(['.venv/bin/python -m bench.queue_throughput', *sys.argv[1:]])}`\n")
    print(table(results, memory_rates))


if __name__ == "__main__":
    main()
