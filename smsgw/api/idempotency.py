"""Idempotency-Key: the same key and body within 24 h get the first response, nothing new.

Kept in memory for now (one replica); answers worth replaying are the deterministic ones
(2xx and 4xx other than 409/429), so a client retrying after a 503 or a cooldown gets a real
second try.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from smsgw.api.problems import Problem, problem_response

__all__ = ["IdempotencyStore"]

DEFAULT_TTL_S = 24 * 3600
DEFAULT_MAX_ENTRIES = 100_000
_REPLAYED_HEADERS = ("Content-Type", "Retry-After", "Location")
_TRANSIENT = frozenset({408, 409, 425, 429})


@dataclass(slots=True)
class _Entry:
    fingerprint: bytes
    expires_at: float
    status: int | None = None  # None while the first request is still running
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class IdempotencyStore:
    def __init__(
        self, ttl_s: float = DEFAULT_TTL_S, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    async def run(
        self,
        client: str,
        key: str,
        fingerprint: bytes,
        call: Callable[[], Awaitable[web.Response]],
    ) -> web.Response:
        now = time.time()
        self._purge(now)
        slot = (client, key)
        entry = self._entries.get(slot)
        if entry is not None:
            return _answer_again(entry, fingerprint)
        entry = _Entry(fingerprint, now + self._ttl_s)
        self._entries[slot] = entry
        try:
            response = await call()
        except Problem as problem:
            response = problem_response(problem)
        except BaseException:
            self._entries.pop(slot, None)
            raise
        if _worth_replaying(response.status):
            entry.status = response.status
            entry.body = bytes(response.body) if isinstance(response.body, bytes) else b""
            entry.headers = {
                h: response.headers[h] for h in _REPLAYED_HEADERS if h in response.headers
            }
        else:
            self._entries.pop(slot, None)
        return response

    def _purge(self, now: float) -> None:
        # Every entry lives equally long, so the oldest are first in insertion order.
        entries = self._entries
        while entries:
            oldest = next(iter(entries.values()))
            if oldest.expires_at > now and len(entries) < self._max_entries:
                break
            entries.popitem(last=False)


def _answer_again(entry: _Entry, fingerprint: bytes) -> web.Response:
    if entry.fingerprint != fingerprint:
        raise Problem(
            422,
            "idempotency-key-reused",
            "Idempotency-Key reused",
            "this key was used with another request body or endpoint",
        )
    if entry.status is None:
        raise Problem(
            409,
            "idempotency-key-in-use",
            "Request in progress",
            "a request with this key is still being processed",
            headers={"Retry-After": "1"},
        )
    headers = {**entry.headers, "Idempotent-Replayed": "true"}
    return web.Response(status=entry.status, body=entry.body, headers=headers)


def _worth_replaying(status: int) -> bool:
    return status < 500 and status not in _TRANSIENT
