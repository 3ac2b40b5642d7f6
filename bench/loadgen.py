"""Drive load with wrk; the process helpers (start, wait, stop) live in `testkit.processes`
and are re-exported here for the benchmarks that import them from this module.

Everything here is synchronous: benchmarks run the system under test, the fake provider
and wrk as separate processes and only wait on them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from testkit.processes import REPO_ROOT, start_process, stop_process, wait_ready

__all__ = [
    "OTP_POST_LUA",
    "REPO_ROOT",
    "WrkResult",
    "ensure_wrk",
    "run_wrk",
    "start_process",
    "stop_process",
    "wait_ready",
]
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
