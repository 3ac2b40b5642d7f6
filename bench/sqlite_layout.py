"""CPU per audit event written to SQLite: the store's table against the same table
WITHOUT ROWID (the layout before), side by side.

    .venv/bin/python -m bench.sqlite_layout [--events 40000] [--rounds 2]

Rows as `SqliteStore` writes them (one `accepted` event in four with its recipient index
entry, ~300-byte JSON bodies, random message ids), 500 per transaction, WAL and
synchronous=NORMAL as the store sets them, into files in a temporary directory. Only the
INSERT transactions are timed: the store does exactly this on its thread.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from smsgw.audit.sqlite import _SCHEMA

BATCH = 500
LAYOUTS = {
    "rowid table (the store's)": _SCHEMA,
    "WITHOUT ROWID (before)": _SCHEMA.replace("\n);", "\n) WITHOUT ROWID;", 1),
}

Row = tuple[str, str, str | None, str | None, float, bytes]


def _rows(count: int) -> list[Row]:
    now = time.time()
    rows: list[Row] = []
    for n in range(count):
        accepted = n % 4 == 0
        rows.append(
            (
                "msg_" + os.urandom(16).hex(),
                f"{int(now * 1_000_000) + n:016d}:abc{n:08x}",
                "app|+14155550100" if accepted else None,
                f"{n:016d}" if accepted else None,
                now + 400 * 86400,
                os.urandom(150).hex().encode(),  # ~300 bytes, as an event's JSON
            )
        )
    return rows


def _cpu_us_per_row(path: Path, schema: str, rows: list[Row]) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(schema)
    started = time.process_time()
    for start in range(0, len(rows), BATCH):
        with db:
            db.execute("BEGIN")
            db.executemany(
                "INSERT OR REPLACE INTO audit_events VALUES (?, ?, ?, ?, ?, ?)",
                rows[start : start + BATCH],
            )
    used = time.process_time() - started
    db.close()
    return used / len(rows) * 1_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    assert "WITHOUT ROWID" not in _SCHEMA, "the store's layout changed: update this benchmark"
    rows = _rows(args.events)
    results: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    with tempfile.TemporaryDirectory(prefix="smsgw-sqlite-") as tmp:
        for round_ in range(args.rounds):
            for n, (name, schema) in enumerate(LAYOUTS.items()):
                path = Path(tmp) / f"{round_}-{n}.sqlite3"
                results[name].append(_cpu_us_per_row(path, schema, rows))
    print(f"{args.events} events, {args.rounds} rounds, CPU µs per event (median)")
    print("| layout | CPU µs / event | runs |")
    print("|---|---|---|")
    for name, runs in results.items():
        listed = ", ".join(f"{r:.1f}" for r in runs)
        print(f"| {name} | {statistics.median(runs):.1f} | {listed} |")


if __name__ == "__main__":
    main()
