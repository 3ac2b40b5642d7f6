"""The audit writer: callers record events without waiting; a background task stores them.

- `record()` only appends to an in-memory buffer. A flusher task writes the buffer to the
  store every `flush_interval_s`, or as soon as `batch_size` events wait, at most
  STORE_CHUNK events per store call.
- When the store cannot take a batch, the batch goes to the spool on local disk, and so does
  every later batch until the spool is replayed: events reach the store in the order they
  were spooled. A replay task retries with backoff and returns to direct writes once the
  spool is empty. A buffer grown past `max_buffer` (a store slower than the traffic) is
  spooled at once instead of growing.
- If even the spool cannot be written (disk full), the events stay in memory and the error
  is logged: never dropped silently.
- `close()` stores what is buffered and replays the spool within a bound; what it cannot
  store stays in the spool for the next start. A crash loses at most the events recorded
  since the last flush.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import time
from dataclasses import dataclass, fields
from typing import Any

import structlog

from smsgw.audit.base import AuditStore
from smsgw.audit.events import AuditEvent, EventKind
from smsgw.audit.spool import Spool
from smsgw.errors import AuditUnavailable
from smsgw.settings import AuditSettings

__all__ = ["AuditStats", "AuditWriter", "default_replica_name"]

_log = structlog.get_logger("smsgw.audit")

# One store write may not take longer than this; beyond it the batch is spooled.
WRITE_TIMEOUT_S = 10.0
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
class AuditStats:
    recorded: int = 0
    stored: int = 0
    spooled: int = 0
    replayed: int = 0
    # Store writes that failed (each batch then went to the spool).
    store_failures: int = 0
    # Spool writes that failed: those events are held in memory instead.
    spool_failures: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


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
        """Events recorded but not yet stored or spooled."""
        return len(self._buffer)

    def unstored(self, message_id: str) -> list[AuditEvent]:
        """A message's events still in the buffer (a lookup right after the POST)."""
        return [event for event in self._buffer if event.message_id == message_id]

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

    async def flush(self) -> None:
        """Store (or spool) the oldest STORE_CHUNK events recorded. Never cancel it midway:
        the events it took from the buffer would be lost."""
        batch = self._buffer[:STORE_CHUNK]
        del self._buffer[:STORE_CHUNK]
        await self._store_or_spool(batch)

    async def close(self, timeout_s: float = 10.0) -> None:
        """Store what is buffered and replay the spool, within `timeout_s` as far as the store
        allows; whatever the store does not take by then stays in the spool."""
        deadline = time.monotonic() + timeout_s
        # A flush or spill in progress holds events outside the buffer: let it finish (each
        # is bounded by WRITE_TIMEOUT_S) rather than cancel it. Replay is safe to cancel: a
        # segment leaves the disk only once the store has all of it.
        self._closing = True
        self._nonempty.set()
        self._full.set()
        if self._replayer is not None:
            self._replayer.cancel()
        running = [t for t in (self._flusher, self._replayer, *self._spills) if t is not None]
        await asyncio.gather(*running, return_exceptions=True)
        batch, self._buffer = self._buffer, []
        await self._store_or_spool(batch, max(deadline - time.monotonic(), 0.1))
        if self._spool.pending():
            try:
                await asyncio.wait_for(self._replay(), max(deadline - time.monotonic(), 0.1))
            except (AuditUnavailable, TimeoutError) as exc:
                _log.warning("audit_spool_left", spool=str(self._spool.directory), detail=str(exc))
        if self._buffer:
            # Neither the store nor the disk took them (disk full): say so loudly.
            _log.error("audit_events_lost", events=len(self._buffer))
        self._spool.close()

    # -- background work --

    async def _flush_loop(self) -> None:
        interval = self._settings.flush_interval_s
        while not self._closing:
            if not self._buffer:
                self._nonempty.clear()
                await self._nonempty.wait()
                continue
            if len(self._buffer) < self._settings.batch_size:
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), interval)
            await self.flush()

    async def _store_or_spool(
        self, batch: list[AuditEvent], timeout_s: float = WRITE_TIMEOUT_S
    ) -> None:
        if not batch:
            return
        if not self._spool.pending():
            try:
                await asyncio.wait_for(self.store.write(batch), timeout_s)
            except (AuditUnavailable, TimeoutError) as exc:
                self.stats.store_failures += 1
                _log.warning("audit_store_unavailable", events=len(batch), detail=str(exc))
            else:
                self.stats.stored += len(batch)
                self._note_lags(batch)
                return
        await self._to_spool(batch)

    def _note_lags(self, events: list[AuditEvent]) -> None:
        now = time.time()
        self._lags.extend([now - event.at for event in events])

    async def _to_spool(self, batch: list[AuditEvent]) -> None:
        async with self._spool_lock:
            try:
                await asyncio.to_thread(self._spool.append, batch)
            except OSError as exc:
                # Keep them: in memory, ahead of newer events, for the next flush to retry.
                self.stats.spool_failures += 1
                self._buffer[:0] = batch
                _log.error("audit_spool_failed", events=len(batch), detail=str(exc))
                if not self._closing:
                    await asyncio.sleep(RETRY_BASE_S)  # not a busy loop while the disk is full
                return
        self.stats.spooled += len(batch)
        self._spooled.set()

    async def _spill(self) -> None:
        if len(self._buffer) >= self._settings.max_buffer:
            batch, self._buffer = self._buffer, []
            _log.warning("audit_buffer_full", events=len(batch))
            await self._to_spool(batch)

    async def _replay_loop(self) -> None:
        delay = RETRY_BASE_S
        while True:
            await self._spooled.wait()
            try:
                await self._replay()
            except AuditUnavailable as exc:
                _log.info("audit_replay_waiting", detail=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
            else:
                delay = RETRY_BASE_S

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
