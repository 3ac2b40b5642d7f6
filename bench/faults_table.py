"""Faults under load, one table: what each fault costs in messages, duplicates, audit events
and time.

    .venv/bin/python -m bench.faults_table [--only NAME ...] [--keep]

Runs the scenarios of the fault suite (`testkit/scenarios.py`, where each one's
docstring says exactly what it does and measures) at the loads stated in the table, all as
real processes on loopback: `smsgw serve` replicas, fake providers (`testkit.fake_provider`),
redis-server, dynalite. Needs what `scripts/test` installs (redis-server, node_modules), and
root for the disk-full scenario (it mounts a small tmpfs).

Columns: accepted = messages the gateway answered 202 for; sent = of those, taken by a
provider at least once; lost = accepted, never taken; duplicated = extra copies taken (with
smsgw's own count of possible duplicates beside it); audit events lost = events recorded (or,
after a crash, due) that never reached the audit store; time to recover = per scenario:
replica kill: until the last message the dead replica held was sent by the survivor;
Redis: from Redis back until both replicas accept and the provider gets sends again;
Sentinel: the same from the kill of the primary (the failover itself in the notes);
DynamoDB, disk: from the store (or space) back until every spooled or held event is stored;
hung provider: from the fault until the last message it held up reached the other provider.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from testkit.scenarios import (
    FaultResult,
    disk_full,
    dynamodb_outage,
    hung_provider,
    redis_restart,
    replica_sigkill,
    sentinel_failover,
)

Scenario = Callable[[Path], Awaitable[FaultResult]]

SCENARIOS: dict[str, Scenario] = {
    "replica-kill": lambda d: replica_sigkill(
        d, rate=500.0, seconds=10.0, kill_at=4.0, visibility_timeout_s=2.0, latency_ms=200.0
    ),
    "redis-restart": lambda d: redis_restart(
        d, persistent=True, rate=400.0, provider_rate=200.0, seconds=8.0, down_s=2.0
    ),
    "redis-restart-volatile": lambda d: redis_restart(
        d, persistent=False, rate=400.0, provider_rate=200.0, seconds=8.0, down_s=2.0
    ),
    # Redis primary SIGKILLed, Sentinel promotes one of its two replicas (redis-ha.md).
    "sentinel-failover": lambda d: sentinel_failover(
        d, replica_acks=1, redis_replicas=1, seconds=8.0, otp_per_tick=1
    ),
    # SENTINEL FAILOVER: the old primary demoted while it runs, promoted within a second.
    "sentinel-coordinated": lambda d: sentinel_failover(
        d, replica_acks=1, rate=600.0, provider_rate=400.0, seconds=8.0, coordinated=True
    ),
    # ... with the replicas cut off for 1 s first: what only the old primary had.
    "sentinel-lagging-acks-0": lambda d: sentinel_failover(
        d, replica_acks=0, seconds=8.0, replication_stall_s=1.0
    ),
    "sentinel-lagging-acks-1": lambda d: sentinel_failover(
        d, replica_acks=1, seconds=8.0, replication_stall_s=1.0
    ),
    "dynamodb-down": lambda d: dynamodb_outage(d, rate=200.0, outage_s=30.0),
    "provider-hangs": lambda d: hung_provider(d, rate=300.0, seconds=12.0, timeout_s=2.0),
    "provider-hangs-default-timeout": lambda d: hung_provider(
        d, rate=300.0, seconds=20.0, timeout_s=10.0
    ),
    "disk-full": lambda d: disk_full(d, rate=200.0, full_s=10.0),
}


def _row(result: FaultResult) -> str:
    audit = "n/a" if result.audit_lost is None else str(result.audit_lost)
    recover = "never" if result.recover_s is None else f"{result.recover_s:.1f} s"
    duplicated = f"{result.duplicated} (counted: {result.possible_duplicates})"
    cells = [
        result.fault,
        result.load,
        str(result.accepted),
        str(result.sent),
        str(result.lost),
        duplicated,
        audit,
        recover,
        _notes(result),
    ]
    return "| " + " | ".join(cells) + " |"


def _notes(result: FaultResult) -> str:
    notes = []
    details = result.details
    if result.refused:
        notes.append(f"{result.refused} refused (503) while Redis was away")
    if "failover_s" in details:
        notes.append(
            f"failover {details['failover_s']} s, {details['replica_ack_timeouts']:g} puts "
            f"refused as not replicated ({details['refused_but_sent']} messages of them sent), "
            f"{details['unreplicated_puts']:g} accepted with no replica left"
        )
    if result.unknown:
        sent = details.get("unanswered_but_sent", "?")
        notes.append(f"{result.unknown} unanswered (a batch cut by the kill; {sent} of them sent)")
    if "max_sends_in_1s" in details:
        notes.append(
            f"max {details['max_sends_in_1s']} sends in 1 s (rate {details['provider_rate']:g})"
        )
    if "claimed" in details:
        notes.append(f"{details['claimed']} taken over")
    if "vonage_longest_pause_s" in details:
        notes.append(
            f"slowest message {details['max_latency_s']} s, healthy provider paused "
            f"{details['vonage_longest_pause_s']} s"
        )
    if "errors_logged" in details:
        notes.append("; ".join(details["errors_logged"]))
    return ", ".join(notes)


HEADER = (
    "| fault | load | accepted | sent | lost | duplicated | audit events lost "
    "| time to recover | notes |\n|---|---|---|---|---|---|---|---|---|"
)


async def _run(names: list[str], keep: bool) -> list[FaultResult]:
    results = []
    for name in names:
        directory = Path(tempfile.mkdtemp(prefix=f"smsgw-faults-{name}-"))
        started = time.monotonic()
        print(f"running {name} in {directory} ...", file=sys.stderr, flush=True)
        try:
            results.append(await SCENARIOS[name](directory))
        except PermissionError as exc:
            print(f"  skipped: {exc}", file=sys.stderr)
            continue
        finally:
            if not keep:
                shutil.rmtree(directory, ignore_errors=True)
        print(f"  done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.faults_table", description=__doc__)
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), default=[])
    parser.add_argument("--keep", action="store_true", help="keep each scenario's directory")
    args = parser.parse_args(argv)
    names = args.only or list(SCENARIOS)
    results = asyncio.run(_run(names, args.keep))
    print(HEADER)
    for result in results:
        print(_row(result))


if __name__ == "__main__":
    main()
