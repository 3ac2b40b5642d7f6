"""`smsgw serve --workers N`: N full gateway processes sharing one port (SO_REUSEPORT).

The kernel spreads new connections over the processes, so one host uses all its cores.
This process only starts them, restarts one that dies unexpectedly, and passes SIGTERM and
SIGINT on; each child drains as a single `smsgw serve` would. With the memory limiter each
child paces its providers at rate / N, so together they keep to the rate; with the Redis
limiter they share the one schedule.
"""

from __future__ import annotations

import signal
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import structlog

from smsgw.processes import ServeProcess, serve_argv, write_port_file

__all__ = ["run_workers"]

_log = structlog.get_logger("smsgw")

_POLL_S = 0.2
# A child that dies this soon after starting is not restarted at once again and again.
_RESTART_BACKOFF_S = 1.0
_START_TIMEOUT_S = 30.0


def run_workers(
    serve_args: Sequence[str], count: int, port_file: str | None, stop_timeout_s: float
) -> int:
    """Run `count` children `smsgw serve <serve_args>` until a stop signal; their worst exit
    code (0 when every child drained cleanly)."""
    stopping: list[int] = []
    children: list[ServeProcess] = []  # by worker index

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if not stopping:
            _log.info("stopping_workers", signal=signal.Signals(signum).name)
        stopping.append(signum)
        for child in children:
            child.terminate(stop_timeout_s, signum)

    with tempfile.TemporaryDirectory(prefix="smsgw-workers-") as tmp:
        argv = serve_argv(*serve_args, "--reuse-port", "--rate-share", str(count))
        port_files = [Path(tmp) / f"{i}.port" for i in range(count)]
        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for index, path in enumerate(port_files):
                children.append(_start(index, argv, path))
            if not _wait_listening(children, port_file):
                on_signal(signal.SIGTERM, None)
            return _supervise(children, argv, stopping)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _start(index: int, argv: list[str], port_file: Path) -> ServeProcess:
    child = ServeProcess(argv, port_file)
    _log.info("worker_started", worker=index, pid=child.pid)
    return child


def _wait_listening(children: list[ServeProcess], port_file: str | None) -> bool:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not all(child.listened() for child in children):
        if any(child.exited() for child in children):
            _log.error("worker_failed_to_start")
            return False
        if time.monotonic() > deadline:
            _log.error("workers_start_timeout", timeout_s=_START_TIMEOUT_S)
            return False
        time.sleep(0.05)
    if port_file is not None:
        write_port_file(Path(port_file), children[0].port())
    _log.info("workers_listening", workers=len(children))
    return True


def _supervise(children: list[ServeProcess], argv: list[str], stopping: list[int]) -> int:
    while True:
        if stopping and all(child.exited() for child in children):
            return max(abs(child.returncode or 0) for child in children)
        for index, child in enumerate(children):
            if child.overdue():
                _log.error("worker_kill", worker=index, reason="stop timeout")
                child.kill()
            elif not stopping and child.exited():
                _log.error("worker_died", worker=index, exit_code=child.returncode)
                if child.running_s < _RESTART_BACKOFF_S:
                    time.sleep(_RESTART_BACKOFF_S)
                children[index] = _start(index, argv, child.port_file)
        time.sleep(_POLL_S)
