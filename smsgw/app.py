"""The application factory: the only place that wires concrete backends together."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from smsgw._aio import cancel_and_wait
from smsgw.api import MAX_BATCH_BODY, add_routes, error_middleware, quiet_bad_requests
from smsgw.api.auth import ClientAuth
from smsgw.api.geo import GeoPermissions
from smsgw.api.idempotency import Idempotency, IdempotencyBackend, MemoryIdempotencyBackend
from smsgw.api.idempotency_redis import RedisIdempotencyBackend
from smsgw.api.keys import AUTH, GEO, IDEMPOTENCY, QUOTAS, RECEIPTS
from smsgw.api.metrics import METRICS, metrics_middleware, watch_event_loop
from smsgw.api.metrics import install as install_metrics
from smsgw.api.quotas import MemoryQuotaCounter, QuotaCounter, Quotas, RedisQuotaCounter
from smsgw.api.receipts import MemorySeenReceipts, RedisSeenReceipts, SeenReceipts
from smsgw.app_keys import (
    AUDIT,
    DISPATCHER,
    HEARTBEAT,
    OTP,
    QUEUE,
    RECEIPT_TAGS,
    REDIS,
    ROUTER,
    SETTINGS,
    STATE,
    LifecycleState,
)
from smsgw.audit import AuditStore, AuditWriter, Spool, default_replica_name, open_store
from smsgw.dispatch import Dispatcher, Route, Router
from smsgw.limiter import MemoryLimiter, ProviderLimiter
from smsgw.limiter.in_flight import InFlightLimits, MemoryInFlight, RedisInFlight
from smsgw.limiter.redis import RedisLimiter
from smsgw.otp import CodeHasher, MemoryOtpStore, OtpService, OtpStore
from smsgw.otp.guard import (
    AbuseGuard,
    MemoryAbuseCounters,
    MemoryFailedChecks,
    RedisAbuseCounters,
    RedisFailedChecks,
)
from smsgw.otp.redis_store import RedisOtpStore
from smsgw.providers import ReceiptTagger, build_provider, provider_class
from smsgw.providers.receipt_tags import receipt_keys
from smsgw.queue import MemoryQueue
from smsgw.queue.redis import RedisQueue, default_consumer_name
from smsgw.queue.sealing import QueueCipher
from smsgw.redis_connect import PROBE_INTERVAL_S, connect_redis, primary_watch, probe_primary
from smsgw.redis_keys import RedisKeys
from smsgw.replicas import Heartbeat
from smsgw.settings import Settings

__all__ = ["create_app", "drain"]

_log = structlog.get_logger("smsgw")
_SWEEP_INTERVAL_S = 30.0
_REDIS_STARTUP_WAIT_S = 10.0


def create_app(settings: Settings) -> web.Application:
    # Metrics outermost: they see the status the error middleware answered with.
    app = web.Application(
        middlewares=[metrics_middleware, error_middleware], client_max_size=MAX_BATCH_BODY
    )
    install_metrics(app)
    quiet_bad_requests()  # requests aiohttp's parser refuses: one line, not a traceback each
    app[SETTINGS] = settings
    app[STATE] = LifecycleState()
    app[AUTH] = ClientAuth(settings.clients)
    app[GEO] = GeoPermissions(settings.clients, settings.abuse.countries)
    # One tagger for the senders and the webhook of this process.
    app[RECEIPT_TAGS] = _receipt_tagger(settings)
    role = settings.server.role
    add_routes(app, role)
    app.cleanup_ctx.extend([_redis, _observability, _providers, _audit, _queue])
    if role != "worker":
        app.cleanup_ctx.append(_otp)  # intake: OTP state, idempotency, quotas, receipts
    if role != "api":
        app.cleanup_ctx.append(_dispatcher)
    return app


async def drain(app: web.Application) -> bool:
    """Stop intake, then wait (bounded) until every accepted message has an outcome."""
    state = app[STATE]
    state.draining = True
    if state.drain_started or DISPATCHER not in app:
        return True
    state.drain_started = True
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


def _receipt_tagger(settings: Settings) -> ReceiptTagger:
    """The receipt tag key, with loud warnings where receipts are less protected than they
    should be (only when receipts are taken: public_url set and a provider sending them)."""
    receipt_providers = [
        p for p in settings.active_providers if provider_class(p).receives_receipts
    ]
    takes_receipts = settings.server.public_url is not None and bool(receipt_providers)
    keys = receipt_keys(settings.server, settings.otp)
    if takes_receipts and keys is None:
        _log.warning(
            "ephemeral_receipt_secret",
            detail="neither server.receipt_secret nor otp.secret is set: receipt tags use a "
            "random key that dies with this process, so receipts of messages sent by other "
            "replicas or before a restart are refused (403). Set server.receipt_secret.",
        )
    # Workers send but serve no webhook: the warning belongs to the replicas that take them.
    if takes_receipts and settings.server.role != "worker":
        for entry in receipt_providers:
            for event, detail in provider_class(entry).receipt_warnings(entry):
                _log.warning(event, provider=entry.name, detail=detail)
    if keys is None:
        return ReceiptTagger(secrets.token_bytes(32))
    return ReceiptTagger(*keys)


def _previous_otp_secret(settings: Settings) -> bytes | None:
    previous = settings.otp.previous_secret
    return None if previous is None else previous.encode()


async def _redis(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS].redis
    if not settings.configured:
        yield
        return
    client = connect_redis(settings)
    probe = None
    try:
        await _wait_for_redis(client)
        app[REDIS] = client
        if primary_watch(client) is not None:
            probe = asyncio.create_task(_probe_primary(client), name="smsgw-redis-primary")
        yield
    finally:
        await cancel_and_wait([probe])
        await client.aclose(close_connection_pool=True)  # the pool is the client's own


async def _probe_primary(client: Redis) -> None:
    # Every second, and at once after a change (how many replicas the new primary has).
    changed = asyncio.Event()
    watch = primary_watch(client)
    assert watch is not None  # started only with Sentinel
    watch.listeners.append(changed.set)
    try:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROBE_INTERVAL_S):
                    await changed.wait()
            changed.clear()
            await _probe_once(client)
    finally:
        watch.listeners.remove(changed.set)


async def _probe_once(client: Redis) -> None:
    try:
        await probe_primary(client)
    except RedisError as exc:  # no sentinel answers: commands will fail and say so
        _log.warning("redis_primary_unknown", detail=str(exc))
    except Exception:
        _log.exception("redis_probe_bug")  # the probe must go on


async def _wait_for_redis(client: Redis) -> None:
    # A replica started together with its Redis may be a little early: wait a bounded time,
    # then fail the start loudly rather than serve without its shared state.
    deadline = time.monotonic() + _REDIS_STARTUP_WAIT_S
    while True:
        try:
            await client.ping()
            return
        except RedisError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis is unreachable: {exc}") from exc
            _log.warning("redis_unreachable", detail=str(exc))
            await asyncio.sleep(0.5)


async def _observability(app: web.Application) -> AsyncIterator[None]:
    """The event-loop lag probe, and this replica's heartbeat when Redis is shared."""
    settings = app[SETTINGS]
    watcher = asyncio.create_task(watch_event_loop(app[METRICS]), name="smsgw-loop-lag")
    heartbeat = None
    if REDIS in app:
        heartbeat = Heartbeat(
            app[REDIS], _redis_keys(settings), settings.server.role, default_replica_name()
        )
        app[HEARTBEAT] = heartbeat
        heartbeat.start()
    yield
    await cancel_and_wait([watcher])
    if heartbeat is not None:
        await heartbeat.stop()


def _redis_keys(settings: Settings) -> RedisKeys:
    return RedisKeys(settings.redis.key_prefix)


async def _providers(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    routes: list[Route] = []
    try:
        for provider_settings in settings.active_providers:
            provider = build_provider(
                provider_settings, settings.server.public_url, app[RECEIPT_TAGS]
            )
            await provider.start()
            countries = frozenset(provider_settings.countries) - {"*"}
            if "*" in provider_settings.countries:
                countries = frozenset()
            routes.append(
                Route(
                    provider,
                    provider_settings.weight,
                    countries,
                    max_segments=provider_settings.max_segments,
                )
            )
        dispatch = settings.dispatch
        app[ROUTER] = Router(
            routes,
            breaker=settings.breaker,
            max_in_flight=max(1, int(dispatch.concurrency * dispatch.provider_share)),
        )
        yield
    finally:
        for route in routes:
            await route.provider.close()


async def _audit(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS].audit
    store = await open_store(settings)
    try:
        await _prepare_audit_store(store, settings.backend)
        spool = Spool.open(settings.spool_dir)
        writer = AuditWriter(store, spool, settings, default_replica_name())
        app[AUDIT] = writer
        writer.start()
        yield
        # Last of all (cleanup runs in reverse): the dispatcher has recorded its outcomes.
        await writer.close(app[SETTINGS].server.drain_timeout_s)
    finally:
        await store.close()


async def _prepare_audit_store(store: AuditStore, backend: str) -> None:
    if backend == "sqlite":
        # The embedded store sets itself up; DynamoDB tables are made by `smsgw migrate`.
        await store.migrate()


async def _queue(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if not settings.uses_redis(settings.queue.backend):
        app[QUEUE] = MemoryQueue(settings.queue.max_size)
        yield
        return
    queue = RedisQueue(
        app[REDIS],
        _redis_keys(settings),
        settings.queue,
        default_consumer_name(),
        cipher=QueueCipher.from_settings(settings),
        replica_acks=settings.redis.replica_acks,
        replica_ack_timeout_s=settings.redis.replica_ack_timeout_s,
    )
    app[QUEUE] = queue
    try:
        yield
    finally:
        # After the dispatcher's cleanup: writes back the last acks and retries.
        await queue.close()


async def _otp(app: web.Application) -> AsyncIterator[None]:
    """OTP state, idempotency keys, quota counters and seen receipts: in Redis when shared,
    else here."""
    settings = app[SETTINGS]
    store: OtpStore
    idempotency: IdempotencyBackend
    quota_counter: QuotaCounter
    receipts: SeenReceipts
    sweeper: asyncio.Task[None] | None = None
    if settings.uses_redis(settings.otp.store):
        redis, keys = app[REDIS], _redis_keys(settings)
        store = RedisOtpStore(redis, keys)
        idempotency = RedisIdempotencyBackend(
            redis, keys, client_budget_bytes=settings.idempotency.client_budget_bytes
        )
        quota_counter = RedisQuotaCounter(redis, keys)
        receipts = RedisSeenReceipts(redis, keys)
        guard = AbuseGuard(
            settings.abuse, RedisAbuseCounters(redis), RedisFailedChecks(redis, keys), keys
        )
    else:
        store = MemoryOtpStore()
        idempotency = MemoryIdempotencyBackend(
            client_budget_bytes=settings.idempotency.client_budget_bytes
        )
        quota_counter = MemoryQuotaCounter()
        receipts = MemorySeenReceipts()
        guard = AbuseGuard(
            settings.abuse, MemoryAbuseCounters(), MemoryFailedChecks(), _redis_keys(settings)
        )

    app[OTP] = service = OtpService(
        settings.otp,
        store,
        app[QUEUE],
        CodeHasher(_otp_secret(settings), _previous_otp_secret(settings)),
        app[AUDIT],
        guard,
    )
    app[IDEMPOTENCY] = Idempotency(idempotency, settings.idempotency.max_answer_bytes)
    app[QUOTAS] = Quotas(settings.clients, quota_counter)
    app[RECEIPTS] = receipts
    if not settings.uses_redis(settings.otp.store):

        async def sweep() -> None:
            # Redis expires its keys; the embedded state is kept bounded here: verifications,
            # send logs (as long as the daily cap needs), failed checks, verified marks.
            while True:
                await asyncio.sleep(_SWEEP_INTERVAL_S)
                service.sweep(time.time())

        sweeper = asyncio.create_task(sweep(), name="smsgw-otp-sweeper")
    yield
    await cancel_and_wait([sweeper])


async def _dispatcher(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    rates = {p.name: p.rate for p in settings.active_providers}
    caps = {p.name: p.max_in_flight for p in settings.active_providers}
    limiter: ProviderLimiter
    in_flight: InFlightLimits
    # The concurrency caps are shared exactly where the rates are: one switch for both.
    if settings.uses_redis(settings.limiter.backend):
        keys = _redis_keys(settings)
        limiter = RedisLimiter(app[REDIS], rates, keys, settings.limiter)
        in_flight = RedisInFlight(app[REDIS], caps, keys, default_consumer_name())
    else:
        limiter = MemoryLimiter(rates, pace=settings.limiter.pace)
        in_flight = MemoryInFlight(caps)
    await in_flight.start()
    dispatcher = Dispatcher(
        app[QUEUE],
        app[ROUTER],
        limiter,
        settings.dispatch,
        app[AUDIT],
        app[METRICS].registry,
        in_flight=in_flight,
        rates=rates,
        rate_units={p.name: p.rate_unit for p in settings.active_providers},
    )
    app[DISPATCHER] = dispatcher
    dispatcher.start()
    yield
    await drain(app)
    await dispatcher.stop()
    await in_flight.close_all()
    await limiter.close()
