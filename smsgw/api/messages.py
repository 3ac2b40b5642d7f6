"""POST /v1/messages and POST /v1/messages/batch."""

from __future__ import annotations

from aiohttp import web

from smsgw._aio import map_in_slices
from smsgw.api.destinations import DestinationErrors, check_length, parse_destination
from smsgw.api.inputs import decode_json
from smsgw.api.queueing import accepted, enqueue
from smsgw.api.responses import json_response
from smsgw.api.schemas import MessageBatchBody, MessageBody
from smsgw.phone import PhoneNumber
from smsgw.queue import Message
from smsgw.segments import Segmentation, segment

__all__ = ["send_batch", "send_message"]

# Messages of a batch handled between two yields to the event loop (~1-2 ms of work): a
# 1000-message batch done in one go held the loop for tens of ms, and every send that fell
# due meanwhile went late and bunched with the next (bench/pipeline.py measures the lag).
SLICE = 100


def _message(
    client: str, data: MessageBody, phone: PhoneNumber, segmentation: Segmentation
) -> Message:
    return Message(
        to=phone.e164,
        country=phone.country,
        body=data.body,
        client=client,
        priority=data.priority,
        client_ref=data.client_ref,
        segments=segmentation.segments,
        encoding=segmentation.encoding,
    )


async def send_message(request: web.Request, client: str, body: bytes) -> web.Response:
    data = decode_json(body, MessageBody)
    phone = parse_destination(request, client, data.to, "#/to")
    assert phone is not None  # parse_destination raised otherwise
    segmentation = segment(data.body)
    check_length(request, phone, segmentation, "#/body")
    message = _message(client, data, phone, segmentation)
    unconfirmed = await enqueue(request.app, (message,))
    answer = {
        "id": message.id,
        "status": "queued",
        "segments": segmentation.segments,
        "encoding": segmentation.encoding,
    }
    return accepted(json_response(answer, status=202), unconfirmed)


async def send_batch(request: web.Request, client: str, body: bytes) -> web.Response:
    data = decode_json(body, MessageBatchBody)
    errors = DestinationErrors()

    def checked(entry: tuple[int, MessageBody]) -> Message | None:
        index, item = entry
        phone = parse_destination(request, client, item.to, f"#/messages/{index}/to", errors)
        if phone is None:
            return None
        segmentation = segment(item.body)
        if not check_length(request, phone, segmentation, f"#/messages/{index}/body", errors):
            return None
        return _message(client, item, phone, segmentation)

    found = await map_in_slices(checked, list(enumerate(data.messages)), SLICE)
    errors.raise_if_any()  # all or nothing: one bad number refuses the whole batch
    messages = [message for message in found if message is not None]
    unconfirmed = await enqueue(request.app, messages)
    return accepted(json_response({"ids": [m.id for m in messages]}, status=202), unconfirmed)
