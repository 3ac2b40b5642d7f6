"""`smsgw serve --workers N`: N full gateway processes sharing one port (SO_REUSEPORT).

The kernel spreads new connections over the processes, so one host uses all its cores.
This process only starts them, restarts one that dies unexpectedly, and passes SIGTERM and
SIGINT on; each child drains as a single `smsgw serve` would. With the memory limiter each
child paces its providers at rate / N, so together they keep to the rate; with the Redis
limiter they share the one schedule.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import structlog

__all__ = ["run_workers"]

_log = structlog.get_logger("smsgw")

_POLL_S = 0.2
# A child that dies this soon after starting is not restarted at once again and again.
_RESTART_BACKOFF_S = 1.0
_START_TIMEOUT_S = 30.0


class _Child:
    def __init__(self, index: int, argv: list[str], port_file: Path) -> None:
        self.index = index
        self._argv = argv
        self.port_file = port_file
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> None:
        self.port_file.unlink(missing_ok=True)
        argv = [*self._argv, "--port-file", str(self.port_file)]
        self.proc = subprocess.Popen(argv)
        self.started_at = time.monotonic()
        _log.info("worker_started", worker=self.index, pid=self.proc.pid)

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)


def run_workers(
    serve_args: Sequence[str], count: int, port_file: str | None, stop_timeout_s: float
) -> int:
    """Run `count` children `smsgw serve <serve_args>` until a stop signal; their worst exit
    code (0 when every child drained cleanly)."""
    stopping: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if not stopping:
            _log.info("stopping_workers", signal=signal.Signals(signum).name)
        stopping.append(signum)
        for child in children:
            child.signal(signum)

    with tempfile.TemporaryDirectory(prefix="smsgw-workers-") as tmp:
        base = [sys.executable, "-m", "smsgw", "serve", *serve_args]
        base += ["--reuse-port", "--rate-share", str(count)]
        children = [_Child(i, base, Path(tmp) / f"{i}.port") for i in range(count)]
        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for child in children:
                child.start()
            if not _wait_listening(children, port_file):
                on_signal(signal.SIGTERM, None)
            return _supervise(children, stopping, stop_timeout_s)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _wait_listening(children: list[_Child], port_file: str | None) -> bool:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not all(child.port_file.exists() for child in children):
        if any(c.proc is not None and c.proc.poll() is not None for c in children):
            _log.error("worker_failed_to_start")
            return False
        if time.monotonic() > deadline:
            _log.error("workers_start_timeout", timeout_s=_START_TIMEOUT_S)
            return False
        time.sleep(0.05)
    if port_file is not None:
        port = children[0].port_file.read_text().strip()
        partial = Path(port_file + ".partial")
        partial.write_text(f"{port}\n")
        partial.replace(port_file)
    _log.info("workers_listening", workers=len(children))
    return True


def _supervise(children: list[_Child], stopping: list[int], stop_timeout_s: float) -> int:
    stop_deadline: float | None = None
    while True:
        if stopping and stop_deadline is None:
            stop_deadline = time.monotonic() + stop_timeout_s
        running = [c for c in children if c.proc is not None and c.proc.poll() is None]
        if not running and stopping:
            codes = [abs(int(c.proc.returncode or 0)) for c in children if c.proc is not None]
            return max(codes)
        if stop_deadline is not None and time.monotonic() > stop_deadline:
            for child in running:
                _log.error("worker_kill", worker=child.index, reason="stop timeout")
                if child.proc is not None:
                    child.proc.kill()
        if not stopping:
            for child in children:
                if child.proc is not None and child.proc.poll() is not None:
                    _log.error("worker_died", worker=child.index, exit_code=child.proc.returncode)
                    if time.monotonic() - child.started_at < _RESTART_BACKOFF_S:
                        time.sleep(_RESTART_BACKOFF_S)
                    child.start()
        time.sleep(_POLL_S)
