"""The application factory: the only place that wires concrete backends together."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from smsgw.api import MAX_BATCH_BODY, LifecycleState, add_routes, error_middleware
from smsgw.api.auth import ClientAuth
from smsgw.api.idempotency import IdempotencyStore
from smsgw.api.keys import AUTH, DISPATCHER, IDEMPOTENCY, OTP, QUEUE, ROUTER, SETTINGS, STATE
from smsgw.dispatch import Dispatcher, Route, Router
from smsgw.limiter import MemoryLimiter
from smsgw.otp import CodeHasher, MemoryOtpStore, OtpService
from smsgw.providers import build_provider
from smsgw.queue import MemoryQueue
from smsgw.settings import Settings

__all__ = ["create_app", "drain"]

_log = structlog.get_logger("smsgw")
_SWEEP_INTERVAL_S = 30.0


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BATCH_BODY)
    app[SETTINGS] = settings
    app[STATE] = LifecycleState()
    app[AUTH] = ClientAuth(settings.clients)
    app[IDEMPOTENCY] = IdempotencyStore()
    add_routes(app)
    app.cleanup_ctx.extend([_providers, _queue, _otp, _dispatcher])
    return app


async def drain(app: web.Application) -> bool:
    """Stop intake, then wait (bounded) until every accepted message has an outcome."""
    state = app[STATE]
    state.draining = True
    if state.drained or DISPATCHER not in app:
        return True
    state.drained = True
    timeout_s = app[SETTINGS].server.drain_timeout_s
    started = time.monotonic()
    drained = await app[DISPATCHER].drain(timeout_s)
    queue = app[QUEUE]
    if drained:
        _log.info("drained", seconds=round(time.monotonic() - started, 3))
    else:
        _log.error("drain_timeout", undelivered=queue.depth(), timeout_s=timeout_s)
    return drained


def _otp_secret(settings: Settings) -> bytes:
    if settings.otp.secret is not None:
        return settings.otp.secret.encode()
    _log.warning(
        "ephemeral_otp_secret",
        detail="otp.secret is not set: codes are hashed under a random key that dies with this "
        "process, and replicas cannot check each other's codes. Set otp.secret in production.",
    )
    return secrets.token_bytes(32)


async def _providers(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    routes: list[Route] = []
    try:
        for provider_settings in settings.active_providers:
            provider = build_provider(provider_settings)
            await provider.start()
            countries = frozenset(provider_settings.countries) - {"*"}
            if "*" in provider_settings.countries:
                countries = frozenset()
            routes.append(Route(provider, provider_settings.weight, countries))
        app[ROUTER] = Router(routes)
        yield
    finally:
        for route in routes:
            await route.provider.close()


async def _queue(app: web.Application) -> AsyncIterator[None]:
    app[QUEUE] = MemoryQueue(app[SETTINGS].queue.max_size)
    yield


async def _otp(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = MemoryOtpStore()
    app[OTP] = OtpService(settings.otp, store, app[QUEUE], CodeHasher(_otp_secret(settings)))

    async def sweep() -> None:
        while True:
            await asyncio.sleep(_SWEEP_INTERVAL_S)
            store.sweep(time.time(), settings.otp.send_window_s)

    sweeper = asyncio.create_task(sweep(), name="smsgw-otp-sweeper")
    yield
    sweeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sweeper


async def _dispatcher(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    limiter = MemoryLimiter({p.name: p.rate for p in settings.active_providers})
    dispatcher = Dispatcher(app[QUEUE], app[ROUTER], limiter, settings.dispatch)
    app[DISPATCHER] = dispatcher
    dispatcher.start()
    yield
    await drain(app)
    await dispatcher.stop()
    await limiter.close()
