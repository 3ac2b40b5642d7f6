"""An audit recorder that keeps nothing, for benchmarks that measure something else.

The in-process limiter and dispatcher benchmarks measure pacing and send throughput; the
audit writer has its own benchmark (bench/audit_throughput.py) and is on in every
benchmark that runs `smsgw serve`.
"""

from __future__ import annotations

from typing import Any

from smsgw.audit import EventKind


class NoAudit:
    def record(
        self, message_id: str, kind: EventKind, at: float | None = None, **details: Any
    ) -> None:
        pass

    def accepted(self, message_id: str, at: float, **details: Any) -> None:
        pass
