"""The console provider: stands in for the phone during development.

Each SMS is one JSON line `{"to", "body", "message_id", "at"}`, flushed at once, on stdout or
appended to a file. It is the only place a code may appear in clear.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import orjson

from smsgw.providers.base import OutgoingSms, Provider
from smsgw.settings import ConsoleProviderSettings

__all__ = ["ConsoleProvider"]


class ConsoleProvider(Provider):
    settings_type = ConsoleProviderSettings

    def __init__(self, settings: ConsoleProviderSettings) -> None:
        super().__init__(settings.name)
        self._path = Path(settings.path) if settings.path else None
        self._file: BinaryIO | None = None
        self._counter = 0

    async def start(self) -> None:
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self._path.open("ab")

    async def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    async def _try_send(self, sms: OutgoingSms) -> str:
        self._counter += 1
        line = orjson.dumps(
            {
                "to": sms.to,
                "body": sms.body,
                "message_id": sms.message_id,
                "at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            }
        )
        out = self._file if self._file is not None else sys.stdout.buffer
        # One write of a whole line, flushed, so concurrent readers never see half an SMS.
        out.write(line + b"\n")
        out.flush()
        return f"console-{self._counter}"
