"""POST|GET /v1/webhooks/{provider}: delivery receipts, recorded in the audit trail.

The provider named in the path checks the request and says what it reports
(`Provider.parse_receipt`; smsgw.providers.receipts says what every receipt must prove);
this handler only finds that provider, reads the request for it, and records the outcome.

Each send names our message id in what the provider echoes back, so a receipt finds its
message even when it arrives before the replica that sent it has stored its own events: it
is simply recorded under that id, and the trail is complete once everything is stored. A
receipt that repeats one already recorded (a provider retrying, or sending twice) changes
nothing; intermediate statuses are ignored; a refused receipt records nothing, not even a
seen-receipt entry.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from multidict import MultiDict, MultiMapping

from smsgw.api.inputs import decode_json, form_body, header_bytes, read_body
from smsgw.api.keys import RECEIPTS
from smsgw.api.problems import Problem
from smsgw.app_keys import AUDIT, ROUTER
from smsgw.errors import ReceiptRefused
from smsgw.providers import Provider

__all__ = ["receive_receipt"]


async def receive_receipt(request: web.Request) -> web.Response:
    name = request.match_info["provider"]
    provider = _receipt_provider(request.app, name)
    try:
        receipt = await provider.parse_receipt(_WebhookRequest(request))
    except ReceiptRefused as exc:
        raise Problem(exc.status, exc.problem, exc.title, exc.detail) from exc
    if receipt is None:
        return web.Response(status=204)
    if receipt.send.provider != name:
        # The tag checked was made for another provider: never record it here.
        raise RuntimeError(f"{type(provider).__name__} checked another provider's tag")
    if await request.app[RECEIPTS].first_time(receipt.message_id, receipt.status):
        request.app[AUDIT].record(
            receipt.message_id,
            receipt.status,
            provider=name,
            provider_message_id=receipt.provider_message_id,
            reason=receipt.reason,
        )
    return web.Response(status=204)


def _receipt_provider(app: web.Application, name: str) -> Provider:
    provider = next((p for p in app[ROUTER].providers if p.name == name), None)
    if provider is None or not provider.takes_receipts():
        raise Problem(
            404,
            "unknown-webhook",
            "No such webhook",
            "receipts are taken for configured providers that send them (twilio, vonage) "
            "when server.public_url is set",
        )
    return provider


class _WebhookRequest:
    """The request as a provider's receipt parser reads it (smsgw.providers.ReceiptRequest),
    through the API's input reader: malformed input is a 400 problem."""

    def __init__(self, request: web.Request) -> None:
        self._request = request

    @property
    def method(self) -> str:
        return self._request.method

    @property
    def content_type(self) -> str:
        return self._request.content_type

    @property
    def query(self) -> MultiMapping[str]:
        return self._request.query

    @property
    def query_string(self) -> str:
        return self._request.query_string

    def header(self, name: str) -> bytes | None:
        return header_bytes(self._request, name)

    async def form(self) -> MultiDict[str] | None:
        return await form_body(self._request)

    async def json_object(self) -> dict[str, Any]:
        return decode_json(await read_body(self._request), dict[str, Any])
