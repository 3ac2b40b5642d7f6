"""structlog set-up: JSON lines on stderr in production, readable lines on a terminal.

stdout is left to the console provider, which writes one JSON line per SMS there.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

__all__ = ["Outage", "configure_logging"]

# Keys whose values must never be written, whoever passes them by mistake.
_SECRET_KEYS = frozenset({"code", "otp", "secret", "auth_token", "api_key", "key", "password"})


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in _SECRET_KEYS.intersection(event):
        event[key] = "[redacted]"
    return event


def configure_logging(level: str = "info", *, json: bool | None = None) -> None:
    if json is None:
        json = not sys.stderr.isatty()
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
        structlog.processors.format_exc_info,
    ]
    if json:
        processors.append(structlog.processors.JSONRenderer(serializer=orjson.dumps))
        factory: Any = structlog.BytesLoggerFactory(sys.stderr.buffer)
    else:
        processors.append(structlog.dev.ConsoleRenderer())
        factory = structlog.PrintLoggerFactory(sys.stderr)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )


class Outage:
    """Logs the first failure of an outage and the recovery, not every retry in between.

    `failed()` at each failure logs `down_event` (warning) for the first one only and answers
    whether it was the first; `ok()` at each success logs `up_event` (info) with how long the
    outage lasted under `duration_key`, once. `since` is when the outage began
    (time.monotonic()), None while all is well.
    """

    def __init__(
        self, log: Any, down_event: str, up_event: str, *, duration_key: str = "after_s"
    ) -> None:
        self._log = log
        self._down_event = down_event
        self._up_event = up_event
        self._duration_key = duration_key
        self.since: float | None = None

    def failed(self, **fields: Any) -> bool:
        if self.since is not None:
            return False
        self.since = time.monotonic()
        self._log.warning(self._down_event, **fields)
        return True

    def ok(self, **fields: Any) -> None:
        if self.since is None:
            return
        fields[self._duration_key] = round(time.monotonic() - self.since, 3)
        self.since = None
        self._log.info(self._up_event, **fields)
