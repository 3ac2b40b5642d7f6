"""Start servers as their own processes and wait for them: port files, readiness, SIGTERM.

Synchronous on purpose: tests and benchmarks run the system under test and the fakes as
separate processes and only wait on them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

REPO_ROOT: Final = Path(__file__).resolve().parent.parent

__all__ = [
    "REPO_ROOT",
    "process_cpu_s",
    "start_process",
    "start_replicas",
    "stop_process",
    "thread_cpu_s",
    "wait_ready",
]


def wait_ready(url: str, timeout: float = 10.0) -> None:
    """Poll `url` with GET until it answers 200; TimeoutError after `timeout` seconds."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"wait_ready needs an http(s) URL, got {url!r}")
    deadline = time.monotonic() + timeout
    last_error = "no attempt"
    while True:
        try:
            # Scheme checked above, so S310's file:/custom-scheme worry does not apply.
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return
                last_error = f"status {response.status}"
        except (urllib.error.URLError, OSError) as exc:  # HTTPError is a URLError
            last_error = str(exc)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{url} not ready after {timeout} s: {last_error}")
        time.sleep(0.05)


def start_process(
    argv: Sequence[str],
    port_file: Path | str,
    *,
    timeout: float = 15.0,
    env: Mapping[str, str] | None = None,
    cwd: Path = REPO_ROOT,
    log_path: Path | None = None,
    port: int = 0,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start a server with `--port PORT --port-file PORT_FILE` appended (port 0: any free
    one); return it and its port.

    `argv[0]` may be "python" to mean this interpreter. Output goes to `log_path`
    (default: the port file's name + ".log"), which is quoted if the server dies early.
    `cwd` defaults to the repository root so `-m bench.…` and `-m testkit.…` resolve.
    """
    port_file = Path(port_file)
    port_file.unlink(missing_ok=True)  # a stale file would give a wrong port
    log_path = log_path or port_file.with_name(port_file.name + ".log")
    command = [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]
    command += ["--port", str(port), "--port-file", str(port_file)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout
    while True:
        bound = _read_port(port_file)
        if bound is not None:
            return proc, bound
        if proc.poll() is not None:
            raise RuntimeError(
                f"{command} exited {proc.returncode} before listening:\n"
                + log_path.read_text(errors="replace")[-2000:]
            )
        if time.monotonic() >= deadline:
            stop_process(proc)
            raise TimeoutError(f"{command} wrote no port file within {timeout} s")
        time.sleep(0.02)


def start_replicas(
    config: Path,
    directory: Path,
    count: int,
    processes: list[subprocess.Popen[bytes]],
    *,
    log_level: str | None = "warning",
) -> list[str]:
    """Start `count` `smsgw serve` replicas of `config`, one after another, each ready; their
    base URLs. Each is appended to `processes` as soon as it runs, so the caller stops them
    all even when a later one fails to start."""
    urls = []
    for i in range(count):
        argv = ["python", "-m", "smsgw", "serve", "--config", str(config)]
        if log_level is not None:
            argv += ["--log-level", log_level]
        replica, port = start_process(argv, directory / f"replica{i}.port")
        processes.append(replica)
        urls.append(f"http://127.0.0.1:{port}")
        wait_ready(f"{urls[-1]}/readyz")
    return urls


def _read_port(port_file: Path) -> int | None:
    try:
        text = port_file.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text else None


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> int:
    """SIGTERM, wait up to `timeout`, then SIGKILL; return the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` (every thread), from /proc/PID/stat."""
    return process_cpu_s_of(Path(f"/proc/{pid}/stat"))


def thread_cpu_s(pid: int) -> tuple[float, float]:
    """(the main thread's, every other thread's) CPU seconds of process `pid`: the event
    loop runs on the main thread; the SQLite store, DNS and `to_thread` calls on others."""
    main = process_cpu_s_of(Path(f"/proc/{pid}/task/{pid}/stat"))
    return main, process_cpu_s(pid) - main


def process_cpu_s_of(stat: Path) -> float:
    """User + system CPU seconds in a /proc stat file (a process's or one thread's)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS
