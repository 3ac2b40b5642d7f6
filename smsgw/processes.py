"""Child `smsgw serve` processes: starting, watching and stopping them.

Both process supervisors use this: `smsgw serve --workers N` (workers.py: N processes on one
port) and `smsgw supervise` (supervise/: an autoscaled fleet of queue workers). A child is
given a port file and writes it once it listens (`write_port_file`), which is how a parent
tells a child that got through its start-up from one that is still starting or failed.
"""

from __future__ import annotations

import ipaddress
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["ServeProcess", "is_loopback", "serve_argv", "write_port_file"]


def serve_argv(*args: str) -> list[str]:
    """The command line of a child `smsgw serve` with this interpreter."""
    return [sys.executable, "-m", "smsgw", "serve", *args]


def write_port_file(path: Path, port: int) -> None:
    # Written whole then renamed, so a reader polling for the file never sees it half written.
    partial = path.with_name(path.name + ".partial")
    partial.write_text(f"{port}\n")
    partial.replace(path)


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address: `smsgw serve` refuses to start without
    [[clients]] anywhere else."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServeProcess:
    """One run of a child `smsgw serve`; started at once. Times are time.monotonic()."""

    def __init__(self, argv: list[str], port_file: Path) -> None:
        port_file.unlink(missing_ok=True)  # left by an earlier run of this slot
        self.proc = subprocess.Popen([*argv, "--port-file", str(port_file)])
        self.pid = self.proc.pid
        self.port_file = port_file
        self.started_at = time.monotonic()
        # Past this, a child asked to stop is killed (see terminate and overdue).
        self.stop_deadline = math.inf

    @property
    def running_s(self) -> float:
        return time.monotonic() - self.started_at

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def exited(self) -> bool:
        return self.proc.poll() is not None

    def listened(self) -> bool:
        """Got through its start-up: `smsgw serve` writes the port file once listening."""
        return self.port_file.exists()

    def port(self) -> int:
        return int(self.port_file.read_text().strip())

    def send(self, signum: int) -> None:
        if not self.exited():
            self.proc.send_signal(signum)

    def terminate(self, timeout_s: float, signum: int = signal.SIGTERM) -> None:
        """Ask it to drain and stop (SIGTERM, or the signal the parent got); `overdue()` once
        `timeout_s` have passed since the first time it was asked."""
        self.send(signum)
        self.stop_deadline = min(self.stop_deadline, time.monotonic() + timeout_s)

    def overdue(self) -> bool:
        return not self.exited() and time.monotonic() > self.stop_deadline

    def kill(self) -> None:
        if not self.exited():
            self.proc.kill()
        self.stop_deadline = math.inf  # nothing more to do than wait
