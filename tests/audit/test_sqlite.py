"""The SQLite audit store on a file made by an earlier version (a WITHOUT ROWID table)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from smsgw.audit import AuditEvent, RecipientQuery
from smsgw.audit.sqlite import SqliteStore

# The table as versions before the rowid layout created it.
EARLIER_SCHEMA = """
CREATE TABLE audit_events (
    message_id   TEXT NOT NULL,
    key          TEXT NOT NULL,
    rcpt         TEXT,
    rsk          TEXT,
    retain_until REAL NOT NULL,
    event        BLOB NOT NULL,
    PRIMARY KEY (message_id, key)
) WITHOUT ROWID;
CREATE INDEX audit_by_recipient ON audit_events (rcpt, rsk) WHERE rcpt IS NOT NULL;
CREATE INDEX audit_retention ON audit_events (retain_until);
"""


def event(message_id: str, n: int, kind: str, **details: object) -> AuditEvent:
    at = time.time() + n / 1000
    key = f"{int(at * 1_000_000):016d}:abc{n:08x}"
    return AuditEvent(message_id=message_id, key=key, kind=kind, at=at, replica="r", **details)  # type: ignore[arg-type]


async def test_a_file_with_the_earlier_layout_is_written_and_read_as_before(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(EARLIER_SCHEMA)
    store = SqliteStore(path, retention_days=30)
    try:
        await store.migrate()
        accepted = event("msg_1", 0, "accepted", client="app", to="+14155550100", body="hi")
        events = [accepted, event("msg_1", 1, "queued"), event("msg_1", 2, "sent")]
        await store.write(events)
        await store.write(events[1:])  # a replayed spool writes some again: no duplicates
        assert [e.kind for e in await store.events("msg_1")] == ["accepted", "queued", "sent"]
        page = await store.recipient_messages(
            RecipientQuery(client="app", to="+14155550100", limit=10)
        )
        assert page.message_ids == ["msg_1"]
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'audit_events'").fetchone()
    assert "WITHOUT ROWID" in sql  # left as it was
