"""The audit writer: callers record events without waiting; a background task stores them.

- `record()` only appends to an in-memory buffer. A flusher task hands the buffer to the
  store every `flush_interval_s`, or as soon as `batch_size` events wait, at most
  STORE_CHUNK events per store call.
- An event stays the writer's until the store confirms it: a write that fails or outlasts
  WRITE_TIMEOUT_S puts its events in the spool, never drops them. While the store keeps up
  (it confirms each write within a flush interval) one write runs at a time and nothing
  touches the disk (two while a backlog of a whole chunk waits). A write still unconfirmed
  after one flush interval gets a copy of its
  events in the spool while it waits (deleted once the store confirms it), and the next
  batch may then start its own write, up to MAX_WRITES at once.
- A crash (SIGKILL, OOM) therefore loses only events that are in memory alone: the buffer
  (at most one flush interval of events) and a write younger than one flush interval, so
  at most the events of the last 2 x `flush_interval_s` (plus the time a copy takes to
  write). Copies left by a crash are replayed at the next start; what the store already
  had is stored once.
- When the store cannot take a batch, the batch goes to the spool, and so does every later
  batch until the spool is replayed: events reach the store in the order they were
  spooled. A replay task retries with backoff and returns to direct writes once the spool
  is empty. A batch that finds MAX_WRITES slow writes in flight is spooled too, and so is
  a buffer grown past `max_buffer` (a store slower than the traffic), at once.
- If even the spool cannot be written (disk full), the events stay in memory and the error
  is logged: never dropped silently.
- `close()` stores what is buffered and replays the spool within its bound; what the store
  has not confirmed by then, writes in flight included, stays in the spool for the next
  start.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from smsgw._aio import cancel_and_wait
from smsgw.audit.base import AuditStore
from smsgw.audit.events import AuditEvent, EventKind
from smsgw.audit.spool import Spool
from smsgw.counters import Counters
from smsgw.errors import AuditUnavailable
from smsgw.retry import Backoff
from smsgw.settings import AuditSettings

__all__ = ["AuditStats", "AuditWriter", "default_replica_name"]

_log = structlog.get_logger("smsgw.audit")

# One store write may not take longer than this; beyond it the batch is spooled.
WRITE_TIMEOUT_S = 10.0
# Slow writes (each already copied to the spool) in flight at once; beyond, batches are
# spooled: a store that slow cannot take more in parallel.
MAX_WRITES = 4
# Writes neither confirmed nor copied to disk at once: 2 only while a whole STORE_CHUNK
# waits behind them (a backlog), else 1. Both are younger than a flush interval, so a crash
# still loses at most the events of the last two intervals.
PIPELINED_WRITES = 2
# Events per store call, from the buffer or the spool: a backlog is written in calls this size
# (200 BatchWriteItem requests), each short enough to finish well within WRITE_TIMEOUT_S,
# instead of one call that would time out and send everything to the spool.
STORE_CHUNK = 5_000
# Store lags kept for benchmarks and metrics: the most recent ones only (~6 MB at most).
LAGS_KEPT = 200_000
RETRY_BASE_S = 0.25
RETRY_MAX_S = 5.0


def default_replica_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(slots=True)
class AuditStats(Counters):
    recorded: int = 0
    stored: int = 0
    spooled: int = 0
    replayed: int = 0
    # Events copied to the spool while their write was slow (deleted once it is confirmed).
    guarded: int = 0
    # Store writes that failed (each batch then went to the spool).
    store_failures: int = 0
    # Spool writes that failed: those events are held in memory instead.
    spool_failures: int = 0


@dataclass(eq=False, slots=True)
class _Write:
    """A batch handed to the store and not yet confirmed: still the writer's."""

    events: list[AuditEvent]
    # Set once the next batch need not wait for this one: it is over, or copied to disk.
    safe: asyncio.Event = field(default_factory=asyncio.Event)
    guard: Path | None = None


class AuditWriter:
    def __init__(
        self,
        store: AuditStore,
        spool: Spool,
        settings: AuditSettings,
        replica: str,
    ) -> None:
        self.store = store
        self._spool = spool
        self._settings = settings
        self.replica = replica
        # Keys carry a short random tag per process: unique across replicas, and short.
        self._tag = os.urandom(3).hex()
        self._seq = 0
        self._buffer: list[AuditEvent] = []
        self._nonempty = asyncio.Event()
        self._full = asyncio.Event()
        self._spooled = asyncio.Event()
        # Appending and sealing must not interleave (a seal closes the file being written).
        self._spool_lock = asyncio.Lock()
        self._closing = False
        self._flusher: asyncio.Task[None] | None = None
        self._replayer: asyncio.Task[None] | None = None
        self._spills: set[asyncio.Task[None]] = set()
        # Writes in flight, oldest first; close() sets _give_up when its time is over.
        self._writes: dict[asyncio.Task[None], _Write] = {}
        self._give_up = asyncio.Event()
        # Batches on their way into the spool (waiting for _spool_lock, or being appended).
        self._spooling: list[list[AuditEvent]] = []
        self.stats = AuditStats()
        self._lags: collections.deque[float] = collections.deque(maxlen=LAGS_KEPT)

    # -- recording (hot path: no I/O, no awaiting) --

    def record(
        self, message_id: str, kind: EventKind, at: float | None = None, **details: Any
    ) -> None:
        if at is None:
            at = time.time()
        # Unique per process (a sequence number after the time), ordered by time and then
        # by the order of recording; the tag tells replicas apart.
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        event = AuditEvent(
            message_id=message_id,
            key=f"{int(at * 1_000_000):016d}:{self._tag}{self._seq:08x}",
            kind=kind,
            at=at,
            replica=self.replica,
            **details,
        )
        buffer = self._buffer
        buffer.append(event)
        self.stats.recorded += 1
        waiting = len(buffer)
        if waiting == 1:
            self._nonempty.set()
        if waiting == self._settings.batch_size:
            self._full.set()
        if waiting == self._settings.max_buffer:
            spill = asyncio.create_task(self._spill(), name="smsgw-audit-spill")
            self._spills.add(spill)
            spill.add_done_callback(self._spills.discard)

    def accepted(self, message_id: str, at: float, **details: Any) -> None:
        self.record(message_id, "accepted", at, **details)
        self.record(message_id, "queued")

    @property
    def backlog(self) -> int:
        """Events recorded but not yet stored or spooled (buffered or being written)."""
        return len(self._buffer) + sum(len(write.events) for write in self._writes.values())

    @property
    def visibility_lag_s(self) -> float:
        """How long after it is recorded an event is normally in the store, for every
        replica to read: up to one flush interval in the buffer, and a write that takes less
        than another (a slower one is the store falling behind), plus a margin."""
        return 2 * self._settings.flush_interval_s + 0.1

    def unstored(self, message_id: str) -> list[AuditEvent]:
        """A message's events the store has not confirmed yet, being written or buffered
        (a lookup right after the POST). Ask before reading the store: an event leaves this
        view only once the store has it."""
        batches = [*(w.events for w in self._writes.values()), *self._spooling, self._buffer]
        return [event for batch in batches for event in batch if event.message_id == message_id]

    def spool_bytes(self) -> int:
        return self._spool.size_bytes()

    @property
    def lags(self) -> collections.deque[float]:
        """Recent store lags in seconds (stored - event time), oldest first, for benchmarks
        and metrics: the last LAGS_KEPT events stored, directly or from the spool. Read it,
        do not change it."""
        return self._lags

    # -- lifecycle --

    def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_loop(), name="smsgw-audit-flush")
        self._replayer = asyncio.create_task(self._replay_loop(), name="smsgw-audit-replay")
        if self._spool.pending():
            _log.warning("audit_spool_found", spool=str(self._spool.directory))
            self._spooled.set()

    async def close(self, timeout_s: float = 10.0) -> None:
        """Store what is buffered and replay the spool, within `timeout_s` as far as the store
        allows; whatever the store has not confirmed by then, writes in flight included,
        stays in the spool."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        # The flusher stops within a flush interval (it waits for a write only until the
        # write is copied to disk); a spill finishes its spool append. Replay is safe to
        # cancel: a segment leaves the disk only once the store has all of it.
        self._closing = True
        self._nonempty.set()
        self._full.set()
        if self._replayer is not None:
            self._replayer.cancel()
        running = [t for t in (self._flusher, self._replayer, *self._spills) if t is not None]
        await asyncio.gather(*running, return_exceptions=True)
        batch, self._buffer = self._buffer, []
        for start in range(0, len(batch), STORE_CHUNK):
            await self._send(batch[start : start + STORE_CHUNK])
        if self._writes:
            _, unconfirmed = await asyncio.wait(
                list(self._writes), timeout=max(deadline - loop.time(), 0.0)
            )
            if unconfirmed:
                # Out of time: every write still waiting spools its events and ends.
                self._give_up.set()
                await asyncio.gather(*unconfirmed, return_exceptions=True)
        if self._spool.pending():
            try:
                await asyncio.wait_for(self._replay(), max(deadline - loop.time(), 0.1))
            except (AuditUnavailable, TimeoutError) as exc:
                _log.warning("audit_spool_left", spool=str(self._spool.directory), detail=str(exc))
        if self._buffer:
            # Neither the store nor the disk took them (disk full): say so loudly.
            _log.error("audit_events_lost", events=len(self._buffer))
        self._spool.close()

    # -- background work --

    async def _flush_loop(self) -> None:
        interval = self._settings.flush_interval_s
        loop = asyncio.get_running_loop()
        due = 0.0
        while not self._closing:
            if not self._buffer:
                self._nonempty.clear()
                await self._nonempty.wait()
                # The first event after a quiet spell waits one interval for company.
                due = max(due, loop.time() + interval)
                continue
            if len(self._buffer) < self._settings.batch_size and due > loop.time():
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), due - loop.time())
            # One write at a time while the store keeps up; the next starts once the last
            # is confirmed or, if it is slow, copied to disk (at most one flush interval).
            # With a whole chunk already waiting, two: the store writes one while the loop
            # encodes the next (strictly one at a time, a busy SQLite store fell behind
            # 56,000 events/s and the buffer overflowed into the spool).
            await self._wait_for_room()
            if self._closing:
                break  # close() takes the buffer
            due = loop.time() + interval
            batch = self._buffer[:STORE_CHUNK]
            del self._buffer[:STORE_CHUNK]
            await self._send(batch)

    async def _wait_for_room(self) -> None:
        while True:
            young = [w for w in self._writes.values() if not w.safe.is_set()]
            allowed = PIPELINED_WRITES if len(self._buffer) >= STORE_CHUNK else 1
            if len(young) < allowed:
                return
            await young[0].safe.wait()

    async def _send(self, batch: list[AuditEvent]) -> None:
        """Start a store write for `batch`, or spool it if the store is behind."""
        if not batch:
            return
        if self._spool.pending() or len(self._writes) >= MAX_WRITES:
            await self._spool_or_keep(batch)
            return
        write = _Write(batch)
        task = asyncio.create_task(self._write(write), name="smsgw-audit-write")
        self._writes[task] = write
        task.add_done_callback(self._writes.pop)

    async def _write(self, write: _Write) -> None:
        """One store write, seen through: confirmed, or its events are spooled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WRITE_TIMEOUT_S
        stored = asyncio.ensure_future(self.store.write(write.events))
        give_up = asyncio.ensure_future(self._give_up.wait())
        try:
            waiting = {stored, give_up}
            await asyncio.wait(
                waiting, timeout=self._settings.flush_interval_s, return_when="FIRST_COMPLETED"
            )
            if not stored.done() and not give_up.done():
                # Slow: keep a copy on disk while it waits, so a crash now loses none of it.
                await self._guard(write)
                write.safe.set()
                await asyncio.wait(
                    waiting, timeout=max(deadline - loop.time(), 0.0), return_when="FIRST_COMPLETED"
                )
            if not stored.done():
                await cancel_and_wait([stored])
            if stored.cancelled():
                why = "at close" if give_up.done() else f"after {WRITE_TIMEOUT_S:.0f}s"
                raise TimeoutError(f"audit store write unconfirmed {why}")
            stored.result()
        except (AuditUnavailable, TimeoutError) as exc:
            _log.warning("audit_store_unavailable", events=len(write.events), detail=str(exc))
            await self._write_failed(write)
        except Exception:
            # A bug, not an outage: the events are kept all the same.
            _log.exception("audit_store_write_error", events=len(write.events))
            await self._write_failed(write)
        else:
            self.stats.stored += len(write.events)
            self._note_lags(write.events)
            if write.guard is not None:
                try:
                    await asyncio.to_thread(self._spool.release, write.guard)
                except OSError as exc:
                    # Left on disk, it is replayed at the next start: stored once all the same.
                    _log.warning("audit_guard_left", file=str(write.guard), detail=str(exc))
        finally:
            give_up.cancel()
            stored.cancel()  # only if still running: this task itself was cancelled
            write.safe.set()

    async def _guard(self, write: _Write) -> None:
        async with self._spool_lock:
            try:
                write.guard = await asyncio.to_thread(self._spool.guard, write.events)
            except OSError as exc:
                # Still in memory, and still written to the store: only a crash loses them.
                self.stats.spool_failures += 1
                _log.error("audit_spool_failed", events=len(write.events), detail=str(exc))
                return
        self.stats.guarded += len(write.events)

    async def _write_failed(self, write: _Write) -> None:
        self.stats.store_failures += 1
        if write.guard is not None:
            async with self._spool_lock:
                try:
                    await asyncio.to_thread(self._spool.adopt, write.guard)
                except OSError as exc:
                    _log.error("audit_spool_failed", file=str(write.guard), detail=str(exc))
                else:
                    self.stats.spooled += len(write.events)
                    self._spooled.set()
                    return
        if not await self._to_spool(write.events):
            # Out of this write's hands (and view) at the moment they are back in the buffer.
            events, write.events = write.events, []
            await self._keep(events)

    def _note_lags(self, events: list[AuditEvent]) -> None:
        now = time.time()
        self._lags.extend([now - event.at for event in events])

    async def _to_spool(self, batch: list[AuditEvent]) -> bool:
        """Append `batch` to the spool; False (logged) if the disk refused it."""
        # Visible to lookups until it is in the spool: in no other view meanwhile.
        self._spooling.append(batch)
        try:
            async with self._spool_lock:
                await asyncio.to_thread(self._spool.append, batch)
        except OSError as exc:
            self.stats.spool_failures += 1
            _log.error("audit_spool_failed", events=len(batch), detail=str(exc))
            return False
        finally:
            self._spooling = [b for b in self._spooling if b is not batch]
        self.stats.spooled += len(batch)
        self._spooled.set()
        return True

    async def _spool_or_keep(self, batch: list[AuditEvent]) -> None:
        if not await self._to_spool(batch):
            await self._keep(batch)

    async def _keep(self, batch: list[AuditEvent]) -> None:
        # Neither store nor disk takes them: in memory, ahead of newer events, for the next
        # flush to retry.
        self._buffer[:0] = batch
        self._nonempty.set()
        if not self._closing:
            await asyncio.sleep(RETRY_BASE_S)  # not a busy loop while the disk is full

    async def _spill(self) -> None:
        if len(self._buffer) >= self._settings.max_buffer:
            batch, self._buffer = self._buffer, []
            _log.warning("audit_buffer_full", events=len(batch))
            await self._spool_or_keep(batch)

    async def _replay_loop(self) -> None:
        backoff = Backoff(RETRY_BASE_S, RETRY_MAX_S, jitter="none")
        while True:
            await self._spooled.wait()
            try:
                await self._replay()
            except AuditUnavailable as exc:
                delay = backoff.next()
                _log.info("audit_replay_waiting", detail=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
            else:
                backoff.reset()

    async def _replay(self) -> None:
        """Write every spooled segment to the store, oldest first; clears `_spooled` once the
        spool is empty. Raises AuditUnavailable if the store fails (the segment stays)."""
        while True:
            async with self._spool_lock:
                segments = self._spool.seal()
                if not segments:
                    self._spooled.clear()
                    _log.info("audit_spool_replayed", events=self.stats.replayed)
                    return
            for path in segments:
                events = await asyncio.to_thread(self._spool.read, path)
                for start in range(0, len(events), STORE_CHUNK):
                    chunk = events[start : start + STORE_CHUNK]
                    try:
                        await asyncio.wait_for(self.store.write(chunk), WRITE_TIMEOUT_S)
                    except TimeoutError as exc:
                        raise AuditUnavailable("audit store write timed out") from exc
                    self._note_lags(chunk)
                self.stats.replayed += len(events)
                self._spool.remove(path)
