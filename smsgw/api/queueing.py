"""Queueing accepted messages, for every endpoint that sends them."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from smsgw._aio import map_in_slices
from smsgw.api.problems import Problem
from smsgw.app_keys import AUDIT, QUEUE
from smsgw.errors import QueueFull
from smsgw.queue import Message
from smsgw.queue.redis import NotReplicated

__all__ = ["AcceptedUnconfirmed", "accepted", "enqueue", "queue_full_problem"]

# Audit events recorded between two yields to the loop.
SLICE = 100


def queue_full_problem(exc: QueueFull) -> Problem:
    return Problem(
        503,
        "queue-full",
        "Queue full",
        "too many messages are waiting; retry later",
        headers={"Retry-After": str(exc.retry_after_s)},
    )


class AcceptedUnconfirmed(Exception):
    """Queued, but on too few replicas in time (`cause`): answered 503 not-replicated, while
    the Idempotency-Key keeps `response` (the 202) for the client's retry, so a retry with
    it gets that answer instead of queueing the messages a second time. If the primary dies
    before passing them on, the kept answer dies with them and the retry queues anew."""

    def __init__(self, cause: NotReplicated, response: web.Response) -> None:
        super().__init__(cause.detail)
        self.detail = cause.detail
        self.retry_after_s = cause.retry_after_s
        self.response = response


async def enqueue(app: web.Application, messages: Sequence[Message]) -> NotReplicated | None:
    """Queue `messages` (all or none) and record each as accepted in the audit trail; the
    refusal if they are queued but not replicated in time (see `accepted`).

    Queued first, recorded after: a message of a later slice may be sending before its
    "accepted" is recorded, which the trail orders by time anyway. Not replicated in time,
    they are in the queue all the same and may be sent: recorded too.
    """
    unconfirmed = None
    try:
        await app[QUEUE].put_many(messages)
    except QueueFull as exc:
        raise queue_full_problem(exc) from exc
    except NotReplicated as exc:
        unconfirmed = exc
    await _record_accepted(app, messages)
    return unconfirmed


def accepted(response: web.Response, unconfirmed: NotReplicated | None) -> web.Response:
    """The 202 of queued messages, or AcceptedUnconfirmed raised with it."""
    if unconfirmed is not None:
        raise AcceptedUnconfirmed(unconfirmed, response)
    return response


async def _record_accepted(app: web.Application, messages: Sequence[Message]) -> None:
    audit = app[AUDIT]
    if len(messages) == 1:
        message = messages[0]
        audit.accepted(message.id, message.created_at, **message.audit_details())
        return
    await map_in_slices(
        lambda m: audit.accepted(m.id, m.created_at, **m.audit_details()), messages, SLICE
    )
