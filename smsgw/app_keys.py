"""Typed keys of what the app factory (smsgw/app.py) wires into the application: the
settings, the lifecycle state and the shared backends.

The API's handlers read them; the API's own intake state (client auth, quotas, idempotency,
geo permissions, seen receipts) is keyed in smsgw/api/keys.py, its metrics in
smsgw/api/metrics.py. Everything this module imports lies below the API.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from redis.asyncio import Redis

from smsgw.audit import AuditWriter
from smsgw.dispatch import Dispatcher, Router
from smsgw.otp import OtpService
from smsgw.providers import ReceiptTagger
from smsgw.queue import MessageQueue
from smsgw.replicas import Heartbeat
from smsgw.settings import Settings

__all__ = [
    "AUDIT",
    "DISPATCHER",
    "HEARTBEAT",
    "OTP",
    "QUEUE",
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
    # The bounded wait for queued messages has begun; a second stop step does not wait again.
    drain_started: bool = False


SETTINGS = web.AppKey("settings", Settings)
STATE = web.AppKey("state", LifecycleState)
REDIS = web.AppKey("redis", Redis)  # only set when redis.url is configured
QUEUE = web.AppKey("queue", MessageQueue)
ROUTER = web.AppKey("router", Router)
OTP = web.AppKey("otp", OtpService)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
AUDIT = web.AppKey("audit", AuditWriter)
RECEIPT_TAGS = web.AppKey("receipt_tags", ReceiptTagger)
HEARTBEAT = web.AppKey("heartbeat", Heartbeat)  # only with Redis
