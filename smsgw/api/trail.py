"""GET /v1/messages/{id} and GET /v1/messages?to=...: the audit trail, as a client sees it.

A client sees only the messages it sent; anyone else's id is 404, like an unknown one.
Events this replica's writer has not stored yet (buffered or being written) are shown too, so
a message can be looked up the moment its POST answered. Where replicas share the queue, the
POST may have been answered by another one, whose events reach the store within its
writer's visibility lag (two flush intervals): a lookup that finds nothing looks again for
that long before it answers 404.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from smsgw.api.inputs import MESSAGE_ID, int_query, query_problem
from smsgw.api.intake import authorized_client
from smsgw.api.problems import Problem
from smsgw.api.responses import json_response, rfc3339_ms
from smsgw.app_keys import AUDIT, SETTINGS
from smsgw.audit import AuditEvent, AuditWriter, MessageSummary, RecipientQuery, summarize
from smsgw.errors import AuditUnavailable
from smsgw.phone import InvalidPhoneNumber, parse_phone

__all__ = ["list_messages", "show_message"]

DEFAULT_PAGE = 20
MAX_PAGE = 100
# Message lookups in flight at once while building one page.
_PAGE_CONCURRENCY = 16
_LIST_PARAMS = frozenset({"to", "since", "until", "limit", "cursor"})
# Event fields shown as they are; the rest (message details) appear once, at the top.
_EVENT_FIELDS = ("provider", "attempt", "provider_message_id", "reason", "replica")
# How often a lookup that found nothing reads the store again, within the visibility lag.
_LOOK_AGAIN_S = 0.1


async def show_message(request: web.Request) -> web.Response:
    client = await authorized_client(request)
    message_id = request.match_info["message_id"]
    # An id of another shape was never ours: no lookup (a store may refuse odd keys, e.g.
    # DynamoDB's over 2048 bytes), the same 404 as an unknown one.
    summary = None
    if MESSAGE_ID.fullmatch(message_id):
        writer = request.app[AUDIT]
        summary = await _summary(writer, message_id, client)
        if summary is None and _queue_is_shared(request):
            summary = await _summary_once_visible(writer, message_id, client)
    if summary is None:
        raise Problem(
            404, "message-not-found", "Message not found", "no message with this id was sent"
        )
    body = _summary_json(summary)
    body["events"] = [_event_json(event) for event in summary.events]
    return json_response(body)


async def list_messages(request: web.Request) -> web.Response:
    client = await authorized_client(request)
    query = _ListQuery.parse(request)
    writer = request.app[AUDIT]
    try:
        page = await writer.store.recipient_messages(
            RecipientQuery(
                client=client,
                to=query.to,
                since=query.since,
                until=query.until,
                limit=query.limit,
                cursor=query.cursor,
            )
        )
    except ValueError as exc:
        raise query_problem("cursor", "not a cursor from this listing") from exc
    except AuditUnavailable as exc:
        raise _audit_unavailable() from exc
    gate = asyncio.Semaphore(_PAGE_CONCURRENCY)

    async def one(message_id: str) -> MessageSummary | None:
        async with gate:
            return await _summary(writer, message_id, client)

    summaries = await asyncio.gather(*(one(message_id) for message_id in page.message_ids))
    return json_response(
        {
            "messages": [_summary_json(s) for s in summaries if s is not None],
            "next_cursor": None if page.cursor is None else _encode_cursor(page.cursor),
        }
    )


def _queue_is_shared(request: web.Request) -> bool:
    settings = request.app[SETTINGS]
    # Replicas share the queue: any of them may have accepted it.
    return settings.uses_redis(settings.queue.backend)


async def _summary_once_visible(
    writer: AuditWriter, message_id: str, client: str
) -> MessageSummary | None:
    """Read again until another replica's events for it would be stored. Unknown ids and
    other clients' ids wait alike, so the time taken tells nothing about either."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + writer.visibility_lag_s
    while (left := deadline - loop.time()) > 0:
        await asyncio.sleep(min(_LOOK_AGAIN_S, left))
        summary = await _summary(writer, message_id, client)
        if summary is not None:
            return summary
    return None


async def _summary(writer: AuditWriter, message_id: str, client: str) -> MessageSummary | None:
    # The writer's view first: an event leaves it only once the store has it, so read the
    # other way round, one stored in between would be in neither.
    unstored = writer.unstored(message_id)
    try:
        stored = await writer.store.events(message_id)
    except AuditUnavailable as exc:
        raise _audit_unavailable() from exc
    keys = {event.key for event in stored}
    events = stored + [e for e in unstored if e.key not in keys]
    summary = summarize(message_id, events)
    if summary.accepted is None or summary.accepted.client != client:
        return None  # unknown, or another client's message: the same answer
    return summary


def _summary_json(summary: MessageSummary) -> dict[str, Any]:
    accepted = summary.accepted
    assert accepted is not None  # _summary() returns only messages with their details
    return {
        "id": summary.id,
        "to": accepted.to,
        "status": summary.status,
        "provider": summary.provider,
        "attempts": summary.attempts,
        "client_ref": accepted.client_ref,
        "priority": accepted.priority,
        "body": accepted.body,
        "segments": accepted.segments,
        "encoding": accepted.encoding,
        "created_at": rfc3339_ms(accepted.at),
    }


def _event_json(event: AuditEvent) -> dict[str, Any]:
    shown: dict[str, Any] = {"type": event.kind, "at": rfc3339_ms(event.at)}
    for name in _EVENT_FIELDS:
        value = getattr(event, name)
        if value is not None:
            shown[name] = value
    if event.possible_duplicate:
        shown["possible_duplicate"] = True
    return shown


@dataclass(frozen=True, slots=True)
class _ListQuery:
    to: str
    since: float | None
    until: float | None
    limit: int
    cursor: str | None

    @classmethod
    def parse(cls, request: web.Request) -> _ListQuery:
        params = request.query
        for name in params:
            if name not in _LIST_PARAMS:
                raise query_problem(
                    name, f"unknown parameter; use {', '.join(sorted(_LIST_PARAMS))}"
                )
            if len(params.getall(name)) > 1:
                raise query_problem(name, "give it once")
        if "to" not in params:
            raise query_problem("to", "required: the recipient's number")
        raw_to = params["to"]
        if raw_to.startswith(" "):
            # An unencoded "+" in a query string arrives as a space: read it as the "+".
            raw_to = "+" + raw_to[1:]
        try:
            to = parse_phone(raw_to).e164
        except InvalidPhoneNumber as exc:
            raise query_problem("to", str(exc)) from exc
        since, until = _time_param(params, "since"), _time_param(params, "until")
        if since is not None and until is not None and since > until:
            raise query_problem("since", "must not be after until")
        limit = int_query(params, "limit", low=1, high=MAX_PAGE, default=DEFAULT_PAGE)
        cursor = None
        if "cursor" in params:
            cursor = _decode_cursor(params["cursor"])
        return cls(to, since, until, limit, cursor)


def _time_param(params: Any, name: str) -> float | None:
    if name not in params:
        return None
    try:
        stamp = datetime.fromisoformat(params[name])
    except ValueError as exc:
        raise query_problem(name, "an RFC 3339 time, e.g. 2026-11-28T12:00:00Z") from exc
    if stamp.tzinfo is None:
        raise query_problem(name, "give a time zone offset or Z")
    return stamp.timestamp()


def _encode_cursor(cursor: str) -> str:
    return base64.urlsafe_b64encode(cursor.encode()).decode().rstrip("=")


def _decode_cursor(raw: str) -> str:
    try:
        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except ValueError as exc:  # bad base64 (binascii.Error), non-ASCII, not UTF-8
        raise query_problem("cursor", "not a cursor from this listing") from exc


def _audit_unavailable() -> Problem:
    return Problem(
        503,
        "audit-unavailable",
        "Audit store unavailable",
        "the audit store cannot be read right now; retry later",
        headers={"Retry-After": "5"},
    )
