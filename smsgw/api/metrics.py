"""GET /metrics: Prometheus text from the app's own registry (tests build many apps).

Counters the code keeps anyway (dispatch, audit, limiter, breakers) are read when scraped
instead of being counted twice; gauges of shared state (queue backlog, replicas alive) are
read from the queue and Redis at scrape time. Labels are route templates, provider names and
fixed words: never a phone number, a body or a code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from smsgw.app_keys import AUDIT, DISPATCHER, HEARTBEAT, OTP, QUEUE, REDIS, ROUTER, SETTINGS, STATE
from smsgw.metric_children import LabelledChildren
from smsgw.redis_connect import primary_watch
from smsgw.redis_keys import RedisKeys
from smsgw.replicas import alive
from smsgw.scaling import desired_workers, desired_workers_gauge, pending_work

if TYPE_CHECKING:
    from smsgw.dispatch import Dispatcher

__all__ = [
    "METRICS",
    "ApiMetrics",
    "install",
    "metrics",
    "metrics_middleware",
    "watch_event_loop",
]

_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
_LAG_PROBE_S = 0.05


class ApiMetrics:
    def __init__(self) -> None:
        registry = self.registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        self.http_requests = Counter(
            "smsgw_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self.http_seconds = Histogram(
            "smsgw_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["route", "method"],
            buckets=_HTTP_BUCKETS,
            registry=registry,
        )
        self._request_counts = LabelledChildren(self.http_requests)
        self._request_seconds = LabelledChildren(self.http_seconds)
        self.otp_starts = Counter(
            "smsgw_otp_starts",
            "OTP starts: accepted, or refused (too-many-sends, resend-cooldown, queue-full)",
            ["result"],
            registry=registry,
        )
        self.otp_checks = Counter(
            "smsgw_otp_checks",
            "OTP checks: approved, wrong_code, max_attempts, not_found",
            ["result"],
            registry=registry,
        )
        self.loop_lag = Histogram(
            "smsgw_event_loop_lag_seconds",
            f"How late the event loop ran a {_LAG_PROBE_S} s timer",
            buckets=_LAG_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "smsgw_queue_depth",
            "Unfinished messages by part of the queue (high, normal, delayed)",
            ["part"],
            registry=registry,
        )
        self.queue_age = Gauge(
            "smsgw_queue_oldest_age_seconds",
            "Age of the oldest unfinished message by part (delayed: how overdue)",
            ["part"],
            registry=registry,
        )
        self.audit_backlog = Gauge(
            "smsgw_audit_backlog_events",
            "Audit events recorded, not yet stored or spooled",
            registry=registry,
        )
        self.audit_spool = Gauge(
            "smsgw_audit_spool_bytes",
            "Bytes of audit events waiting in the local spool",
            registry=registry,
        )
        self.breaker_state = Gauge(
            "smsgw_breaker_state",
            "Circuit breaker per provider: 0 closed, 1 half-open, 2 open",
            ["provider"],
            registry=registry,
        )
        self.replicas = Gauge(
            "smsgw_replicas_alive",
            "Replicas of a role with a recent heartbeat (this one alone without Redis)",
            ["role"],
            registry=registry,
        )
        self.desired_workers = desired_workers_gauge(registry)
        self.draining = Gauge(
            "smsgw_draining", "1 while this replica is stopping", registry=registry
        )

    def request_done(self, route: str, method: str, status: int, started: float) -> None:
        """Count one answered request (`started`: its time.monotonic() on arrival)."""
        self._request_counts(route, method, str(status)).inc()
        self._request_seconds(route, method).observe(time.monotonic() - started)


METRICS = web.AppKey("metrics", ApiMetrics)


class _StatsCollector(Collector):
    """Counters the app keeps anyway, read at scrape time."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    def collect(self) -> Iterator[Metric]:
        app = self._app
        if AUDIT in app:
            audit = CounterMetricFamily(
                "smsgw_audit_events", "Audit events by what happened to them", labels=["result"]
            )
            for name, value in app[AUDIT].stats.items():
                audit.add_metric([name], value)
            yield audit
        if DISPATCHER in app:
            dispatcher = app[DISPATCHER]
            dispatch = CounterMetricFamily(
                "smsgw_dispatch_events",
                "Dispatcher events (late slots dropped, duplicates skipped, ...)",
                labels=["event"],
            )
            for name, value in dispatcher.stats.items():
                dispatch.add_metric([name], value)
            yield dispatch
            yield from _lane_metrics(dispatcher)
            # Only a shared (Redis) limiter makes calls to count.
            lease_calls = dispatcher.limiter.stats.get("lease_calls")
            if lease_calls is not None:
                leases = CounterMetricFamily(
                    "smsgw_limiter_lease_calls", "Redis calls that leased send slots"
                )
                leases.add_metric([], lease_calls)
                yield leases
        if REDIS in app:
            yield from _redis_metrics(app)
        if OTP in app:
            pumping = CounterMetricFamily(
                "smsgw_pumping_refusals",
                "OTP starts refused as suspected SMS pumping, by scope and country (alert on it)",
                labels=["scope", "country"],
            )
            for (scope, country), count in app[OTP].guard.pumping_refusals.items():
                pumping.add_metric([scope, country], count)
            yield pumping
        if ROUTER in app:
            transitions = CounterMetricFamily(
                "smsgw_breaker_transitions",
                "Circuit breaker state changes by provider and new state",
                labels=["provider", "state"],
            )
            router = app[ROUTER]
            # Every series from the start (at 0), so rate() and alerts work before the first.
            for provider in router.breaker_states():
                for state in _BREAKER_STATES:
                    count = router.transitions[(provider, state)]
                    transitions.add_metric([provider, state], count)
            yield transitions


def _redis_metrics(app: web.Application) -> Iterator[Metric]:
    """Failovers seen and reconnects (with Sentinel), puts refused for want of replicas."""
    watch = primary_watch(app[REDIS])
    if watch is not None:
        changes = CounterMetricFamily(
            "smsgw_redis_primary_changes", "Redis primary changes (failovers) this replica saw"
        )
        changes.add_metric([], watch.primary_changes)
        connects = CounterMetricFamily(
            "smsgw_redis_connects", "Connections opened to the Redis primary (reconnects too)"
        )
        connects.add_metric([], watch.connects)
        yield from (changes, connects)
        promotable = GaugeMetricFamily(
            "smsgw_redis_replicas_promotable",
            "Replicas the sentinels could promote, at the last probe",
        )
        if watch.replicas is not None:
            promotable.add_metric([], watch.replicas)
        yield promotable
    # Only the Redis queue keeps counters (and waits for replicas).
    queue_stats = getattr(app[QUEUE], "stats", None) if QUEUE in app else None
    for stat, name, documentation in _REPLICA_STATS:
        value = None if queue_stats is None else queue_stats.get(stat)
        if value is not None:
            family = CounterMetricFamily(name, documentation)
            family.add_metric([], value)
            yield family


_REPLICA_STATS = (
    (
        "replica_ack_timeouts",
        "smsgw_queue_replica_ack_timeouts",
        "Puts answered 503: too few replicas had them in time (redis.min_replicas_ack)",
    ),
    (
        "unreplicated_puts",
        "smsgw_queue_unreplicated_puts",
        "Puts that waited for fewer replicas than redis.min_replicas_ack: no more to promote",
    ),
)


def _lane_metrics(dispatcher: Dispatcher) -> Iterator[Metric]:
    """Per provider: requests open now, this replica's share of the cap, the fleet cap,
    and how often the provider refused for too many open at once."""
    open_now = GaugeMetricFamily(
        "smsgw_provider_in_flight", "Requests open at the provider now", labels=["provider"]
    )
    share = GaugeMetricFamily(
        "smsgw_provider_in_flight_limit",
        "Requests this replica may have open at the provider (its share of max_in_flight)",
        labels=["provider"],
    )
    cap = GaugeMetricFamily(
        "smsgw_provider_in_flight_cap",
        "max_in_flight: requests all replicas together may have open at the provider",
        labels=["provider"],
    )
    refusals = CounterMetricFamily(
        "smsgw_provider_concurrency_refusals",
        "Requests the provider refused as too many open at once (429 / 20429), sent again",
        labels=["provider"],
    )
    limits = dispatcher.in_flight
    for name, lane in dispatcher.lanes.items():
        open_now.add_metric([name], lane.open_now)
        refusals.add_metric([name], lane.refusals)
        if limits is not None and (fleet_cap := limits.cap(name)) is not None:
            cap.add_metric([name], fleet_cap)
            share.add_metric([name], limits.limit(name) or 0)
    yield from (open_now, share, cap, refusals)


def install(app: web.Application) -> ApiMetrics:
    metrics_ = ApiMetrics()
    metrics_.registry.register(_StatsCollector(app))
    app[METRICS] = metrics_
    return metrics_


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    instruments = app[METRICS]
    settings = app[SETTINGS]
    parts = await app[QUEUE].backlog()
    for part in parts:
        instruments.queue_depth.labels(part.part).set(part.messages)
        instruments.queue_age.labels(part.part).set(part.oldest_age_s)
    if AUDIT in app:
        instruments.audit_backlog.set(app[AUDIT].backlog)
        instruments.audit_spool.set(await asyncio.to_thread(app[AUDIT].spool_bytes))
    if ROUTER in app:
        for provider, state in app[ROUTER].breaker_states().items():
            instruments.breaker_state.labels(provider).set(_BREAKER_STATES[state])
    role = settings.server.role
    alive = app[HEARTBEAT].alive if HEARTBEAT in app else 1
    instruments.replicas.labels(role).set(alive)
    workers_now = alive if role == "worker" else await _workers_alive(app)
    backlog, oldest = pending_work(parts)
    instruments.desired_workers.set(desired_workers(settings.scaling, backlog, oldest, workers_now))
    instruments.draining.set(1 if app[STATE].draining else 0)
    return web.Response(
        body=generate_latest(instruments.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def _workers_alive(app: web.Application) -> int:
    """Dispatching replicas with a recent heartbeat (this one alone without Redis)."""
    if REDIS not in app:
        return 1
    return await alive(app[REDIS], RedisKeys(app[SETTINGS].redis.key_prefix), "worker")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: sees the final status, problem responses included."""
    started = time.monotonic()
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        request.app[METRICS].request_done(route, request.method, status, started)


async def watch_event_loop(instruments: ApiMetrics) -> None:
    """Run forever: how late a short timer fires is how long callbacks waited for the loop."""
    loop = asyncio.get_running_loop()
    while True:
        planned = loop.time() + _LAG_PROBE_S
        await asyncio.sleep(_LAG_PROBE_S)
        instruments.loop_lag.observe(max(loop.time() - planned, 0.0))
