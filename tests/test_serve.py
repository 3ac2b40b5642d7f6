"""`smsgw serve` as a real process: graceful SIGTERM drains the queue, bad config exits 2."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from testkit.fake_provider import (
    max_in_sliding_window,
    twilio_provider_toml,
)
from testkit.services import free_port

REPO = Path(__file__).resolve().parents[1]
OTP_SECRET = "serve-test-secret-0123456789"
PHONES = [f"+141555501{n:02d}" for n in range(100)]


def clean_env() -> dict[str, str]:
    """The environment without SMSGW_* settings that would override the test's config."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End a process this test started (by its handle), whatever state it is in."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def fake_provider(tmp_path: Path, *args: str) -> Iterator[str]:
    """Run testkit.fake_provider as its own process; yields its base URL."""
    port_file = tmp_path / "fake.port"
    proc = subprocess.Popen(
        [
            sys.executable,
            *("-m", "testkit.fake_provider", "--port", "0", "--port-file", str(port_file)),
            *args,
        ],
        cwd=REPO,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while not port_file.exists():
            if proc.poll() is not None:
                raise AssertionError(f"fake provider exited: {proc.stderr.read()!r}")  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "fake provider did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{int(port_file.read_text())}"
    finally:
        stop(proc)
        if proc.stderr is not None:
            proc.stderr.close()


def write_config(path: Path, fake_url: str, *, rate: int) -> Path:
    path.write_text(
        f"""
[server]
host = "127.0.0.1"
drain_timeout_s = 30

[otp]
secret = "{OTP_SECRET}"

[queue]
max_size = 10000

{twilio_provider_toml(fake_url, rate=rate)}
"""
    )
    return path


@contextlib.asynccontextmanager
async def smsgw_serve(
    config: Path, tmp_path: Path
) -> AsyncIterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    log_path = tmp_path / "smsgw.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "smsgw", "serve", "--config", str(config), "--port", str(port)],
            cwd=tmp_path,
            env=clean_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 20
            while True:
                assert proc.poll() is None, log_path.read_text()
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{base}/readyz") as response:
                        if response.status == 200:
                            break
                assert time.monotonic() < deadline, "smsgw did not become ready"
                await asyncio.sleep(0.05)
        yield proc, base
    finally:
        stop(proc)


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        assert time.monotonic() < deadline, f"still running {timeout} s after SIGTERM"
        await asyncio.sleep(0.05)
    return proc.returncode


async def fake_stats(session: aiohttp.ClientSession, fake_url: str) -> dict[str, Any]:
    async with session.get(f"{fake_url}/_stats") as response:
        assert response.status == 200
        stats: dict[str, Any] = await response.json()
        return stats


def batch(count: int, prefix: str) -> dict[str, Any]:
    return {
        "messages": [{"to": PHONES[i % len(PHONES)], "body": f"{prefix} {i}"} for i in range(count)]
    }


@pytest.mark.timeout(90)
async def test_sigterm_sends_every_queued_message_before_exit(tmp_path: Path) -> None:
    rate = 200
    with fake_provider(tmp_path, "--latency-ms", "20") as fake_url:
        config = write_config(tmp_path / "smsgw.toml", fake_url, rate=rate)
        async with smsgw_serve(config, tmp_path) as (proc, base), aiohttp.ClientSession() as http:
            async with http.post(f"{base}/v1/messages/batch", json=batch(500, "drain")) as resp:
                assert resp.status == 202, await resp.text()
                ids = (await resp.json())["ids"]
            assert len(ids) == 500
            async with http.get(f"{base}/readyz") as resp:
                depth = (await resp.json())["queue_depth"]
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            # At 200/s the queue is far from empty: the stop really has to drain it.
            assert depth >= 400

            returncode = await wait_exit(proc, 40)
            took = time.monotonic() - signalled
            log = (tmp_path / "smsgw.log").read_text()
            assert returncode == 0, log
            stats = await fake_stats(http, fake_url)

    accepted = stats["accepted"]
    assert len(accepted) == 500
    assert sorted(a["body"] for a in accepted) == sorted(f"drain {i}" for i in range(500))
    assert stats["by_status"] == {"201": 500}  # nothing sent twice, nothing failed
    # Draining kept to the configured rate (a little slack for arrival jitter).
    assert max_in_sliding_window(stats["arrivals"], 1.0) <= rate * 1.02
    assert took >= (depth - rate) / rate * 0.9


@pytest.mark.timeout(90)
async def test_while_draining_new_work_is_refused(tmp_path: Path) -> None:
    with fake_provider(tmp_path, "--latency-ms", "20") as fake_url:
        config = write_config(tmp_path / "smsgw.toml", fake_url, rate=100)
        async with smsgw_serve(config, tmp_path) as (proc, base), aiohttp.ClientSession() as http:
            async with http.post(f"{base}/v1/messages/batch", json=batch(200, "queued")) as resp:
                assert resp.status == 202
            proc.send_signal(signal.SIGTERM)
            # The signal is handled asynchronously: readiness turning 503 shows it was.
            deadline = time.monotonic() + 5
            while True:
                async with http.get(f"{base}/readyz") as resp:
                    if resp.status == 503:
                        break
                    assert resp.status == 200
                assert time.monotonic() < deadline, "readyz never turned 503 after SIGTERM"
                await asyncio.sleep(0.01)
            answers: list[int | str] = []
            for _ in range(5):
                try:
                    async with http.post(
                        f"{base}/v1/messages", json={"to": PHONES[0], "body": "too late"}
                    ) as resp:
                        answers.append(resp.status)
                        if resp.status == 503:
                            problem = await resp.json(content_type=None)
                            assert problem["type"].endswith("draining")
                            assert int(resp.headers["Retry-After"]) >= 1
                except aiohttp.ClientConnectionError:
                    answers.append("refused")
                await asyncio.sleep(0.05)
            assert set(answers) <= {503, "refused"}, answers
            assert 503 in answers  # 200 messages at 100/s: two seconds of draining
            assert await wait_exit(proc, 40) == 0, (tmp_path / "smsgw.log").read_text()
            stats = await fake_stats(http, fake_url)
    bodies = [a["body"] for a in stats["accepted"]]
    assert len(bodies) == 200
    assert "too late" not in bodies


BAD_CONFIGS = [
    ("[otp]\nlenght = 6\n", "otp.lenght"),
    ('[server]\nport = "eighty"\n', "server.port"),
    ("[otp]\nlength = 11\n", "otp.length"),
    ('[otp]\nsecret = "short"\n', "otp.secret"),
    ('[queue]\nbackend = "kafka"\n', "queue.backend"),
    # A Redis queue with no key every replica shares: its messages would be lost.
    ('[redis]\nurl = "redis://127.0.0.1:1/0"\n', "queue.secret"),
    (
        '[[providers]]\nname = "twilio"\nkind = "twilio"\naccount_sid = "AC1"\n'
        'auth_token = "env:SMSGW_TEST_SURELY_UNSET_TOKEN"\nfrom = "+15005550006"\n',
        "providers[0].auth_token",
    ),
    ('[[clients]]\nname = "app"\nkey = "too-short"\n', "clients[0].key"),
    ("not = [valid toml", "smsgw.toml"),
]


@pytest.mark.parametrize(("text", "key"), BAD_CONFIGS, ids=[key for _, key in BAD_CONFIGS])
def test_serve_with_a_bad_config_exits_2_naming_the_key(
    tmp_path: Path, text: str, key: str
) -> None:
    config = tmp_path / "smsgw.toml"
    config.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "smsgw", "serve", "--config", str(config), "--port", "0"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result
    assert key in result.stderr.decode(), result.stderr


PUBLIC_HOST = "0.0.0.0"  # noqa: S104 - the refusal is what is tested; nothing binds


def test_serve_refuses_a_public_address_without_keys(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "smsgw", "serve", "--host", PUBLIC_HOST, "--port", "0"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result
    assert b"refusing_to_start" in result.stderr
