"""Drive load with wrk and start benchmark servers as separate processes.

Everything here is synchronous: benchmarks run the system under test, the fake provider
and wrk as separate processes and only wait on them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
OTP_POST_LUA: Final = Path(__file__).with_name("otp_post.lua")
_RESULT_PREFIX: Final = "RESULT "


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run, as reported by the Lua script's `done()`."""

    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int  # wrk's summary.errors.status: responses with status >= 400
    requests: int
    socket_errors: int = 0  # connect + read + write errors and timeouts
    duration_s: float = 0.0


def ensure_wrk() -> str:
    """Path of `wrk`, installing the Debian package if it is missing (we run as root)."""
    found = shutil.which("wrk")
    if found is not None:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    detail = ""
    # A fresh machine may have no package lists yet: retry once after an update.
    for update_first in (False, True):
        try:
            if update_first:
                subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
            proc = subprocess.run(
                ["apt-get", "install", "-y", "wrk"],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
        except OSError as exc:  # no apt-get on this machine
            detail = str(exc)
            break
        found = shutil.which("wrk")
        if found is not None:
            return found
        detail = proc.stderr.strip()[-500:]
    raise RuntimeError(
        "wrk is not installed and `apt-get install -y wrk` failed; install the Debian "
        f"package `wrk` by hand. apt-get said: {detail}"
    )


def run_wrk(
    url: str,
    *,
    duration_s: int,
    connections: int,
    threads: int = 1,
    lua: Path = OTP_POST_LUA,
    env: Mapping[str, str] | None = None,
    request_timeout_s: int = 5,
) -> WrkResult:
    """Run wrk against `url` with a Lua script that prints a `RESULT {json}` line.

    `env` is added to this process's environment (e.g. `WRK_AUTHORIZATION`).
    wrk takes whole seconds only, hence the int duration.
    """
    if threads < 1 or connections < threads:
        raise ValueError("need threads >= 1 and connections >= threads (wrk's rule)")
    if duration_s < 1:
        raise ValueError("duration_s must be at least 1")
    argv = [
        ensure_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s}s",
        f"--timeout={request_timeout_s}s",
        "-s",
        str(lua),
        url,
    ]
    proc = subprocess.run(
        argv,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=duration_s + request_timeout_s + 30,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith(_RESULT_PREFIX):
            return _parse_result(line[len(_RESULT_PREFIX) :])
    raise RuntimeError(
        f"wrk exited {proc.returncode} without a RESULT line\n"
        f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )


def _parse_result(text: str) -> WrkResult:
    data = json.loads(text)
    return WrkResult(
        rps=float(data["rps"]),
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        non2xx=int(data["non2xx"]),
        requests=int(data["requests"]),
        socket_errors=sum(
            int(data[key]) for key in ("connect_errors", "read_errors", "write_errors", "timeouts")
        ),
        duration_s=data["duration_us"] / 1e6,
    )


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
    `cwd` defaults to the repository root so `-m bench.…` resolves.
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
