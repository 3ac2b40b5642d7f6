"""`smsgw serve --workers N`: N processes share one port, each a whole gateway; a stop
signal drains them all."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from smsgw import cli
from smsgw.settings import parse_settings
from tests.helpers import read_sms
from tests.test_serve import OTP_SECRET, clean_env, free_port, stop, wait_exit


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.timeout(90)
async def test_two_workers_share_the_port_and_drain_on_sigterm(
    tmp_path: Path, redis_url: str
) -> None:
    sms = tmp_path / "sms.jsonl"
    config = tmp_path / "smsgw.toml"
    # OTP state in Redis (--workers requires it); the queue stays in each process.
    config.write_text(
        f'[redis]\nurl = "{redis_url}"\n[queue]\nbackend = "memory"\n'
        f'[otp]\nsecret = "{OTP_SECRET}"\n'
        f'[[providers]]\nname = "console"\nkind = "console"\npath = "{sms}"\n'
    )
    port, port_file = free_port(), tmp_path / "port"
    argv = [sys.executable, "-m", "smsgw", "serve", "--config", str(config)]
    argv += ["--port", str(port), "--workers", "2", "--port-file", str(port_file)]
    log = (tmp_path / "smsgw.log").open("wb")
    proc = subprocess.Popen(argv, cwd=tmp_path, env=clean_env(), stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert proc.poll() is None, (tmp_path / "smsgw.log").read_text()
            assert time.monotonic() < deadline, "workers did not start"
            await asyncio.sleep(0.05)
        assert int(port_file.read_text()) == port
        assert len(children_of(proc.pid)) == 2

        # A new connection per request: the kernel spreads them over both processes.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as http:
            for n in range(60):
                url = f"http://127.0.0.1:{port}/v1/messages"
                async with http.post(url, json={"to": "+14155550100", "body": f"m{n}"}) as r:
                    assert r.status == 202
        proc.send_signal(signal.SIGTERM)
        assert await wait_exit(proc, 40) == 0, (tmp_path / "smsgw.log").read_text()
    finally:
        stop(proc)
        log.close()
    assert sorted(s["body"] for s in read_sms(sms)) == sorted(f"m{n}" for n in range(60))
    with sqlite3.connect(tmp_path / "data" / "audit.sqlite3") as db:
        replicas = {
            row[0]
            for row in db.execute(
                "SELECT DISTINCT json_extract(event, '$.replica') FROM audit_events"
            )
        }
    assert len(replicas) == 2  # both processes took messages


def test_children_get_serves_arguments_without_workers_and_port_file() -> None:
    argv = ["serve", "--config", "c.toml", "--workers", "4", "--port=9000", "--port-file", "p"]
    assert cli._child_args(argv) == ["--config", "c.toml", "--port=9000"]
    assert cli._child_args(["serve", "--workers=2", "--role", "worker"]) == ["--role", "worker"]


def test_with_the_memory_limiter_each_worker_takes_its_share_of_the_rate() -> None:
    settings = parse_settings(
        {"providers": [{"name": "c", "kind": "console", "rate": 5000}]}, env={}
    )
    (provider,) = cli._with_rate_share(settings, 4).providers
    assert provider.rate == 1250


def test_workers_need_a_fixed_port(tmp_path: Path) -> None:
    assert cli.main(["serve", "--port", "0", "--workers", "2"]) == 2
    assert cli.main(["serve", "--workers", "0"]) == 2


def test_workers_need_the_otp_state_in_redis(capsys: pytest.CaptureFixture[str]) -> None:
    # In memory, a code started in one process could not be verified in another.
    assert cli.main(["serve", "--port", "18080", "--workers", "2"]) == 2
    assert "otp.store" in capsys.readouterr().err
