"""A real `smsgw serve` stopped with SIGTERM while every audit event is still buffered, and
one killed (SIGKILL) while the database does not answer its writes."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
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


def stored_kinds(database: Path) -> dict[str, list[str]]:
    kinds: dict[str, list[str]] = defaultdict(list)
    with sqlite3.connect(database) as db:
        for message_id, blob in db.execute(
            "SELECT message_id, event FROM audit_events ORDER BY message_id, key"
        ):
            kinds[message_id].append(msgspec.json.decode(blob, type=AuditEvent).kind)
    return kinds


@pytest.mark.timeout(90)
async def test_sigkill_while_a_write_hangs_keeps_events_older_than_two_flush_intervals(
    tmp_path: Path,
) -> None:
    database = tmp_path / "data" / "audit.sqlite3"
    with fake_provider(tmp_path) as fake_url:
        config = write_config(tmp_path / "smsgw.toml", fake_url, rate=1000)
        async with smsgw_serve(config, tmp_path) as (proc, base), aiohttp.ClientSession() as http:
            # The database stops taking writes (another connection holds its write lock):
            # each write of the gateway waits (busy_timeout, 5 s) before it fails.
            blocker = sqlite3.connect(database, isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")
            try:
                async with http.post(f"{base}/v1/messages/batch", json=batch(100, "kill")) as resp:
                    assert resp.status == 202
                    ids = (await resp.json())["ids"]
                # Longer than two flush intervals (0.2 s each), far less than the 5 s the
                # write waits: its events are only on disk if the writer put them there.
                await asyncio.sleep(1.0)
                proc.kill()
                assert await wait_exit(proc, 10) == -signal.SIGKILL
            finally:
                blocker.rollback()
                blocker.close()

        # The next start on the same data directory replays what the dead one left.
        async with smsgw_serve(config, tmp_path) as (proc, base):
            deadline = time.monotonic() + 20
            while True:
                kinds = stored_kinds(database)
                if all(kinds[m][:2] == ["accepted", "queued"] for m in ids):
                    break
                assert time.monotonic() < deadline, (tmp_path / "smsgw.log").read_text()
                await asyncio.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            assert await wait_exit(proc, 40) == 0
    assert not any((tmp_path / "data" / "audit-spool").glob("*/*.*"))
