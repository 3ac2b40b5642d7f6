"""The audit writer over a real SQLite store: batching, spooling while the store is away,
replay in order, graceful close, overflow, a spool that cannot be written, and writes that
hang: their events are on disk while they wait, and never lost."""

from __future__ import annotations

import asyncio
import inspect
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import msgspec
import pytest
from structlog.testing import capture_logs

from smsgw.audit import AuditEvent, AuditWriter, Spool
from smsgw.audit import writer as writer_module
from smsgw.audit.sqlite import SqliteStore
from smsgw.audit.writer import STORE_CHUNK
from smsgw.errors import AuditUnavailable
from smsgw.settings import AuditSettings


class SwitchableStore(SqliteStore):
    """The real SQLite store with two switches: `down` makes it unreachable, as a dead
    database would be (every write raises AuditUnavailable), and `hang()` makes writes
    neither succeed nor fail until `release()`, as a database that stopped answering."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, retention_days=30)
        self.down = False
        self.write_calls: list[int] = []
        self.hanging = 0  # writes waiting on the hang now
        self._answering = asyncio.Event()
        self._answering.set()

    def hang(self) -> None:
        self._answering.clear()

    def release(self) -> None:
        self._answering.set()

    async def write(self, events: Sequence[AuditEvent]) -> None:
        if self.down:
            raise AuditUnavailable("switched off by the test")
        if not self._answering.is_set():
            self.hanging += 1
            try:
                await self._answering.wait()
            finally:
                self.hanging -= 1
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


async def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Until `condition()` (a plain or an async function) is true."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def keys_on_disk(settings: AuditSettings) -> set[str]:
    """Keys of the events in any file of the spool (segments and copies alike)."""
    decoder = msgspec.json.Decoder(AuditEvent)
    keys = set()
    for path in Path(settings.spool_dir).glob("*/*"):
        if path.name != "lock":
            keys.update(decoder.decode(line).key for line in path.read_bytes().splitlines())
    return keys


def spool_files(settings: AuditSettings) -> list[str]:
    return sorted(p.name for p in Path(settings.spool_dir).glob("*/*") if p.name != "lock")


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
    # Counted once the write returns to the writer, a moment after the rows are readable.
    await wait_until(lambda: writer.stats.stored == 4)
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
        return writer.stats.stored == backlog

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

    async def late_spooled() -> bool:
        return writer.stats.spooled == 1204

    await wait_until(late_spooled)
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
    await wait_until(lambda: writer.stats.replayed == 1204)
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


async def test_a_fast_store_costs_no_spool_io(store: SwitchableStore, tmp_path: Path) -> None:
    # Writes that the store confirms within the flush interval never touch the disk.
    settings = audit_settings(tmp_path, flush_interval_s=0.2)
    writer = make_writer(store, settings)
    for n in range(20):
        record_lifecycle(writer, f"msg_{n}")
        await asyncio.sleep(0.02)

    async def stored() -> bool:
        return writer.stats.stored == 80

    await wait_until(stored)
    assert writer.stats.guarded == 0
    assert writer.stats.spooled == 0
    assert spool_files(settings) == []
    await writer.close()


async def test_a_write_slower_than_the_flush_interval_is_on_disk_while_it_waits(
    store: SwitchableStore, tmp_path: Path
) -> None:
    settings = audit_settings(tmp_path)
    writer = make_writer(store, settings)
    store.hang()
    record_lifecycle(writer, "msg_1")
    keys = {event.key for event in writer.unstored("msg_1")}
    assert len(keys) == 4

    async def on_disk() -> bool:
        return keys_on_disk(settings) == keys

    # A crash (SIGKILL) now would keep them: they are on disk before the write returns.
    await wait_until(on_disk, timeout=1.0)
    assert store.hanging == 1
    store.release()

    async def stored() -> bool:
        return await stored_kinds(store, "msg_1") == ["accepted", "queued", "sending", "sent"]

    await wait_until(stored)
    # The store confirmed them: the copy is deleted, not replayed (no second write).
    await wait_until(lambda: spool_files(settings) == [])
    assert writer.stats.replayed == 0
    assert writer.stats.guarded == 4
    await writer.close()


async def test_a_write_in_progress_still_shows_its_events(
    store: SwitchableStore, tmp_path: Path
) -> None:
    # Taken out of the buffer but not yet stored: a lookup must see them all the same.
    writer = make_writer(store, audit_settings(tmp_path))
    store.hang()
    record_lifecycle(writer, "msg_1")
    await wait_until(lambda: store.hanging == 1)
    assert [e.kind for e in writer.unstored("msg_1")] == ["accepted", "queued", "sending", "sent"]
    assert writer.backlog == 4
    store.release()
    await writer.close()


async def test_a_timed_out_write_loses_nothing(
    store: SwitchableStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "WRITE_TIMEOUT_S", 0.3)
    settings = audit_settings(tmp_path)
    writer = make_writer(store, settings)
    store.hang()
    for n in range(10):
        record_lifecycle(writer, f"msg_{n}")

    async def timed_out() -> bool:
        return writer.stats.store_failures >= 1

    await wait_until(timed_out)
    store.release()  # the store answers again

    async def stored() -> bool:
        counts = [len(await store.events(f"msg_{n}")) for n in range(10)]
        return counts == [4] * 10 and not writer.backlog and not spool_files(settings)

    await wait_until(stored)
    await writer.close()
    for n in range(10):
        assert await stored_kinds(store, f"msg_{n}") == ["accepted", "queued", "sending", "sent"]


async def test_close_with_a_hung_store_spools_the_write_in_flight_within_its_bound(
    store: SwitchableStore, tmp_path: Path
) -> None:
    settings = audit_settings(tmp_path)
    writer = make_writer(store, settings)
    store.hang()
    record_lifecycle(writer, "msg_1")
    keys = {event.key for event in writer.unstored("msg_1")}
    await wait_until(lambda: store.hanging == 1)
    record_lifecycle(writer, "msg_2")  # and some still in the buffer
    keys |= {event.key for event in writer.unstored("msg_2")}
    started = time.monotonic()
    with capture_logs() as logs:
        await writer.close(timeout_s=0.5)
    assert time.monotonic() - started < 2.0  # not WRITE_TIMEOUT_S: close keeps its bound
    assert "audit_events_lost" not in [log["event"] for log in logs]
    assert keys_on_disk(settings) == keys
    assert await store.events("msg_1") == []

    store.release()
    successor = make_writer(store, settings)  # the next start replays them

    async def replayed() -> bool:
        return [await stored_kinds(store, m) for m in ("msg_1", "msg_2")] == [
            ["accepted", "queued", "sending", "sent"]
        ] * 2

    await wait_until(replayed)
    await successor.close()


async def test_copies_left_by_a_crash_are_replayed_and_stored_once(
    store: SwitchableStore, tmp_path: Path
) -> None:
    # A crash while a slow write waits: its events are on disk; whether or not the store
    # got them, the next start writes them again, and each is stored once.
    settings = audit_settings(tmp_path)
    writer = make_writer(store, settings)
    store.hang()
    record_lifecycle(writer, "msg_1")
    keys = {event.key for event in writer.unstored("msg_1")}

    async def on_disk() -> bool:
        return keys_on_disk(settings) == keys

    await wait_until(on_disk, timeout=1.0)
    # The "crash": the write gets through, but the process dies before it hears so.
    await SqliteStore.write(store, writer.unstored("msg_1"))
    for task in [writer._flusher, writer._replayer, *writer._writes]:
        assert task is not None
        task.cancel()
    writer._spool._lock.close()  # the kernel drops the flock of a dead process
    store.release()

    successor = make_writer(store, settings)

    async def replayed() -> bool:
        return successor.stats.replayed == 4 and not spool_files(settings)

    await wait_until(replayed)
    await successor.close()
    assert await stored_kinds(store, "msg_1") == ["accepted", "queued", "sending", "sent"]
    with sqlite3.connect(tmp_path / "audit.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM audit_events").fetchone() == (4,)


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
