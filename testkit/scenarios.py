"""Fault scenarios on whole `smsgw serve` processes under load, shared by the tests in this
folder (small loads, assertions) and `bench.faults_table` (stated loads, a table).

Each scenario starts its own processes in `directory`, offers an open-loop load, injects one
fault, waits for the system to settle and returns a `FaultResult`: what the clients had
accepted, what reached the providers once, twice or never, audit events lost, and the time
to recover (each scenario's docstring says from when to when).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiobotocore.session import get_session

from testkit.fake_provider import max_in_sliding_window, twilio_provider_toml
from testkit.harness import (
    LIFECYCLE,
    FakeProviderProcess,
    Load,
    Metrics,
    Smsgw,
    clean_env,
    delivered_keys,
    smsgw_config,
    sqlite_events,
    vonage_provider,
)
from testkit.services import DynaliteServer, RedisServer, SentinelSet

__all__ = [
    "FaultResult",
    "disk_full",
    "dynamodb_outage",
    "hung_provider",
    "redis_restart",
    "replica_sigkill",
    "sentinel_failover",
]

# A message counts as held up by a fault when it took longer than this to reach a provider.
DELAYED_S = 0.5


@dataclass(slots=True)
class FaultResult:
    fault: str
    load: str
    accepted: int
    refused: int  # answered with an error (503 while Redis was away, ...): not accepted
    unknown: int  # no answer (the replica died mid-request): may or may not have been taken
    sent: int  # accepted messages the providers took at least once
    lost: int  # accepted messages no provider took
    duplicated: int  # extra copies the providers took
    possible_duplicates: int  # smsgw's own count of retries after an ambiguous answer
    audit_lost: int | None  # events recorded (or due) that never reached the audit store
    recover_s: float | None
    details: dict[str, Any] = field(default_factory=dict)
    lost_keys: list[str] = field(default_factory=list)


class _Processes:
    """Everything a scenario started, stopped at the end whatever happened."""

    def __init__(self) -> None:
        self._stops: list[Callable[[], None]] = []

    def add(self, stop: Callable[[], None]) -> None:
        self._stops.append(stop)

    def stop_all(self) -> None:
        for stop in reversed(self._stops):
            with contextlib.suppress(Exception):
                stop()


@contextlib.asynccontextmanager
async def _scenario() -> AsyncIterator[tuple[_Processes, aiohttp.ClientSession]]:
    processes = _Processes()
    timeout = aiohttp.ClientTimeout(total=15)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            yield processes, session
    finally:
        await asyncio.to_thread(processes.stop_all)


def _replica(
    processes: _Processes, directory: Path, name: str, providers: Sequence[str], **sections: Any
) -> Smsgw:
    sections.setdefault("audit", {})
    sections["audit"] = {
        "path": str(directory / f"{name}-audit.sqlite3"),
        "spool_dir": str(directory / f"{name}-spool"),
        **sections["audit"],
    }
    replica = Smsgw(directory, name, smsgw_config(providers, **sections))
    processes.add(replica.stop)
    return replica.start()


def _fake(processes: _Processes, directory: Path, name: str, *args: str) -> FakeProviderProcess:
    fake = FakeProviderProcess(directory, name, *args)
    processes.add(fake.stop)
    return fake


async def _wait_delivered(
    session: aiohttp.ClientSession,
    fakes: Sequence[FakeProviderProcess],
    load: Load,
    timeout_s: float,
) -> tuple[dict[str, list[float]], list[dict[str, Any]]]:
    """Provider records once every accepted message arrived, or whatever came by the bound
    (then a second longer, to see late duplicates too)."""
    wanted = {offer.key for offer in load.accepted()}
    deadline = time.monotonic() + timeout_s
    while True:
        stats = [await fake.stats(session) for fake in fakes]
        taken = delivered_keys(stats)
        if wanted <= taken.keys() or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.0)
    stats = [await fake.stats(session) for fake in fakes]
    return delivered_keys(stats), stats


def _tally(load: Load, taken: dict[str, list[float]]) -> dict[str, Any]:
    accepted = load.accepted()
    lost = sorted(offer.key for offer in accepted if offer.key not in taken)
    offered_keys = set(load.offers)
    return {
        "accepted": len(accepted),
        "refused": load.count("refused"),
        "unknown": load.count("unknown"),
        "sent": len(accepted) - len(lost),
        "lost": len(lost),
        "lost_keys": lost,
        # Extra copies of anything offered (an unanswered batch may have been taken too).
        "duplicated": sum(len(ts) - 1 for key, ts in taken.items() if key in offered_keys),
    }


def _unknown_taken(load: Load, taken: dict[str, list[float]]) -> int:
    """Messages offered without an answer (the replica died mid-request) that were sent."""
    return sum(1 for o in load.offers.values() if o.outcome == "unknown" and o.key in taken)


def _histogram(times: Sequence[float], start: float, width: float, bins: int) -> list[int]:
    counts = [0] * bins
    for t in times:
        index = int((t - start) // width)
        if 0 <= index < bins:
            counts[index] += 1
    return counts


def _lifecycle_gaps(load: Load, kinds: dict[str, list[str]]) -> int:
    """Lifecycle events (accepted, queued, sending, sent) missing from the trails of the
    accepted messages."""
    missing = 0
    for offer in load.accepted():
        have = set(kinds.get(offer.message_id or "", ()))
        missing += sum(1 for kind in LIFECYCLE if kind not in have)
    return missing


async def _sqlite_audit(
    session: aiohttp.ClientSession, replicas: Sequence[Smsgw], load: Load
) -> tuple[int, dict[str, int]]:
    """Events the running replicas recorded minus rows in their SQLite files, once each has
    stored what it holds; and the lifecycle events missing from accepted messages' trails."""
    for replica in replicas:
        await _audit_caught_up(session, replica, timeout_s=30)
    recorded = sum([(await r.metrics(session)).audit("recorded") for r in replicas])
    kinds = sqlite_events(r.directory / f"{r.name}-audit.sqlite3" for r in replicas)
    rows = sum(len(k) for k in kinds.values())
    return recorded - rows, {"lifecycle_gaps": _lifecycle_gaps(load, kinds)}


def _recovery_after(load: Load, taken: dict[str, list[float]], since: float) -> float:
    """From `since` until the last message held up by the fault reached a provider."""
    last = since
    for offer in load.accepted():
        arrivals = taken.get(offer.key)
        if arrivals and min(arrivals) - offer.at > DELAYED_S:
            last = max(last, min(arrivals))
    return last - since


def _last_copy_after(load: Load, taken: dict[str, list[float]], since: float) -> float:
    """From `since` until the last copy of a message accepted before it reached a provider:
    the messages a dead replica held arrive (again) only once another one took them over."""
    last = since
    for offer in load.accepted():
        if offer.at < since and offer.key in taken:
            last = max(last, *taken[offer.key])
    return last - since


async def replica_sigkill(
    directory: Path,
    *,
    rate: float = 300.0,
    seconds: float = 6.0,
    kill_at: float = 2.5,
    visibility_timeout_s: float = 2.0,
    latency_ms: float = 50.0,
) -> FaultResult:
    """Two replicas share a Redis queue; one is SIGKILLed mid-run while both take batches.

    Recovery: from the kill until the last copy of a message accepted before it reached the
    provider (what the dead replica held is claimed after the visibility timeout). Audit: each
    replica keeps its own SQLite file; a crash loses the events only in its memory (at most
    the last two flush intervals, documented), counted as lifecycle events missing.
    """
    async with _scenario() as (processes, session):
        redis = RedisServer(_mkdir(directory / "redis"), persistent=False)
        redis.start()
        processes.add(redis.stop)
        fake = _fake(processes, directory, "fake", "--latency-ms", str(latency_ms))
        providers = [twilio_provider_toml(fake.url)]
        replicas = [
            _replica(
                processes,
                directory,
                name,
                providers,
                redis={"url": redis.url},
                queue={"visibility_timeout_s": visibility_timeout_s},
            )
            for name in ("a", "b")
        ]
        load = Load("kill")
        killed_at = 0.0

        async def kill() -> None:
            nonlocal killed_at
            await asyncio.sleep(kill_at)
            killed_at = time.monotonic()
            await asyncio.to_thread(replicas[0].kill)

        fault = asyncio.create_task(kill())
        await load.run(
            session, lambda: [r for r in replicas if r.alive], rate=rate, seconds=seconds
        )
        await fault
        taken, _ = await _wait_delivered(session, [fake], load, visibility_timeout_s * 4 + 20)
        survivor = await replicas[1].metrics(session)
        claimed = sum(int(e.get("messages", 0)) for e in replicas[1].log_events("claimed"))
        await asyncio.to_thread(replicas[1].stop)  # flushes its audit
    tally = _tally(load, taken)
    kinds = sqlite_events(directory / f"{name}-audit.sqlite3" for name in ("a", "b"))
    return FaultResult(
        fault="replica SIGKILLed (Redis queue)",
        load=f"{rate:g} msg/s offered to 2 replicas for {seconds:g} s",
        possible_duplicates=survivor.dispatch("possible_duplicates"),
        audit_lost=_lifecycle_gaps(load, kinds),
        recover_s=_last_copy_after(load, taken, killed_at),
        details={
            "claimed": claimed,
            "duplicates_skipped": survivor.dispatch("duplicates_skipped"),
            "unanswered_but_sent": _unknown_taken(load, taken),
        },
        **tally,
    )


@dataclass(slots=True)
class _Run:
    """Two replicas on one Redis through a fault: what the clients and the provider saw."""

    load: Load
    replicas: list[Smsgw]
    taken: dict[str, list[float]]
    arrivals: list[float]
    metrics: list[Metrics]
    alive: bool
    audit_lost: int
    audit_details: dict[str, int]

    @property
    def possible_duplicates(self) -> int:
        return sum(m.dispatch("possible_duplicates") for m in self.metrics)

    def answering_again_s(self, since: float) -> float | None:
        """From `since` until both replicas answered 202 again."""
        answered = [(o.replica, o.answered_at) for o in self.load.accepted() if o.at >= since]
        firsts = [
            min((at for who, at in answered if who == r.name), default=None) for r in self.replicas
        ]
        return None if None in firsts else max(t for t in firsts if t is not None) - since

    def recover_s(self, since: float) -> float | None:
        """From `since` until both replicas answer 202 again and the provider gets sends
        again (whichever is later); None if either never happened."""
        answering = self.answering_again_s(since)
        sending = min((t for t in self.arrivals if t >= since), default=None)
        if answering is None or sending is None:
            return None
        return max(answering, sending - since)


async def _two_replicas_through(
    processes: _Processes,
    session: aiohttp.ClientSession,
    directory: Path,
    fake: FakeProviderProcess,
    redis: dict[str, Any],
    fault: Callable[[], Awaitable[None]],
    *,
    tag: str,
    rate: float,
    seconds: float,
    provider_rate: float,
    otp_per_tick: int = 0,
) -> _Run:
    """Replicas a and b on `redis`, offered `rate` msg/s for `seconds` while `fault` runs;
    then until everything accepted reached `fake` (the one provider, at `provider_rate`)
    and the audit caught up."""
    providers = [twilio_provider_toml(fake.url, rate=provider_rate)]
    replicas = [_replica(processes, directory, name, providers, redis=redis) for name in ("a", "b")]
    load = Load(tag)
    injected = asyncio.create_task(fault())
    await load.run(session, lambda: replicas, rate=rate, seconds=seconds, otp_per_tick=otp_per_tick)
    await injected
    backlog_s = rate * seconds / provider_rate
    taken, stats = await _wait_delivered(session, [fake], load, backlog_s + 30)
    alive = all(r.alive for r in replicas)
    metrics = [await r.metrics(session) for r in replicas]
    audit_lost, audit_details = await _sqlite_audit(session, replicas, load)
    return _Run(
        load, replicas, taken, stats[0]["arrivals"], metrics, alive, audit_lost, audit_details
    )


async def redis_restart(
    directory: Path,
    *,
    persistent: bool = True,
    rate: float = 250.0,
    provider_rate: float = 200.0,
    seconds: float = 8.0,
    restart_at: float = 3.0,
    down_s: float = 1.0,
) -> FaultResult:
    """Two replicas share Redis (queue, limiter, OTP state); Redis is stopped mid-run and
    started again `down_s` later in place (with its append-only file when `persistent`).

    Rate: no sliding second at the provider may hold more than `provider_rate` sends.
    Recovery: from Redis being back until the replicas, not restarted, both accept a
    request again and the provider gets a message again (whichever is later).
    """
    async with _scenario() as (processes, session):
        redis = RedisServer(_mkdir(directory / "redis"), persistent=persistent)
        redis.start()
        processes.add(redis.stop)
        fake = _fake(processes, directory, "fake", "--latency-ms", "20")
        back_at = 0.0

        async def restart() -> None:
            nonlocal back_at
            await asyncio.sleep(restart_at)
            await asyncio.to_thread(redis.stop)
            await asyncio.sleep(down_s)
            await asyncio.to_thread(redis.start)
            back_at = time.monotonic()

        run = await _two_replicas_through(
            processes, session, directory, fake, {"url": redis.url}, restart,
            tag="redis", rate=rate, seconds=seconds, provider_rate=provider_rate,
        )  # fmt: skip
    recover, busiest = run.recover_s(back_at), max_in_sliding_window(run.arrivals, 1.0)
    return FaultResult(
        fault=f"Redis restarted ({'append-only file' if persistent else 'no persistence'})",
        load=f"{rate:g} msg/s offered to 2 replicas, provider rate {provider_rate:g}/s",
        possible_duplicates=run.possible_duplicates,
        audit_lost=run.audit_lost,
        recover_s=recover,
        details={
            **run.audit_details,
            "max_sends_in_1s": busiest,
            "provider_rate": provider_rate,
            "replicas_alive": run.alive,
            "statuses": dict(run.load.statuses),
        },
        **_tally(run.load, run.taken),
    )


async def sentinel_failover(
    directory: Path,
    *,
    replica_acks: int = 1,
    redis_replicas: int = 2,
    rate: float = 300.0,
    provider_rate: float = 200.0,
    seconds: float = 8.0,
    kill_at: float = 3.0,
    replication_stall_s: float = 0.0,
    otp_per_tick: int = 0,
    coordinated: bool = False,
) -> FaultResult:
    """Two replicas on a Sentinel-watched Redis (a primary, `redis_replicas` replicas and
    three sentinels) with redis.min_replicas_ack = `replica_acks`; the primary is SIGKILLed
    mid-run and the sentinels promote a replica.

    `replication_stall_s` > 0: the replicas are cut off that long before the kill, so the
    primary dies holding writes nobody has (as when replication lags under load): with
    replica_acks 0 those accepted messages are lost, with 1 their puts wait and answer 503
    instead. `coordinated`: no kill but `SENTINEL FAILOVER` (the old primary is demoted
    while it runs, and the new one is promoted within a fraction of a second: where the
    limiter's hold after a change matters most). Recovery: from the kill until both smsgw
    replicas accept again
    and the provider gets a message again (whichever is later); `failover_s` in the details
    is from the kill until the sentinels name the new primary.
    """
    async with _scenario() as (processes, session):
        redis_set = SentinelSet(_mkdir(directory / "redis"), replicas=redis_replicas)
        await asyncio.to_thread(redis_set.start)
        processes.add(redis_set.stop)
        fake = _fake(processes, directory, "fake", "--latency-ms", "20")
        redis = {"sentinels": redis_set.sentinels, "min_replicas_ack": replica_acks}
        killed_at = promoted_at = 0.0

        async def fail_over() -> None:
            nonlocal killed_at, promoted_at
            await asyncio.sleep(kill_at - replication_stall_s)
            if replication_stall_s > 0:
                await asyncio.to_thread(redis_set.cut_replication)
                await asyncio.sleep(replication_stall_s)
            if coordinated:
                old = redis_set.primary()
                await asyncio.to_thread(redis_set.fail_over)
            else:
                old = await asyncio.to_thread(redis_set.kill_primary)
            killed_at = time.monotonic()
            await asyncio.to_thread(redis_set.wait_for_failover, old.port, 30.0)
            promoted_at = time.monotonic()

        run = await _two_replicas_through(
            processes, session, directory, fake, redis, fail_over,
            tag="failover", rate=rate, seconds=seconds, provider_rate=provider_rate,
            otp_per_tick=otp_per_tick,
        )  # fmt: skip
    load, taken, metrics = run.load, run.taken, run.metrics
    refused_sent = sum(1 for o in load.offers.values() if o.outcome == "refused" and o.key in taken)
    # When each duplicate's copies arrived, from the kill (s): what caused them.
    copies = {
        key: [round(t - killed_at, 3) for t in times]
        for key, times in taken.items()
        if len(times) > 1
    }
    stall = f", replication stalled {replication_stall_s:g} s first" if replication_stall_s else ""
    how = "SENTINEL FAILOVER" if coordinated else f"primary SIGKILLed{stall}"
    otps = f" + {otp_per_tick * 10} OTP/s" if otp_per_tick else ""
    return FaultResult(
        fault=f"Sentinel failover ({how}), min_replicas_ack {replica_acks}",
        load=f"{rate:g} msg/s{otps} offered to 2 replicas, provider rate {provider_rate:g}/s",
        possible_duplicates=run.possible_duplicates,
        audit_lost=run.audit_lost,
        recover_s=run.recover_s(killed_at),
        details={
            **run.audit_details,
            "failover_s": round(promoted_at - killed_at, 2),
            "answering_again_s": run.answering_again_s(killed_at),
            "max_sends_in_1s": max_in_sliding_window(run.arrivals, 1.0),
            "provider_rate": provider_rate,
            "replicas_alive": run.alive,
            "statuses": dict(load.statuses),
            "refused_but_sent": refused_sent,
            "otps_accepted": sum(1 for o in load.accepted() if o.key.startswith("otp:")),
            "duplicate_arrivals": dict(list(copies.items())[:10]),
            # Arrivals per 250 ms from 4 s before the kill to 16 s after: where a burst was.
            "arrivals_per_250ms": _histogram(run.arrivals, killed_at - 4.0, 0.25, 80),
            "primary_changes": sum(m.value("smsgw_redis_primary_changes_total") for m in metrics),
            "replica_ack_timeouts": sum(
                m.value("smsgw_queue_replica_ack_timeouts_total") for m in metrics
            ),
            "unreplicated_puts": sum(
                m.value("smsgw_queue_unreplicated_puts_total") for m in metrics
            ),
        },
        **_tally(load, taken),
    )


async def dynamodb_outage(
    directory: Path,
    *,
    rate: float = 100.0,
    before_s: float = 3.0,
    outage_s: float = 30.0,
    after_s: float = 3.0,
) -> FaultResult:
    """One replica writes its audit to DynamoDB (dynalite); dynalite is stopped for
    `outage_s` under load, then started again with its data.

    Audit lost: events the replica recorded minus items in the table once it caught up,
    read with plain aiobotocore. Recovery: from dynalite being back until the spool is
    replayed and empty.
    """
    async with _scenario() as (processes, session):
        dynalite = DynaliteServer(_mkdir(directory / "dynalite"))
        dynalite.start()
        processes.add(dynalite.stop)
        fake = _fake(processes, directory, "fake", "--latency-ms", "10")
        audit = {
            "backend": "dynamodb",
            "endpoint_url": dynalite.url,
            "access_key_id": "local",
            "secret_access_key": "local",
            "table": "faults-audit",
        }
        config = smsgw_config([], audit=audit)
        await asyncio.to_thread(_migrate, directory, config)
        replica = _replica(processes, directory, "a", [twilio_provider_toml(fake.url)], audit=audit)
        load = Load("dynamo")
        back_at = 0.0
        recovered_at: float | None = None

        async def outage() -> None:
            nonlocal back_at, recovered_at
            await asyncio.sleep(before_s)
            await asyncio.to_thread(dynalite.stop)
            await asyncio.sleep(outage_s)
            await asyncio.to_thread(dynalite.start)
            back_at = time.monotonic()
            recovered_at = await _audit_caught_up(session, replica, timeout_s=120)

        fault = asyncio.create_task(outage())
        await load.run(session, lambda: [replica], rate=rate, seconds=before_s + outage_s + after_s)
        await fault
        taken, _ = await _wait_delivered(session, [fake], load, 30)
        await _audit_caught_up(session, replica, timeout_s=60)
        metrics = await replica.metrics(session)
        kinds = await _dynamodb_events(dynalite.url, audit["table"])
    stored_items = sum(len(k) for k in kinds.values())
    return FaultResult(
        fault=f"DynamoDB (dynalite) down {outage_s:g} s",
        load=f"{rate:g} msg/s offered to 1 replica",
        possible_duplicates=metrics.dispatch("possible_duplicates"),
        audit_lost=metrics.audit("recorded") - stored_items,
        recover_s=None if recovered_at is None else recovered_at - back_at,
        details={
            "recorded": metrics.audit("recorded"),
            "spooled": metrics.audit("spooled"),
            "replayed": metrics.audit("replayed"),
            "store_failures": metrics.audit("store_failures"),
            "items": stored_items,
            "lifecycle_gaps": _lifecycle_gaps(load, kinds),
        },
        **_tally(load, taken),
    )


async def hung_provider(
    directory: Path,
    *,
    rate: float = 200.0,
    seconds: float = 10.0,
    fault_at: float = 3.0,
    timeout_s: float = 1.5,
    otp_per_tick: int = 1,
) -> FaultResult:
    """Twilio and Vonage (two fake processes, weight 1:1) behind one replica; Twilio starts
    accepting connections and never answering. Messages and OTPs keep coming.

    Recovery: from the fault until the last message it held up reached Vonage. Details:
    the slowest message offered after the fault, the longest pause in Vonage's sends after
    the fault, and the fewest sends Vonage got in any second once failover had time to
    happen (the dispatcher must not starve).
    """
    async with _scenario() as (processes, session):
        twilio = _fake(processes, directory, "twilio")
        vonage = _fake(processes, directory, "vonage")
        providers = [
            twilio_provider_toml(twilio.url, timeout_s=timeout_s, connect_timeout_s=1.0),
            vonage_provider(vonage.url, timeout_s=timeout_s, connect_timeout_s=1.0),
        ]
        replica = _replica(processes, directory, "a", providers)
        load = Load("hang")
        hung_at = 0.0

        async def hang() -> None:
            nonlocal hung_at
            await asyncio.sleep(fault_at)
            await twilio.control(session, hang=1.0)
            hung_at = time.monotonic()

        fault = asyncio.create_task(hang())
        started = time.monotonic()
        await load.run(
            session, lambda: [replica], rate=rate, seconds=seconds, otp_per_tick=otp_per_tick
        )
        await fault
        taken, stats = await _wait_delivered(session, [twilio, vonage], load, 30)
        metrics = await replica.metrics(session)
        audit_lost, audit_details = await _sqlite_audit(session, [replica], load)
    ended = started + seconds
    latencies = [
        min(taken[o.key]) - o.at for o in load.accepted() if o.at >= hung_at and o.key in taken
    ]
    otp_latencies = [
        min(taken[o.key]) - o.at
        for o in load.accepted()
        if o.at >= hung_at and o.key.startswith("otp:") and o.key in taken
    ]
    # Vonage gets about half the load before failover and all of it after: a pause in its
    # sends while messages keep coming means every worker was stuck on Twilio.
    healthy = sorted(t for t in stats[1]["arrivals"] if hung_at <= t < ended)
    gaps = [b - a for a, b in zip([hung_at, *healthy], [*healthy, ended], strict=True)]
    settled = hung_at + timeout_s + 1.0
    per_second = [
        sum(1 for t in healthy if settled + s <= t < settled + s + 1)
        for s in range(int(ended - settled))
    ]
    return FaultResult(
        fault=f"provider accepts, never answers (timeout {timeout_s:g} s)",
        load=f"{rate:g} msg/s + {otp_per_tick * 10} OTP/s offered to 1 replica, 2 providers",
        possible_duplicates=metrics.dispatch("possible_duplicates"),
        audit_lost=audit_lost,
        recover_s=_recovery_after(load, taken, hung_at),
        details={
            **audit_details,
            "max_latency_s": round(max(latencies, default=0.0), 3),
            "max_otp_latency_s": round(max(otp_latencies, default=0.0), 3),
            "vonage_longest_pause_s": round(max(gaps), 3),
            "vonage_min_per_s": min(per_second, default=0),
            "offered_per_s": rate + otp_per_tick * 10,
            "breaker_opened": int(metrics.value("smsgw_breaker_transitions_total", state="open")),
            "hung_requests": stats[0]["by_status"].get("0", 0),
        },
        **_tally(load, taken),
    )


async def disk_full(
    directory: Path,
    *,
    rate: float = 100.0,
    before_s: float = 2.0,
    full_s: float = 6.0,
    after_s: float = 3.0,
    disk_mb: int = 16,
) -> FaultResult:
    """One replica keeps its SQLite audit and its spool on a small tmpfs, which is filled to
    the last byte for `full_s` under load, then freed.

    Expected: a clear error in the log (audit_store_unavailable / audit_spool_failed naming
    the full disk), SMS unaffected, and every recorded event stored once space is back.
    Audit lost: events recorded minus rows in the SQLite file. Recovery: from freeing the
    disk until the writer has stored everything it recorded.
    """
    disk = _mkdir(directory / "disk")
    async with _scenario() as (processes, session):
        _mount_tmpfs(disk, disk_mb)
        processes.add(lambda: _unmount(disk))
        fake = _fake(processes, directory, "fake", "--latency-ms", "10")
        audit = {"path": str(disk / "audit.sqlite3"), "spool_dir": str(disk / "spool")}
        replica = _replica(processes, directory, "a", [twilio_provider_toml(fake.url)], audit=audit)
        load = Load("disk")
        freed_at = 0.0
        recovered_at: float | None = None

        async def fill() -> None:
            nonlocal freed_at, recovered_at
            await asyncio.sleep(before_s)
            filler = await asyncio.to_thread(_fill, disk)
            await asyncio.sleep(full_s)
            filler.unlink()
            freed_at = time.monotonic()
            recovered_at = await _audit_caught_up(session, replica, timeout_s=60)

        fault = asyncio.create_task(fill())
        await load.run(session, lambda: [replica], rate=rate, seconds=before_s + full_s + after_s)
        await fault
        taken, _ = await _wait_delivered(session, [fake], load, 30)
        await _audit_caught_up(session, replica, timeout_s=30)
        metrics = await replica.metrics(session)
        errors = replica.log_events("audit_spool_failed") + replica.log_events(
            "audit_store_unavailable"
        )
        await asyncio.to_thread(replica.stop)
        kinds = sqlite_events([disk / "audit.sqlite3"])
    rows = sum(len(k) for k in kinds.values())
    return FaultResult(
        fault=f"disk full under SQLite audit + spool ({full_s:g} s)",
        load=f"{rate:g} msg/s offered to 1 replica",
        possible_duplicates=metrics.dispatch("possible_duplicates"),
        audit_lost=metrics.audit("recorded") - rows,
        recover_s=None if recovered_at is None else recovered_at - freed_at,
        details={
            "recorded": metrics.audit("recorded"),
            "rows": rows,
            "spool_failures": metrics.audit("spool_failures"),
            "store_failures": metrics.audit("store_failures"),
            "errors_logged": sorted({f"{e['event']}: {e.get('detail', '')}" for e in errors}),
            "lifecycle_gaps": _lifecycle_gaps(load, kinds),
        },
        **_tally(load, taken),
    )


# -- helpers ---------------------------------------------------------------------------


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _migrate(directory: Path, config: str) -> None:
    path = directory / "migrate.toml"
    path.write_text(config)
    subprocess.run(
        [sys.executable, "-m", "smsgw", "migrate", "--config", str(path)],
        cwd=directory,
        env=clean_env(),
        check=True,
        capture_output=True,
        timeout=60,
    )


async def _audit_caught_up(
    session: aiohttp.ClientSession, replica: Smsgw, timeout_s: float
) -> float | None:
    """When the replica had stored every event it recorded (nothing buffered or spooled)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        metrics = await replica.metrics(session)
        if _caught_up(metrics):
            return time.monotonic()
        await asyncio.sleep(0.1)
    return None


def _caught_up(metrics: Metrics) -> bool:
    recorded = metrics.audit("recorded")
    done = metrics.audit("stored") + metrics.audit("replayed")
    backlog = metrics.value("smsgw_audit_backlog_events")
    spool = metrics.value("smsgw_audit_spool_bytes")
    return backlog == 0 and spool == 0 and done >= recorded


async def _dynamodb_events(endpoint_url: str, table: str) -> dict[str, list[str]]:
    """Event kinds by message id, scanned with plain aiobotocore (not smsgw's store)."""
    kinds: dict[str, list[str]] = {}
    async with get_session().create_client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url=endpoint_url,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    ) as dynamodb:
        kwargs: dict[str, Any] = {"TableName": table}
        while True:
            page = await dynamodb.scan(**kwargs)
            for item in page["Items"]:
                kinds.setdefault(item["id"]["S"], []).append(_item_kind(item))
            if "LastEvaluatedKey" not in page:
                return kinds
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _item_kind(item: dict[str, Any]) -> str:
    return str(item["kind"]["S"])


def _mount_tmpfs(path: Path, size_mb: int) -> None:
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise PermissionError(f"cannot mount a tmpfs (needs root): {result.stderr.strip()}")


def _unmount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True, check=False)


def _fill(disk: Path) -> Path:
    """Take every free byte of `disk`; the file to delete to give them back."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):
            chunk = b"\0" * size
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, chunk)
    finally:
        os.close(fd)
    return filler
