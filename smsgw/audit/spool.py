"""An append-only spool on local disk for audit events the store has not confirmed yet.

Events go into numbered segment files of JSON lines. The writer seals the segment it is
appending to before replaying, so replay reads only closed files, oldest first, and deletes
each one once the store has all of it. A replica that crashed mid-replay writes some events
again on its next start; the store keeps one copy of each (same message id and key).

A write that keeps the writer waiting gets a copy of its events here too, in a file of its
own (`NNN.guard`): deleted once the store confirms the write, made an ordinary segment
(renamed, in its place in the order) if the write fails. A copy left by a crash becomes a
segment when the spool is next opened, so it is replayed whether or not the store got it.

Several processes on one host may share `spool_dir`: each takes the first numbered
subdirectory it can lock (flock), so a restarted process picks up the spool its
predecessor left, and two live processes never write the same files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO

import msgspec
import structlog

from smsgw.audit.events import AuditEvent

__all__ = ["Spool"]

_log = structlog.get_logger("smsgw.audit")

# A segment is closed once it holds this much, so replay reads bounded files.
SEGMENT_BYTES = 8 * 1024 * 1024
_SEGMENT = ".jsonl"
_GUARD = ".guard"
_MAX_SLOTS = 256
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AuditEvent)


class Spool:
    def __init__(self, directory: Path, lock: IO[bytes]) -> None:
        self.directory = directory
        self._lock = lock
        self._current: IO[bytes] | None = None
        self._current_bytes = 0
        for guard in sorted(directory.glob(f"*{_GUARD}")):
            # Left by a process that died while its write waited: replay it like the rest.
            guard.rename(guard.with_suffix(_SEGMENT))
        # What waits for replay, kept in memory (this process alone writes here), so that
        # asking costs no I/O on every flush.
        self._segments = set(directory.glob(f"*{_SEGMENT}"))
        numbers = [int(p.stem) for p in self._segments]
        self._next_number = max(numbers, default=0) + 1

    @classmethod
    def open(cls, base_dir: str | Path) -> Spool:
        """Lock and open the first free numbered spool under `base_dir` (creating it)."""
        base = Path(base_dir)
        for slot in range(_MAX_SLOTS):
            directory = base / str(slot)
            directory.mkdir(parents=True, exist_ok=True)
            lock = (directory / "lock").open("ab")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            return cls(directory, lock)
        raise OSError(f"no free audit spool slot under {base} ({_MAX_SLOTS} are locked)")

    def pending(self) -> bool:
        """Whether anything is waiting for replay (in a sealed or the open segment)."""
        return bool(self._segments)

    def size_bytes(self) -> int:
        """Bytes on disk: segments waiting for replay and copies of writes in progress."""
        total = 0
        for path in [*self.directory.glob(f"*{_SEGMENT}"), *self.directory.glob(f"*{_GUARD}")]:
            with contextlib.suppress(FileNotFoundError):  # replayed or confirmed meanwhile
                total += path.stat().st_size
        return total

    def append(self, events: list[AuditEvent]) -> None:
        """Append and fsync: once this returns the events survive a crash of the host."""
        if not events:
            return
        data = b"".join(_encoder.encode(event) + b"\n" for event in events)
        if self._current is None:
            path = self._new_path(_SEGMENT)
            self._current = path.open("ab")
            self._current_bytes = 0
            self._segments.add(path)
            self._sync_directory()
        try:
            self._current.write(data)
            self._current.flush()
            os.fsync(self._current.fileno())
        except OSError:
            # The file may now end in a torn line; start a new segment for what comes next.
            self._close_current()
            raise
        self._current_bytes += len(data)
        if self._current_bytes >= SEGMENT_BYTES:
            self._close_current()

    def guard(self, events: list[AuditEvent]) -> Path:
        """A durable copy of a write's events, in its own file numbered after everything
        spooled so far; `release` or `adopt` it once the write is over."""
        path = self._new_path(_GUARD)
        with path.open("xb") as file:
            file.write(b"".join(_encoder.encode(event) + b"\n" for event in events))
            file.flush()
            os.fsync(file.fileno())
        self._sync_directory()
        return path

    def release(self, guard: Path) -> None:
        """The store confirmed the write: its copy is not needed."""
        guard.unlink(missing_ok=True)

    def adopt(self, guard: Path) -> None:
        """The write failed: its copy becomes a segment, replayed in its place."""
        segment = guard.with_suffix(_SEGMENT)
        guard.rename(segment)
        self._segments.add(segment)

    def seal(self) -> list[Path]:
        """Close the open segment; every segment waiting for replay, oldest first."""
        self._close_current()
        return sorted(self._segments)

    def read(self, path: Path) -> list[AuditEvent]:
        events = []
        for number, line in enumerate(path.read_bytes().splitlines(), 1):
            if not line:
                continue
            try:
                events.append(_decoder.decode(line))
            except msgspec.DecodeError:
                # Only a write cut short (crash, full disk) leaves a broken line behind.
                _log.error("audit_spool_bad_line", file=str(path), line=number)
        return events

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._segments.discard(path)

    def close(self) -> None:
        self._close_current()
        self._lock.close()  # releases the flock

    def _close_current(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None

    def _new_path(self, suffix: str) -> Path:
        path = self.directory / f"{self._next_number:09d}{suffix}"
        self._next_number += 1
        return path

    def _sync_directory(self) -> None:
        # A new file's name survives a crash of the host only once its directory is synced.
        descriptor = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
