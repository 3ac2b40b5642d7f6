"""POST /v1/messages and POST /v1/messages/batch."""

from __future__ import annotations

from aiohttp import web

from smsgw.api.destinations import DestinationErrors, parse_destination
from smsgw.api.inputs import decode_json
from smsgw.api.queueing import queue_full_problem
from smsgw.api.responses import json_response
from smsgw.api.schemas import MessageBatchBody, MessageBody
from smsgw.app_keys import AUDIT, QUEUE
from smsgw.errors import QueueFull
from smsgw.phone import PhoneNumber
from smsgw.queue import Message

__all__ = ["send_batch", "send_message"]


def _message(client: str, data: MessageBody, phone: PhoneNumber) -> Message:
    return Message(
        to=phone.e164,
        country=phone.country,
        body=data.body,
        client=client,
        priority=data.priority,
        client_ref=data.client_ref,
    )


async def send_message(request: web.Request, client: str, body: bytes) -> web.Response:
    data = decode_json(body, MessageBody)
    phone = parse_destination(request, client, data.to, "#/to")
    assert phone is not None  # parse_destination raised otherwise
    message = _message(client, data, phone)
    try:
        await request.app[QUEUE].put(message)
    except QueueFull as exc:
        raise queue_full_problem(exc) from exc
    request.app[AUDIT].accepted(message.id, message.created_at, **message.audit_details())
    return json_response({"id": message.id, "status": "queued"}, status=202)


async def send_batch(request: web.Request, client: str, body: bytes) -> web.Response:
    data = decode_json(body, MessageBatchBody)
    errors = DestinationErrors()
    messages: list[Message] = []
    for index, item in enumerate(data.messages):
        phone = parse_destination(request, client, item.to, f"#/messages/{index}/to", errors)
        if phone is not None:
            messages.append(_message(client, item, phone))
    errors.raise_if_any()  # all or nothing: one bad number refuses the whole batch
    try:
        await request.app[QUEUE].put_many(messages)
    except QueueFull as exc:
        raise queue_full_problem(exc) from exc
    audit = request.app[AUDIT]
    for message in messages:
        audit.accepted(message.id, message.created_at, **message.audit_details())
    return json_response({"ids": [m.id for m in messages]}, status=202)
