"""The embedded audit store: one SQLite file, the same events and queries as DynamoDB.

One table keyed like the DynamoDB one: (message_id, key), the event itself as JSON, and
for `accepted` events the recipient columns (`rcpt` = "client|to", `rsk`) behind a partial
index, which answers "what did this client send to this number" newest first. Every row
keeps `retain_until`; rows past it are deleted at start and then hourly.

SQLite calls block, so they all run on one dedicated thread that owns the connection.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import msgspec

from smsgw._aio import map_in_slices
from smsgw.audit.base import RecipientPage, RecipientQuery
from smsgw.audit.events import AuditEvent, recipient_sort_key
from smsgw.errors import AuditUnavailable

__all__ = ["SqliteStore", "recipient_key_range"]

_T = TypeVar("_T")
_SWEEP_EVERY_S = 3600.0
# How long opening the file may meet "database is locked" from another process setting it up.
_SETUP_RETRY_S = 10.0
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AuditEvent)

# A rowid table, not WITHOUT ROWID: events (~300 bytes of JSON each) are too large for a
# table stored in its primary key's B-tree; with a rowid, inserting costs well under half the
# CPU (14.7 against 39.5 µs per event, bench/sqlite_layout.py in bench/RESULTS.md). Files
# made before keep their layout; both answer the same statements.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_events (
    message_id   TEXT NOT NULL,
    key          TEXT NOT NULL,
    rcpt         TEXT,
    rsk          TEXT,
    retain_until REAL NOT NULL,
    event        BLOB NOT NULL,
    PRIMARY KEY (message_id, key)
);
CREATE INDEX IF NOT EXISTS audit_by_recipient ON audit_events (rcpt, rsk)
    WHERE rcpt IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_retention ON audit_events (retain_until);
"""


# Rows per INSERT statement: powers of two up to this, so a write of any size takes at most
# a dozen statements, each prepared once. 6 parameters a row: 24,576 at most, under the
# 32,766 SQLite allows since 3.32; older libraries allow 999 (128 rows).
_MAX_ROWS_PER_INSERT = 4096 if sqlite3.sqlite_version_info >= (3, 32) else 128


def _insert_sizes(rows: int) -> list[int]:
    """`rows` as a sum of powers of two, largest first (none above the maximum)."""
    sizes = []
    size = _MAX_ROWS_PER_INSERT
    while rows:
        while size > rows:
            size //= 2
        sizes.append(size)
        rows -= size
    return sizes


@functools.cache
def _insert_statement(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * rows)
    return f"INSERT OR REPLACE INTO audit_events VALUES {values}"  # noqa: S608 (placeholders only)


def recipient_key_range(since: float | None, until: float | None) -> tuple[str, str]:
    """Bounds on the by-recipient sort key (it starts with 16-digit µs) for [since, until]."""
    low = "" if since is None else f"{int(since * 1_000_000):016d}"
    # "~" sorts after every character a key holds, so `until` itself is included.
    high = "~" if until is None else f"{int(until * 1_000_000):016d}~"
    return low, high


class SqliteStore:
    def __init__(self, path: str | Path, retention_days: int) -> None:
        self._path = Path(path)
        self._retention_s = retention_days * 86400.0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smsgw-sqlite")
        self._db: sqlite3.Connection | None = None
        self._next_sweep = 0.0

    async def migrate(self) -> None:
        await self._run(self._migrate)

    async def write(self, events: Sequence[AuditEvent]) -> None:
        rows = await map_in_slices(self._row, events)
        await self._run(lambda: self._write(rows))

    async def events(self, message_id: str) -> list[AuditEvent]:
        rows = await self._run(
            lambda: self._query(
                "SELECT event FROM audit_events WHERE message_id = ? ORDER BY key",
                (message_id,),
            )
        )
        return [_decoder.decode(row[0]) for row in rows]

    async def recipient_messages(self, query: RecipientQuery) -> RecipientPage:
        limit, cursor = query.limit, query.cursor
        low, high = recipient_key_range(query.since, query.until)
        if cursor is not None:
            if "|" not in cursor:
                raise ValueError("not a cursor of this listing")
            high = min(high, cursor)
        # One more than asked tells whether another page exists.
        rows = await self._run(
            lambda: self._query(
                "SELECT message_id, rsk FROM audit_events"
                " WHERE rcpt = ? AND rsk >= ? AND rsk < ? ORDER BY rsk DESC LIMIT ?",
                (query.rcpt, low, high, limit + 1),
            )
        )
        page = rows[:limit]
        next_cursor = page[-1][1] if len(rows) > limit else None
        return RecipientPage([row[0] for row in page], next_cursor)

    async def close(self) -> None:
        def close_db() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._run(close_db)
        self._executor.shutdown(wait=True)

    # -- on the store's thread --

    def _row(self, event: AuditEvent) -> tuple[str, str, str | None, str | None, float, bytes]:
        rcpt = rsk = None
        if event.kind == "accepted" and event.client is not None and event.to is not None:
            rcpt, rsk = f"{event.client}|{event.to}", recipient_sort_key(event)
        retain_until = event.at + self._retention_s
        return (event.message_id, event.key, rcpt, rsk, retain_until, _encoder.encode(event))

    async def _run(self, call: Callable[[], _T]) -> _T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, call)
        except sqlite3.Error as exc:
            # Locked, full disk, unreadable file: the writer spools and tries again later.
            raise AuditUnavailable(f"SQLite audit store: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self._path, isolation_level=None)
            try:
                _set_up(db)
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    def _migrate(self) -> None:
        self._connection()
        self._sweep()

    def _write(self, rows: list[tuple[str, str, str | None, str | None, float, bytes]]) -> None:
        db = self._connection()
        with db:  # one transaction per batch
            db.execute("BEGIN")
            # Many rows per statement, not executemany(): that releases the GIL around each
            # row's step and must win it back from a busy event loop, up to a switch
            # interval (5 ms) per row, so under load the store fell behind by tens of
            # thousands of events (bench/pipeline.py). One statement: one release.
            start = 0
            for size in _insert_sizes(len(rows)):
                chunk = rows[start : start + size]
                start += size
                db.execute(_insert_statement(size), [v for row in chunk for v in row])
        if time.monotonic() >= self._next_sweep:
            self._sweep()

    def _sweep(self) -> None:
        with self._connection() as db:
            db.execute("DELETE FROM audit_events WHERE retain_until < ?", (time.time(),))
        self._next_sweep = time.monotonic() + _SWEEP_EVERY_S

    def _query(self, sql: str, params: tuple[object, ...]) -> list[tuple[str, ...]]:
        return self._connection().execute(sql, params).fetchall()


def _set_up(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA busy_timeout=5000")
    # WAL: readers (the API's queries) do not wait for the writer. NORMAL sync is durable
    # across process crashes, which is what the audit promises. Two processes opening a new
    # file at once (serve --workers 2) can meet "database is locked" while one switches the
    # journal mode, without the busy handler being asked: try again for a while.
    deadline = time.monotonic() + _SETUP_RETRY_S
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
