"""Typed keys for what the app factory stores on the application."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web
from redis.asyncio import Redis

from smsgw.api.auth import ClientAuth
from smsgw.api.geo import GeoPermissions
from smsgw.api.idempotency import Idempotency
from smsgw.api.quotas import Quotas
from smsgw.api.receipts import SeenReceipts
from smsgw.audit import AuditWriter
from smsgw.dispatch import Dispatcher, Router
from smsgw.otp import OtpService
from smsgw.providers import ReceiptTagger
from smsgw.queue import MessageQueue
from smsgw.replicas import Heartbeat
from smsgw.settings import Settings

if TYPE_CHECKING:
    from smsgw.api.metrics import ApiMetrics

__all__ = [
    "AUDIT",
    "AUTH",
    "DISPATCHER",
    "GEO",
    "HEARTBEAT",
    "IDEMPOTENCY",
    "METRICS",
    "OTP",
    "QUEUE",
    "QUOTAS",
    "RECEIPTS",
    "RECEIPT_TAGS",
    "REDIS",
    "ROUTER",
    "SETTINGS",
    "STATE",
    "LifecycleState",
]


@dataclass(slots=True)
class LifecycleState:
    # Set at the first stop signal: intake refuses new work, /readyz answers 503.
    draining: bool = False
    # The bounded wait for queued messages ran once; a second stop step does not wait again.
    drained: bool = False


SETTINGS = web.AppKey("settings", Settings)
STATE = web.AppKey("state", LifecycleState)
AUTH = web.AppKey("auth", ClientAuth)
IDEMPOTENCY = web.AppKey("idempotency", Idempotency)
QUOTAS = web.AppKey("quotas", Quotas)
REDIS = web.AppKey("redis", Redis)  # only set when redis.url is configured
QUEUE = web.AppKey("queue", MessageQueue)
ROUTER = web.AppKey("router", Router)
OTP = web.AppKey("otp", OtpService)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
AUDIT = web.AppKey("audit", AuditWriter)
RECEIPTS = web.AppKey("receipts", SeenReceipts)
RECEIPT_TAGS = web.AppKey("receipt_tags", ReceiptTagger)
GEO = web.AppKey("geo", GeoPermissions)
HEARTBEAT = web.AppKey("heartbeat", Heartbeat)  # only with Redis
# Typed by name: the metrics module imports these keys.
METRICS: web.AppKey[ApiMetrics] = web.AppKey("metrics")
