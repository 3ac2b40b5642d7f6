"""Typed keys of the API's own intake state on the application (set by the app factory).

The keys of the settings, lifecycle and shared backends are in smsgw/app_keys.py.
"""

from __future__ import annotations

from aiohttp import web

from smsgw.api.auth import ClientAuth
from smsgw.api.geo import GeoPermissions
from smsgw.api.idempotency import Idempotency
from smsgw.api.quotas import Quotas
from smsgw.api.receipts import SeenReceipts

__all__ = ["AUTH", "GEO", "IDEMPOTENCY", "QUOTAS", "RECEIPTS"]

AUTH = web.AppKey("auth", ClientAuth)
IDEMPOTENCY = web.AppKey("idempotency", Idempotency)
QUOTAS = web.AppKey("quotas", Quotas)
RECEIPTS = web.AppKey("receipts", SeenReceipts)
GEO = web.AppKey("geo", GeoPermissions)
