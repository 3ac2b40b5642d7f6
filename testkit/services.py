"""Private servers for tests and benchmarks: real processes on free loopback ports, stopped by
whoever started them."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import redis

from testkit.processes import REPO_ROOT, stop_process

__all__ = ["DynaliteServer", "RedisServer", "SentinelSet", "free_port"]


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (scripts/test installs it)")
    return binary


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

    def __init__(
        self, directory: Path, *, persistent: bool = False, args: Sequence[str] = ()
    ) -> None:
        """`args`: more redis-server options (e.g. --replicaof HOST PORT)."""
        self._binary = redis_binary()
        self.directory = directory
        self.persistent = persistent
        self.args = list(args)
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
        argv += self.args
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

    def kill(self) -> None:
        """SIGKILL: gone at once, whatever it had not yet passed on to its replicas."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
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


class SentinelSet:
    """A Redis primary, its replicas and three sentinels watching them, on free ports.

    The sentinels call the primary down after `down_after_ms` without an answer and promote
    a replica; `kill_primary()` then `wait_for_failover()` is a failover, as in production.
    """

    def __init__(
        self,
        directory: Path,
        *,
        replicas: int = 1,
        master: str = "smsgw",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ) -> None:
        self.directory = directory
        self.master = master
        self._down_after_ms = down_after_ms
        self._failover_timeout_ms = failover_timeout_ms
        # Replicas sync at once (Redis waits 5 s for more of them to share a transfer).
        fast_sync = ["--repl-diskless-sync-delay", "0"]
        self.servers = [RedisServer(self._dir("redis-0"), args=fast_sync)]
        primary = self.servers[0].port
        for n in range(1, replicas + 1):
            replica_of = [*fast_sync, "--replicaof", "127.0.0.1", str(primary)]
            self.servers.append(RedisServer(self._dir(f"redis-{n}"), args=replica_of))
        self.sentinel_ports = [free_port() for _ in range(3)]
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def sentinels(self) -> list[str]:
        """host:port of each sentinel, as [redis] sentinels takes them."""
        return [f"127.0.0.1:{port}" for port in self.sentinel_ports]

    def start(self, timeout_s: float = 15.0) -> None:
        for server in self.servers:
            server.start()
        self.wait_for_replicas(len(self.servers) - 1, timeout_s)
        primary = self.servers[0].port
        for n, port in enumerate(self.sentinel_ports):
            directory = self._dir(f"sentinel-{n}")
            config = directory / "sentinel.conf"  # a sentinel rewrites its own file
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"logfile {directory / 'sentinel.log'}\n"
                f"sentinel monitor {self.master} 127.0.0.1 {primary} 2\n"
                f"sentinel down-after-milliseconds {self.master} {self._down_after_ms}\n"
                f"sentinel failover-timeout {self.master} {self._failover_timeout_ms}\n"
            )
            argv = [redis_binary(), str(config), "--sentinel"]
            self._sentinels.append(
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        # Ready when every sentinel knows the primary and has found the others.
        self._until(timeout_s, lambda: all(self._peers(port) >= 2 for port in self.sentinel_ports))

    def primary_port(self) -> int | None:
        """The primary's port, as the sentinels now say (None: none agrees on one)."""
        for port in self.sentinel_ports:
            with contextlib.suppress(redis.RedisError):
                client = redis.Redis(port=port, socket_timeout=0.5, decode_responses=True)
                try:
                    answer = client.sentinel_get_master_addr_by_name(self.master)
                finally:
                    client.close()
                if answer:
                    return int(answer[1])
        return None

    def primary(self) -> RedisServer:
        port = self.primary_port()
        return next(server for server in self.servers if server.port == port)

    def cut_replication(self) -> None:
        """Cut the primary's replicas off (their links closed, reconnects refused): the
        primary goes on taking writes that nobody else has, as when replication lags."""
        client = redis.Redis(port=self.primary().port, socket_timeout=1)
        try:
            client.execute_command("ACL", "SETUSER", "default", "-psync", "-sync")
            client.execute_command("CLIENT", "KILL", "TYPE", "replica")
        finally:
            client.close()

    def fail_over(self) -> None:
        """A coordinated failover (SENTINEL FAILOVER): the primary is demoted while it runs."""
        client = redis.Redis(port=self.sentinel_ports[0], socket_timeout=2)
        try:
            client.execute_command("SENTINEL", "FAILOVER", self.master)
        finally:
            client.close()

    def kill_primary(self) -> RedisServer:
        """SIGKILL the primary (the sentinels' current one); return it."""
        primary = self.primary()
        primary.kill()
        return primary

    def wait_for_failover(self, old_port: int, timeout_s: float = 15.0) -> int:
        """Wait until the sentinels name another primary and it answers as one; its port."""
        found: list[int] = []

        def promoted() -> bool:
            port = self.primary_port()
            if port is None or port == old_port or not _role_is(port, "master"):
                return False
            found.append(port)
            return True

        self._until(timeout_s, promoted)
        return found[-1]

    def wait_for_replicas(self, count: int, timeout_s: float = 15.0) -> None:
        """Wait until the primary has `count` replicas online."""
        port = self.servers[0].port if not self._sentinels else self.primary_port()

        def connected() -> bool:
            with contextlib.suppress(redis.RedisError):
                client = redis.Redis(port=port, socket_timeout=0.5)
                try:
                    info = client.info("replication")
                    replicas = [info.get(f"slave{n}", {}) for n in range(len(self.servers))]
                    return sum(r.get("state") == "online" for r in replicas) >= count
                finally:
                    client.close()
            return False

        self._until(timeout_s, connected)

    def stop(self) -> None:
        for process in self._sentinels:
            stop_process(process, timeout=10)
        self._sentinels = []
        for server in self.servers:
            server.stop()

    def _dir(self, name: str) -> Path:
        path = self.directory / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _peers(self, port: int) -> int:
        with contextlib.suppress(redis.RedisError):
            client = redis.Redis(port=port, socket_timeout=0.5)
            try:
                return int(client.sentinel_master(self.master)["num-other-sentinels"])
            finally:
                client.close()
        return -1

    @staticmethod
    def _until(timeout_s: float, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise RuntimeError("the sentinels did not get there in time")
            time.sleep(0.05)


def _role_is(port: int, role: str) -> bool:
    with contextlib.suppress(redis.RedisError):
        client = redis.Redis(port=port, socket_timeout=0.5)
        try:
            return bool(client.execute_command("ROLE")[0] == role.encode())
        finally:
            client.close()
    return False
