"""The audit writer over a real SQLite store: batching, spooling while the store is away,
replay in order, graceful close, overflow, and a spool that cannot be written."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from smsgw.audit import AuditEvent, AuditWriter, Spool
from smsgw.audit.sqlite import SqliteStore
from smsgw.audit.writer import STORE_CHUNK
from smsgw.errors import AuditUnavailable
from smsgw.settings import AuditSettings


class SwitchableStore(SqliteStore):
    """The real SQLite store with a switch that makes it unreachable, as a dead database
    would be: every call raises AuditUnavailable until switched back."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, retention_days=30)
        self.down = False
        self.write_calls: list[int] = []

    async def write(self, events: Sequence[AuditEvent]) -> None:
        if self.down:
            raise AuditUnavailable("switched off by the test")
        self.write_calls.append(len(events))
        await super().write(events)


def audit_settings(tmp_path: Path, **overrides: object) -> AuditSettings:
    values: dict[str, object] = {
        "path": str(tmp_path / "audit.sqlite3"),
        "spool_dir": str(tmp_path / "spool"),
        "flush_interval_s": 0.05,
        "batch_size": 100,
        "max_buffer": 1000,
    }
    values.update(overrides)
    return AuditSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SwitchableStore]:
    store = SwitchableStore(tmp_path / "audit.sqlite3")
    await store.migrate()
    yield store
    await store.close()


def make_writer(store: SwitchableStore, settings: AuditSettings) -> AuditWriter:
    writer = AuditWriter(store, Spool.open(settings.spool_dir), settings, "test-replica")
    writer.start()
    return writer


async def stored_kinds(store: SqliteStore, message_id: str) -> list[str]:
    return [event.kind for event in await store.events(message_id)]


async def wait_until(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def record_lifecycle(writer: AuditWriter, message_id: str) -> None:
    writer.accepted(message_id, time.time(), client="app", to="+14155550100", body="hi")
    writer.record(message_id, "sending", provider="twilio", attempt=1)
    writer.record(message_id, "sent", provider="twilio", attempt=1, provider_message_id="SM1")


async def test_events_are_stored_after_the_flush_interval(
    store: SwitchableStore, tmp_path: Path
) -> None:
    writer = make_writer(store, audit_settings(tmp_path))
    record_lifecycle(writer, "msg_1")
    assert await store.events("msg_1") == []  # recording never waits for the store

    async def stored() -> bool:
        return await stored_kinds(store, "msg_1") == ["accepted", "queued", "sending", "sent"]

    await wait_until(stored)
    assert writer.stats.stored == 4
    await writer.close()


async def test_a_full_batch_is_written_without_waiting_for_the_interval(
    store: SwitchableStore, tmp_path: Path
) -> None:
    writer = make_writer(store, audit_settings(tmp_path, flush_interval_s=30.0, batch_size=10))
    for n in range(10):
        writer.record(f"msg_{n}", "queued")

    async def stored() -> bool:
        return sum(store.write_calls) == 10

    await wait_until(stored, timeout=2.0)
    assert store.write_calls == [10]
    await writer.close()


async def test_a_backlog_is_written_in_calls_of_at_most_store_chunk_events(
    store: SwitchableStore, tmp_path: Path
) -> None:
    # A store slower than the traffic lets a backlog build; one call with all of it could
    # outlast WRITE_TIMEOUT_S and send everything to the spool.
    backlog = 2 * STORE_CHUNK + 123
    writer = make_writer(store, audit_settings(tmp_path, max_buffer=10 * STORE_CHUNK))
    for n in range(backlog):
        writer.record(f"msg_{n}", "queued")

    async def stored() -> bool:
        return sum(store.write_calls) == backlog

    await wait_until(stored, timeout=30.0)
    assert store.write_calls == [STORE_CHUNK, STORE_CHUNK, 123]
    assert writer.stats.spooled == 0
    assert writer.stats.stored == backlog
    await writer.close()


async def test_keys_are_unique_and_keep_the_order_of_recording(
    store: SwitchableStore, tmp_path: Path
) -> None:
    writer = make_writer(store, audit_settings(tmp_path))
    kinds = ["sending", "retry", "sending", "retry", "sending", "sent"] * 50
    for kind in kinds:
        writer.record("msg_1", kind)  # type: ignore[arg-type]
    await writer.close()
    events = await store.events("msg_1")
    assert [e.kind for e in events] == kinds
    assert len({e.key for e in events}) == len(kinds)


async def test_store_outage_spools_then_replays_everything_in_order(
    store: SwitchableStore, tmp_path: Path
) -> None:
    settings = audit_settings(tmp_path)
    writer = make_writer(store, settings)
    store.down = True
    for n in range(300):
        record_lifecycle(writer, f"msg_{n:03d}")

    async def spooled() -> bool:
        return writer.stats.spooled == 1200

    await wait_until(spooled)
    assert writer.stats.store_failures >= 1
    assert any(Path(settings.spool_dir).glob("*/*.jsonl"))
    # Still down: events recorded now queue up behind the spool.
    record_lifecycle(writer, "msg_late")
    store.down = False

    async def replayed() -> bool:
        return await stored_kinds(store, "msg_late") == ["accepted", "queued", "sending", "sent"]

    await wait_until(replayed, timeout=10.0)
    for n in range(300):
        assert await stored_kinds(store, f"msg_{n:03d}") == [
            "accepted",
            "queued",
            "sending",
            "sent",
        ]
    assert not any(Path(settings.spool_dir).glob("*/*.jsonl"))
    assert writer.stats.replayed == 1204
    await writer.close()


async def test_close_stores_what_is_buffered(store: SwitchableStore, tmp_path: Path) -> None:
    writer = make_writer(store, audit_settings(tmp_path, flush_interval_s=30.0))
    for n in range(50):
        record_lifecycle(writer, f"msg_{n}")
    assert writer.backlog == 200
    await writer.close()
    for n in range(50):
        assert await stored_kinds(store, f"msg_{n}") == ["accepted", "queued", "sending", "sent"]


async def test_close_with_the_store_away_leaves_the_spool_for_the_next_start(
    store: SwitchableStore, tmp_path: Path
) -> None:
    settings = audit_settings(tmp_path, flush_interval_s=30.0)
    writer = make_writer(store, settings)
    record_lifecycle(writer, "msg_1")
    store.down = True
    with capture_logs() as logs:
        await writer.close(timeout_s=0.5)
    assert "audit_spool_left" in [log["event"] for log in logs]
    assert "audit_events_lost" not in [log["event"] for log in logs]
    assert await stored_kinds(store, "msg_1") == []

    store.down = False
    with capture_logs() as logs:
        successor = make_writer(store, settings)  # the next start, on the same spool

        async def replayed() -> bool:
            return await stored_kinds(store, "msg_1") == ["accepted", "queued", "sending", "sent"]

        await wait_until(replayed)
    assert "audit_spool_found" in [log["event"] for log in logs]
    await successor.close()


async def test_a_buffer_past_its_bound_goes_to_the_spool(
    store: SwitchableStore, tmp_path: Path
) -> None:
    settings = audit_settings(tmp_path, flush_interval_s=30.0, batch_size=1000, max_buffer=1000)
    writer = make_writer(store, settings)
    store.down = True
    for n in range(1000):
        writer.record(f"msg_{n}", "queued")
    await asyncio.sleep(0)  # the spill task runs
    await asyncio.sleep(0.2)
    assert writer.backlog < 1000
    assert writer.stats.spooled >= 1000
    store.down = False
    await writer.close()
    assert await stored_kinds(store, "msg_999") == ["queued"]


async def test_a_spool_that_cannot_be_written_keeps_the_events_in_memory(
    store: SwitchableStore, tmp_path: Path
) -> None:
    settings = audit_settings(tmp_path)
    writer = make_writer(store, settings)
    store.down = True
    # The spool's directory disappears (a disk unmounted or wiped): appends fail.
    shutil.rmtree(settings.spool_dir)
    with capture_logs() as logs:
        record_lifecycle(writer, "msg_1")

        async def failed() -> bool:
            return writer.stats.spool_failures >= 1

        await wait_until(failed)
    assert "audit_spool_failed" in [log["event"] for log in logs]
    assert writer.backlog == 4  # kept, not dropped
    store.down = False

    async def stored() -> bool:
        return await stored_kinds(store, "msg_1") == ["accepted", "queued", "sending", "sent"]

    await wait_until(stored)
    await writer.close()


def test_two_processes_never_share_a_spool_slot(tmp_path: Path) -> None:
    first = Spool.open(tmp_path)
    second = Spool.open(tmp_path)
    assert first.directory != second.directory
    first.close()
    third = Spool.open(tmp_path)  # a restarted process takes over the freed slot
    assert third.directory == first.directory
    second.close()
    third.close()


def test_a_torn_last_line_is_skipped_and_reported(tmp_path: Path) -> None:
    spool = Spool.open(tmp_path)
    event = AuditEvent(message_id="msg_1", key="1:a", kind="queued", at=1.0, replica="r")
    spool.append([event])
    (segment,) = spool.seal()
    with segment.open("ab") as file:
        file.write(b'{"message_id":"msg_2","ke')  # a crash in the middle of a write
    with capture_logs() as logs:
        assert spool.read(segment) == [event]
    assert [log["event"] for log in logs] == ["audit_spool_bad_line"]
    spool.close()
