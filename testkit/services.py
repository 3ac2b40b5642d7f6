"""Private servers for tests and benchmarks: real processes on free loopback ports, stopped by
whoever started them."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from testkit.processes import REPO_ROOT, stop_process

__all__ = ["DynaliteServer", "RedisServer", "free_port"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A private redis-server that a test can stop, restart and flush.

    It keeps its port and directory across stop() and start(), so clients reconnect to it
    in place. `persistent`: an append-only file fsynced at every write, so a restart (or a
    crash) keeps every acknowledged write, as a production Redis should; otherwise nothing
    is written to disk.
    """

    def __init__(self, directory: Path, *, persistent: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (scripts/test installs it)")
        self._binary = binary
        self.directory = directory
        self.persistent = persistent
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        argv = [self._binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--dir", str(self.directory), "--logfile", str(self.directory / "redis.log")]
        if self.persistent:
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            argv += ["--appendonly", "no"]
        self._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            while True:
                # A persistent server answers LOADING while it replays its file.
                with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                    if client.ping():
                        return
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM (Redis finishes its append-only file and exits), then wait for the exit."""
        if self._process is not None:
            stop_process(self._process, timeout=10)
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def flush(self) -> None:
        client = redis.Redis(port=self.port)
        try:
            client.flushall()
            client.script_flush()
        finally:
            client.close()


class DynaliteServer:
    """A private dynalite (DynamoDB on LevelDB) that a test can stop and start again.

    It keeps its port and data directory across stop() and start(), so a test can take
    "DynamoDB" away for a while and bring it back with its tables and items intact.
    """

    def __init__(self, directory: Path) -> None:
        binary = REPO_ROOT / "node_modules" / ".bin" / "dynalite"
        if not binary.exists():
            raise RuntimeError(
                f"{binary} is missing: run `npm ci` in {REPO_ROOT} (scripts/test does it)"
            )
        self._binary = binary
        self._directory = directory
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs (benchmarks read its CPU time)."""
        return self._process.pid if self.running and self._process is not None else None

    def start(self, timeout_s: float = 15.0) -> None:
        argv = [str(self._binary), "--host", "127.0.0.1", "--port", str(self.port)]
        argv += ["--path", str(self._directory / "data")]
        argv += ["--createTableMs", "0", "--deleteTableMs", "0", "--updateTableMs", "0"]
        with (self._directory / "dynalite.log").open("ab") as log:
            self._process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"dynalite did not start on port {self.port} "
                    f"(see {self._directory / 'dynalite.log'})"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        # Waits for the exit: the next start() opens the same LevelDB, which is locked
        # until this process is gone.
        if self._process is not None:
            stop_process(self._process, timeout=10)
        self._process = None
