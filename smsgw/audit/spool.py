"""An append-only spool on local disk for audit events the store could not take yet.

Events go into numbered segment files of JSON lines. The writer seals the segment it is
appending to before replaying, so replay reads only closed files, oldest first, and deletes
each one once the store has all of it. A replica that crashed mid-replay writes some events
again on its next start; the store keeps one copy of each (same message id and key).

Several processes on one host may share `spool_dir`: each takes the first numbered
subdirectory it can lock (flock), so a restarted process picks up the spool its
predecessor left, and two live processes never write the same files.
"""

from __future__ import annotations

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
_MAX_SLOTS = 256
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AuditEvent)


class Spool:
    def __init__(self, directory: Path, lock: IO[bytes]) -> None:
        self.directory = directory
        self._lock = lock
        self._current: IO[bytes] | None = None
        self._current_bytes = 0
        numbers = [int(p.stem) for p in self._segment_paths()]
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
        return self._current is not None or any(self._segment_paths())

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self._segment_paths())

    def append(self, events: list[AuditEvent]) -> None:
        """Append and fsync: once this returns the events survive a crash of the host."""
        if not events:
            return
        data = b"".join(_encoder.encode(event) + b"\n" for event in events)
        if self._current is None:
            path = self.directory / f"{self._next_number:09d}.jsonl"
            self._next_number += 1
            self._current = path.open("ab")
            self._current_bytes = 0
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

    def seal(self) -> list[Path]:
        """Close the open segment; every segment waiting for replay, oldest first."""
        self._close_current()
        return self._segment_paths()

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

    def close(self) -> None:
        self._close_current()
        self._lock.close()  # releases the flock

    def _close_current(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None

    def _segment_paths(self) -> list[Path]:
        return sorted(self.directory.glob("*.jsonl"))
