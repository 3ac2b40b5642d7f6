"""Run a benchmark server in its own process: uvloop, no access log, port file, signals.

Shared by the fake provider and the bare baseline so both are measured under the
same server settings.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import uvloop
from aiohttp import web

from smsgw.processes import write_port_file

# Hung requests (fault injection) must not keep a stopping server alive for aiohttp's
# default 60 s.
SHUTDOWN_TIMEOUT_S = 2.0
# wrk opens all its connections at once; the kernel default backlog (128) drops some.
BACKLOG = 2048


def add_listen_args(parser: argparse.ArgumentParser) -> None:
    """Add `--host`, `--port` and `--port-file` to a server's command line."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    parser.add_argument(
        "--port-file", type=Path, default=None, help="write the bound port here once listening"
    )


async def serve(
    make_app: Callable[[], web.Application],
    *,
    host: str,
    port: int,
    port_file: Path | None = None,
) -> None:
    """Serve the app until SIGTERM or SIGINT, then shut down cleanly.

    Takes a factory so the app is built inside the running (uvloop) loop.
    """
    runner = web.AppRunner(
        make_app(),
        access_log=None,
        handle_signals=False,
        # Cancel the handler when its client disconnects (hung requests end with it).
        handler_cancellation=True,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, host, port, backlog=BACKLOG)
        await site.start()
        bound = int(runner.addresses[0][1])
        if port_file is not None:
            write_port_file(port_file, bound)
        print(f"listening on http://{host}:{bound}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def run(make_app: Callable[[], web.Application], args: argparse.Namespace) -> None:
    """Blocking entry point for a script's `main()`; `args` from `add_listen_args`."""
    uvloop.run(serve(make_app, host=args.host, port=args.port, port_file=args.port_file))
