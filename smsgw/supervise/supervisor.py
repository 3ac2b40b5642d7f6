"""`smsgw supervise`: our own autoscaler for queue workers, for hosts without an orchestrator.

Every `interval` it reads the shared queue's backlog from Redis, asks the `Scaler`
(smsgw/scaling.py: the pure policy with cooldowns) how many workers to run, and starts or
retires `smsgw serve --role worker` processes (smsgw/processes.py) to match. Retiring is
SIGTERM to the newest ones: they hand back what they fetched but did not start, finish what
is in flight, and exit.

A worker is replaced when its process exits without being asked to, or when its heartbeat
(smsgw.replicas, in Redis) is older than BEAT_TTL_S: a hung process is SIGKILLed first. The
messages a dead worker held are taken over by the others after `queue.visibility_timeout_s`.
Heartbeats are judged only after Redis has answered for BEAT_TTL_S in a row, so a Redis outage
(during which no worker can beat) does not make the fleet look dead.

Every decision is counted in metrics (optional `/metrics` on --metrics-port) and logged: the
changes at info (scale_up, scale_down, worker_started, worker_retiring, worker_retired,
worker_restarted with reason exited | heartbeat), the others (hold, up_cooldown,
down_cooldown) at debug.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
import structlog
import uvloop
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from redis.asyncio import Redis

from smsgw.errors import ConfigError
from smsgw.log import Outage, configure_logging
from smsgw.processes import ServeProcess, is_loopback, serve_argv
from smsgw.queue.redis import RedisQueue
from smsgw.queue.sealing import QueueCipher
from smsgw.redis_connect import connect_redis
from smsgw.redis_keys import RedisKeys
from smsgw.redis_scripts import REDIS_FAILURES
from smsgw.replicas import BEAT_TTL_S, beats
from smsgw.retry import Backoff
from smsgw.scaling import Decision, Scaler, desired_workers_gauge, pending_work
from smsgw.settings import ScalingSettings, Settings

__all__ = [
    "Supervisor",
    "SupervisorMetrics",
    "add_supervise_arguments",
    "heartbeat_silence",
    "run_supervise",
]

_log = structlog.get_logger("smsgw")

_ROLE = "worker"
# A new worker has this long to beat for the first time (imports, Redis connection).
_STARTUP_GRACE_S = 30.0
# A worker that died before it listened (bad config, Redis unreachable at start) delays the
# next start: 1 s, doubling up to the max, until a worker gets as far as listening.
_BACKOFF_BASE_S = 1.0
_BACKOFF_MAX_S = 30.0
# On top of server.drain_timeout_s, before a stopping worker is SIGKILLed.
_STOP_MARGIN_S = 15.0


@dataclass(frozen=True, slots=True)
class _Options:
    scaling: ScalingSettings
    interval_s: float
    config_path: str | None
    log_level: str
    metrics_host: str
    metrics_port: int | None


def add_supervise_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML file (default: $SMSGW_CONFIG, else built-ins)")
    parser.add_argument("--min", type=int, dest="min_workers", help="overrides scaling.min_workers")
    parser.add_argument("--max", type=int, dest="max_workers", help="overrides scaling.max_workers")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between two decisions (default 1)"
    )
    parser.add_argument("--metrics-host", default="127.0.0.1", help="bind address of /metrics")
    parser.add_argument("--metrics-port", type=int, help="serve the supervisor's /metrics here")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])


def run_supervise(settings: Settings, args: argparse.Namespace, config_path: str | None) -> int:
    """`smsgw supervise`: raises ConfigError before starting anything if the setup is wrong."""
    options = _options(settings, args, config_path)
    configure_logging(options.log_level)
    return uvloop.run(Supervisor(settings, options).run())


def _options(settings: Settings, args: argparse.Namespace, config_path: str | None) -> _Options:
    if not settings.redis.configured:
        raise ConfigError("redis.url", "supervise reads the queue and heartbeats from Redis")
    if not settings.uses_redis(settings.queue.backend):
        raise ConfigError("queue.backend", "supervised workers need the Redis queue")
    if not settings.clients and not is_loopback(settings.server.host):
        # Each worker would refuse to start (see `smsgw serve`): say so once, here.
        raise ConfigError("server.host", "without [[clients]] workers bind loopback only")
    scaling = msgspec.structs.asdict(settings.scaling)
    for key in ("min_workers", "max_workers"):
        if getattr(args, key) is not None:
            scaling[key] = getattr(args, key)
    try:
        scaling_settings = ScalingSettings(**scaling)
    except ValueError as exc:
        raise ConfigError("--min/--max", str(exc)) from exc
    if not (args.interval > 0 and math.isfinite(args.interval)):
        raise ConfigError("--interval", "must be > 0")
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        raise ConfigError("--metrics-port", "must be between 0 and 65535")
    return _Options(
        scaling_settings,
        args.interval,
        config_path,
        args.log_level,
        args.metrics_host,
        args.metrics_port,
    )


def heartbeat_silence(
    last_beat: float | None, redis_now: float, running_s: float, grace_s: float = _STARTUP_GRACE_S
) -> float | None:
    """How long a worker has been silent if that makes it dead, else None.

    On the roll: dead once its last beat is older than BEAT_TTL_S. Not on the roll: it never
    beat, or was silent so long that another replica's beat removed it; dead after the grace.
    """
    if last_beat is not None:
        silent = redis_now - last_beat
        return silent if silent > BEAT_TTL_S else None
    return running_s if running_s > grace_s else None


class SupervisorMetrics:
    def __init__(self) -> None:
        registry = self.registry = CollectorRegistry()
        self.desired = desired_workers_gauge(registry)
        self.workers = Gauge(
            "smsgw_supervised_workers",
            "Worker processes this supervisor runs (not counting those draining to stop)",
            registry=registry,
        )
        self.decisions = Counter(
            "smsgw_supervisor_decisions",
            "Scaling decisions by reason (scale_up, scale_down, hold, up_cooldown, down_cooldown)",
            ["reason"],
            registry=registry,
        )
        self.restarts = Counter(
            "smsgw_worker_restarts",
            "Workers replaced, by reason (exited, heartbeat)",
            ["reason"],
            registry=registry,
        )
        self.backlog = Gauge(
            "smsgw_supervisor_backlog_messages",
            "Unfinished messages (high and normal) at the last decision",
            registry=registry,
        )
        self.oldest_age = Gauge(
            "smsgw_supervisor_oldest_age_seconds",
            "Age of the oldest unfinished message at the last decision",
            registry=registry,
        )


class _Worker(ServeProcess):
    def __init__(self, argv: list[str], port_file: Path) -> None:
        super().__init__(argv, port_file)
        # What its heartbeat is called (smsgw.audit.default_replica_name, run in the child).
        self.name = f"{socket.gethostname()}:{self.pid}"


class Supervisor:
    """Runs until SIGTERM or SIGINT, then stops every worker gracefully and returns 0."""

    def __init__(self, settings: Settings, options: _Options) -> None:
        self._settings = settings
        self._options = options
        self._keys = RedisKeys(settings.redis.key_prefix)
        self._scaler = Scaler(options.scaling, options.scaling.min_workers)
        self.metrics = SupervisorMetrics()
        self._workers: list[_Worker] = []  # oldest first
        self._retiring: list[_Worker] = []
        self._stop_timeout_s = settings.server.drain_timeout_s + _STOP_MARGIN_S
        # Since when Redis has answered every call (None: it did not answer the last one).
        self._redis_ok_since: float | None = None
        self._redis = Outage(_log, "redis_unreachable", "redis_reachable")
        # Delays starts after workers that died before they listened.
        self._start_backoff = Backoff(_BACKOFF_BASE_S, _BACKOFF_MAX_S, jitter="none")
        self._start_not_before = 0.0
        self._dead: list[str] = []  # heartbeat names of replaced workers, to take off the roll
        self._seq = 0
        self._tmp = Path()
        self._argv: list[str] = []

    async def run(self) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        redis = connect_redis(self._settings.redis)
        # It reads only lengths and ages, but a RedisQueue always has its key.
        cipher = QueueCipher.from_settings(self._settings)
        queue = RedisQueue(
            redis, self._keys, self._settings.queue, "smsgw-supervisor", cipher=cipher
        )
        try:
            runner = await self._serve_metrics()
        except OSError as exc:
            _log.error("metrics_bind_failed", port=self._options.metrics_port, detail=str(exc))
            await redis.aclose(close_connection_pool=True)
            return 2
        scaling = self._options.scaling
        _log.info("supervisor_started", min=scaling.min_workers, max=scaling.max_workers)
        with tempfile.TemporaryDirectory(prefix="smsgw-supervise-") as tmp:
            self._tmp, self._argv = Path(tmp), self._worker_argv()
            try:
                while not stop.is_set():
                    await self._tick(redis, queue)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self._options.interval_s)
                _log.info("supervisor_stopping", workers=len(self._workers))
            finally:
                await self._stop_all()
                await redis.aclose(close_connection_pool=True)
                if runner is not None:
                    await runner.cleanup()
        _log.info("supervisor_stopped")
        return 0

    # -- one round ------------------------------------------------------------------------

    async def _tick(self, redis: Redis, queue: RedisQueue) -> None:
        self._reap_retiring()
        for worker in [w for w in self._workers if w.exited()]:
            self._replace(worker, "exited", exit_code=worker.returncode)
        try:
            await self._check_heartbeats(redis)
            decision = await self._decide(queue)
        except REDIS_FAILURES as exc:
            # No decision: the fleet stays as it is until Redis answers again.
            self._redis.failed(detail=str(exc), workers=len(self._workers))
            self._redis_ok_since = None
        else:
            self._redis.ok()
            if self._redis_ok_since is None:
                self._redis_ok_since = time.monotonic()
            self.metrics.desired.set(decision.desired)
            self.metrics.decisions.labels(decision.reason).inc()
        self._resize()

    async def _decide(self, queue: RedisQueue) -> Decision:
        backlog, oldest = pending_work(await queue.backlog())
        self.metrics.backlog.set(backlog)
        self.metrics.oldest_age.set(oldest)
        before = self._scaler.current
        decision = self._scaler.decide(backlog, oldest, time.monotonic())
        # Changes at info (scale_up, scale_down); every other decision at debug.
        log = _log.info if decision.workers != before else _log.debug
        log(
            decision.reason,
            workers_before=before,
            workers=decision.workers,
            desired=decision.desired,
            backlog=backlog,
            oldest_age_s=round(oldest, 3),
        )
        return decision

    async def _check_heartbeats(self, redis: Redis) -> None:
        if self._dead:
            # Off the roll at once, so replicas_alive does not count them for BEAT_TTL_S more.
            await redis.zrem(self._keys.replicas(_ROLE), *self._dead)
            self._dead.clear()
        roll = await beats(redis, self._keys, _ROLE)
        seconds, micros = await redis.time()
        redis_now = int(seconds) + int(micros) / 1e6
        # After an outage, workers get BEAT_TTL_S to beat again before they are judged.
        since = self._redis_ok_since
        if since is None or time.monotonic() - since < BEAT_TTL_S:
            return
        for worker in list(self._workers):
            silent = heartbeat_silence(roll.get(worker.name), redis_now, worker.running_s)
            if silent is not None:
                worker.kill()
                self._replace(worker, "heartbeat", silent_s=round(silent, 1))

    # -- the fleet ------------------------------------------------------------------------

    def _replace(self, worker: _Worker, reason: str, **detail: object) -> None:
        """Count it out (its replacement starts in _resize) and keep it until it is reaped."""
        self._workers.remove(worker)
        self._retiring.append(worker)
        self._dead.append(worker.name)
        self.metrics.restarts.labels(reason).inc()
        _log.warning("worker_restarted", reason=reason, pid=worker.pid, **detail)
        if not worker.listened():
            self._start_not_before = time.monotonic() + self._start_backoff.next()
        else:
            self._start_backoff.reset()

    def _resize(self) -> None:
        target = self._scaler.current
        while len(self._workers) > target:
            worker = self._workers.pop()  # the newest: the oldest keep their warm state
            worker.terminate(self._stop_timeout_s)
            self._retiring.append(worker)
            _log.info("worker_retiring", pid=worker.pid, workers=len(self._workers))
        while len(self._workers) < target and time.monotonic() >= self._start_not_before:
            self._start_worker()
        self.metrics.workers.set(len(self._workers))

    def _start_worker(self) -> None:
        self._seq += 1
        try:
            worker = _Worker(self._argv, self._tmp / f"worker-{self._seq}.port")
        except OSError as exc:  # out of processes or memory: try again later
            _log.error("worker_start_failed", detail=str(exc))
            self._start_not_before = time.monotonic() + _BACKOFF_MAX_S
            return
        self._workers.append(worker)
        _log.info("worker_started", pid=worker.pid, workers=len(self._workers))

    def _reap_retiring(self) -> None:
        for worker in list(self._retiring):
            if worker.exited():
                self._retiring.remove(worker)
                _log.info("worker_retired", pid=worker.pid, exit_code=worker.returncode)
            elif worker.overdue():
                _log.error("worker_kill", pid=worker.pid, reason="stop timeout")
                worker.kill()

    async def _stop_all(self) -> None:
        for worker in self._workers:
            worker.terminate(self._stop_timeout_s)
        self._retiring += self._workers
        self._workers = []
        self.metrics.workers.set(0)
        # Each one drains within its own bound, then is killed; past that, stop waiting.
        give_up = time.monotonic() + self._stop_timeout_s + _STOP_MARGIN_S
        while self._retiring and time.monotonic() < give_up:
            self._reap_retiring()
            await asyncio.sleep(0.05)
        for worker in self._retiring:
            _log.error("worker_not_stopped", pid=worker.pid)

    def _worker_argv(self) -> list[str]:
        argv = serve_argv("--role", _ROLE, "--port", "0", "--log-level", self._options.log_level)
        if self._options.config_path is not None:
            argv += ["--config", self._options.config_path]
        return argv

    # -- /metrics ---------------------------------------------------------------------------

    async def _serve_metrics(self) -> web.AppRunner | None:
        if self._options.metrics_port is None:
            return None
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._options.metrics_host, self._options.metrics_port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        for address in runner.addresses:
            _log.info("metrics_listening", url=f"http://{address[0]}:{address[1]}/metrics")
        return runner

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )
