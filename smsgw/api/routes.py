"""The route table of HTTP API v1 (kept in step with openapi.json by a test)."""

from __future__ import annotations

from aiohttp import web

from smsgw.api.health import healthz, load_openapi, openapi, readyz
from smsgw.api.intake import json_endpoint
from smsgw.api.messages import send_batch, send_message
from smsgw.api.metrics import metrics
from smsgw.api.otp import start_verification, verify_code
from smsgw.api.trail import list_messages, show_message
from smsgw.api.webhooks import receive_receipt
from smsgw.settings import Role

__all__ = ["MAX_BATCH_BODY", "add_routes"]

MAX_BATCH_BODY = 4 * 1024 * 1024


def add_routes(app: web.Application, role: Role = "all") -> None:
    """Every route; a worker (dispatch only) serves just health, readiness and metrics."""
    load_openapi(app)
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/readyz", readyz, allow_head=False)
    app.router.add_get("/openapi.json", openapi, allow_head=False)
    app.router.add_get("/metrics", metrics, allow_head=False)
    if role == "worker":
        return
    app.router.add_post("/v1/otp", json_endpoint(start_verification))
    app.router.add_post("/v1/otp/verify", json_endpoint(verify_code, takes_new_work=False))
    app.router.add_post("/v1/messages", json_endpoint(send_message))
    app.router.add_post("/v1/messages/batch", json_endpoint(send_batch, max_body=MAX_BATCH_BODY))
    app.router.add_get("/v1/messages", list_messages, allow_head=False)
    app.router.add_get("/v1/messages/{message_id}", show_message, allow_head=False)
    # Vonage sends receipts by GET or POST, as its account is configured.
    app.router.add_post("/v1/webhooks/{provider}", receive_receipt)
    app.router.add_get("/v1/webhooks/{provider}", receive_receipt, allow_head=False)
