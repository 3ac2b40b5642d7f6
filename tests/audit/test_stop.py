"""A real `smsgw serve` stopped with SIGTERM while every audit event is still buffered."""

from __future__ import annotations

import signal
import sqlite3
from collections import defaultdict
from pathlib import Path

import aiohttp
import msgspec
import pytest

from smsgw.audit import AuditEvent
from tests.test_serve import batch, fake_provider, smsgw_serve, wait_exit, write_config

LIFECYCLE = ["accepted", "queued", "sending", "sent"]


@pytest.mark.timeout(90)
async def test_sigterm_with_a_full_buffer_loses_no_event(tmp_path: Path) -> None:
    with fake_provider(tmp_path) as fake_url:
        config = write_config(tmp_path / "smsgw.toml", fake_url, rate=1000)
        # Nothing is flushed on its own before the stop: every event waits in memory.
        config.write_text(
            config.read_text()
            + "\n[audit]\nflush_interval_s = 600\nbatch_size = 100000\nmax_buffer = 100000\n"
        )
        async with smsgw_serve(config, tmp_path) as (proc, base), aiohttp.ClientSession() as http:
            async with http.post(f"{base}/v1/messages/batch", json=batch(300, "audit")) as resp:
                assert resp.status == 202
                ids = (await resp.json())["ids"]
            # The file exists (created at start) but holds nothing yet.
            database = tmp_path / "data" / "audit.sqlite3"
            with sqlite3.connect(database) as db:
                assert db.execute("SELECT count(*) FROM audit_events").fetchone() == (0,)
            proc.send_signal(signal.SIGTERM)
            assert await wait_exit(proc, 40) == 0, (tmp_path / "smsgw.log").read_text()

    decoder = msgspec.json.Decoder(AuditEvent)
    by_message: dict[str, list[AuditEvent]] = defaultdict(list)
    db = sqlite3.connect(database)
    for (blob,) in db.execute("SELECT event FROM audit_events ORDER BY message_id, key"):
        event = decoder.decode(blob)
        by_message[event.message_id].append(event)
    db.close()
    assert sorted(by_message) == sorted(ids)
    for message_id in ids:
        assert [e.kind for e in by_message[message_id]] == LIFECYCLE, message_id
    assert not any((tmp_path / "data" / "audit-spool").glob("*/*.jsonl"))
