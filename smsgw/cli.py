"""The `smsgw` command: serve, check-config, config-schema, migrate, supervise."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec
import structlog
import uvloop
from aiohttp import web

from smsgw.app import create_app, drain
from smsgw.audit import open_store
from smsgw.errors import AuditUnavailable, ConfigError
from smsgw.heap import settle_heap
from smsgw.log import configure_logging
from smsgw.processes import is_loopback, write_port_file
from smsgw.settings import AuditSettings, Settings, config_schema, load_settings
from smsgw.supervise import add_supervise_arguments, run_supervise
from smsgw.workers import run_workers

__all__ = ["main"]

_log = structlog.get_logger("smsgw")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smsgw", description="Self-hosted OTP and SMS gateway")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway (API and dispatcher)")
    serve.add_argument("--config", help="TOML file (default: $SMSGW_CONFIG, else built-ins)")
    serve.add_argument("--host", help="bind address (overrides server.host)")
    serve.add_argument("--port", type=int, help="TCP port (overrides server.port)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    serve.add_argument(
        "--port-file", help="write the bound port here once listening (useful with --port 0)"
    )
    serve.add_argument(
        "--role",
        choices=["all", "api", "worker"],
        help="all: API and dispatcher; api: accept and enqueue; worker: dispatch only "
        "(overrides server.role; split roles need the Redis queue)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="run this many gateway processes sharing the port (SO_REUSEPORT)",
    )
    # Set by --workers for its children.
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument("--rate-share", type=int, default=1, help=argparse.SUPPRESS)

    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("config", nargs="?", help="TOML file (default: $SMSGW_CONFIG)")

    commands.add_parser(
        "config-schema",
        help="print the JSON Schema of the configuration file (for editors and CI)",
    )

    migrate = commands.add_parser(
        "migrate", help="create the audit table and its index (idempotent), then exit"
    )
    migrate.add_argument("--config", help="TOML file (default: $SMSGW_CONFIG, else built-ins)")

    supervise = commands.add_parser(
        "supervise", help="run and autoscale queue worker processes (needs redis.url)"
    )
    add_supervise_arguments(supervise)

    args = parser.parse_args(argv)
    if args.command == "config-schema":
        # Needs no configuration: it describes every file, not this one.
        print(json.dumps(config_schema(), indent=2))
        return 0
    config_path = args.config or os.environ.get("SMSGW_CONFIG")
    env = dict(os.environ)
    if getattr(args, "role", None):
        env["SMSGW_SERVER_ROLE"] = args.role
    try:
        settings = load_settings(config_path, env=env)
        if args.command == "check-config":
            print(f"ok: {config_path or 'built-in defaults'}")
            return 0
        if args.command == "migrate":
            configure_logging("info")
            return asyncio.run(_migrate(settings.audit))
        if args.command == "supervise":
            return run_supervise(settings, args, config_path)
        settings = _with_bind_overrides(settings, args.host, args.port)
        if args.workers < 1:
            raise ConfigError("--workers", "must be >= 1")
        if args.workers > 1 and settings.server.port == 0:
            raise ConfigError("--port", "--workers needs a fixed port for its processes to share")
        if args.workers > 1 and not settings.uses_redis(settings.otp.store):
            # Each process would keep its own verifications, send counters and idempotency
            # keys: a code started in one could not be verified in another, and per-number
            # limits would be N times looser.
            raise ConfigError(
                "otp.store",
                "--workers needs OTP state shared by its processes: set redis.url "
                "(the OTP store then lives in Redis)",
            )
    except ConfigError as exc:
        print(f"smsgw: configuration error: {exc.key}: {exc.problem}", file=sys.stderr)
        return 2
    configure_logging(args.log_level)
    if not settings.clients and not is_loopback(settings.server.host):
        _log.error(
            "refusing_to_start",
            detail="no [[clients]] configured: unauthenticated access is only allowed on a "
            "loopback address. Configure API keys or bind to 127.0.0.1.",
            host=settings.server.host,
        )
        return 2
    if args.workers > 1:
        return run_workers(
            _child_args(argv if argv is not None else sys.argv[1:]),
            args.workers,
            args.port_file,
            stop_timeout_s=settings.server.drain_timeout_s + 15,
        )
    if args.rate_share > 1 and not settings.uses_redis(settings.limiter.backend):
        settings = _with_rate_share(settings, args.rate_share)
    uvloop.run(_serve(settings, args.port_file, reuse_port=args.reuse_port))
    return 0


def _child_args(argv: Sequence[str]) -> list[str]:
    """serve's own arguments without --workers and --port-file (the parent handles them)."""
    args = list(argv)[1:]  # without "serve"
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--workers", "--port-file"):
            skip = "=" not in arg
            continue
        kept.append(arg)
    return kept


def _with_rate_share(settings: Settings, share: int) -> Settings:
    # Each of `share` processes paces alone: together they keep to each provider's rate.
    providers = tuple(
        p if p.rate is None else msgspec.structs.replace(p, rate=p.rate / share)
        for p in settings.providers
    )
    return msgspec.structs.replace(settings, providers=providers)


async def _migrate(settings: AuditSettings) -> int:
    store = await open_store(settings)
    try:
        await store.migrate()
    except AuditUnavailable as exc:
        _log.error("migrate_failed", backend=settings.backend, detail=str(exc))
        return 1
    finally:
        await store.close()
    target = settings.table if settings.backend == "dynamodb" else settings.path
    _log.info("migrated", backend=settings.backend, target=target)
    return 0


def _with_bind_overrides(settings: Settings, host: str | None, port: int | None) -> Settings:
    server = settings.server
    if host is not None:
        server = msgspec.structs.replace(server, host=host)
    if port is not None:
        if not 0 <= port <= 65535:
            raise ConfigError("--port", "must be between 0 and 65535")
        server = msgspec.structs.replace(server, port=port)
    return msgspec.structs.replace(settings, server=server)


async def _serve(settings: Settings, port_file: str | None, *, reuse_port: bool = False) -> None:
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(
            runner,
            settings.server.host,
            settings.server.port,
            backlog=1024,
            reuse_port=reuse_port or None,
        )
        await site.start()
        settle_heap()
        for address in runner.addresses:
            host, port = address[0], address[1]
            _log.info("listening", url=f"http://{host}:{port}", host=host, port=port)
        if port_file is not None:
            write_port_file(Path(port_file), runner.addresses[0][1])
        await stop.wait()
        _log.info("stopping", detail="intake closed, draining the queue")
        await drain(app)
    finally:
        await runner.cleanup()
    _log.info("stopped")
