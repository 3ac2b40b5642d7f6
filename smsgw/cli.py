"""The `smsgw` command: serve, check-config, migrate."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
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
from smsgw.log import configure_logging
from smsgw.settings import AuditSettings, Settings, load_settings

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

    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("config", nargs="?", help="TOML file (default: $SMSGW_CONFIG)")

    migrate = commands.add_parser(
        "migrate", help="create the audit table and its index (idempotent), then exit"
    )
    migrate.add_argument("--config", help="TOML file (default: $SMSGW_CONFIG, else built-ins)")

    args = parser.parse_args(argv)
    config_path = args.config or os.environ.get("SMSGW_CONFIG")
    try:
        settings = load_settings(config_path)
        if args.command == "check-config":
            print(f"ok: {config_path or 'built-in defaults'}")
            return 0
        if args.command == "migrate":
            configure_logging("info")
            return asyncio.run(_migrate(settings.audit))
        settings = _with_bind_overrides(settings, args.host, args.port)
    except ConfigError as exc:
        print(f"smsgw: configuration error: {exc.key}: {exc.problem}", file=sys.stderr)
        return 2
    configure_logging(args.log_level)
    if not settings.clients and not _is_loopback(settings.server.host):
        _log.error(
            "refusing_to_start",
            detail="no [[clients]] configured: unauthenticated access is only allowed on a "
            "loopback address. Configure API keys or bind to 127.0.0.1.",
            host=settings.server.host,
        )
        return 2
    uvloop.run(_serve(settings, args.port_file))
    return 0


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


def _write_port_file(path: Path, port: int) -> None:
    # Written whole then renamed, so a reader polling for the file never sees it half written.
    partial = path.with_name(path.name + ".partial")
    partial.write_text(f"{port}\n")
    partial.replace(path)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _serve(settings: Settings, port_file: str | None) -> None:
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, settings.server.host, settings.server.port, backlog=1024)
        await site.start()
        for address in runner.addresses:
            host, port = address[0], address[1]
            _log.info("listening", url=f"http://{host}:{port}", host=host, port=port)
        if port_file is not None:
            _write_port_file(Path(port_file), runner.addresses[0][1])
        await stop.wait()
        _log.info("stopping", detail="intake closed, draining the queue")
        await drain(app)
    finally:
        await runner.cleanup()
    _log.info("stopped")
