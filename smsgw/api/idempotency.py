"""Idempotency-Key: the same key and body within 24 h get the first response, nothing new.

Answers worth replaying are the deterministic ones (2xx and 4xx other than 408/409/425/429),
so a client retrying after a 503 or a cooldown gets a real second try. The decision logic is
here once; where entries live (process memory, or Redis for every replica) is a backend.

What is kept is what a retry needs: status, the replayed headers and the body, compressed
when that helps (a problem listing 1000 bad numbers is 68 KB of repetition, 3 KB in zlib; a
batch of 1000 ids, the largest success, 39 KB, 21 KB compressed). A body still over
`max_answer_bytes` is not kept: a success leaves only its SHA-256, and its replay is a 410
problem saying so (never run twice, never a different body); a refusal is not kept at all,
since it changed nothing and running it again gives the same problem.

Memory is bounded per client (`client_budget_bytes`, in both backends): a client over its
budget loses its own oldest finished answers, never another client's entries and never a
claim still in flight (evicting one would let the retry of a running request run it twice).
A client whose claims in flight alone fill its budget gets 429 for new keys.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from aiohttp import web

from smsgw.api.problems import Problem, problem_response
from smsgw.api.queueing import AcceptedUnconfirmed
from smsgw.redis_keys import IDEMPOTENCY_TTL_S

__all__ = [
    "DEFAULT_CLIENT_BUDGET_BYTES",
    "DEFAULT_MAX_ANSWER_BYTES",
    "IN_FLIGHT_TTL_S",
    "BudgetExhausted",
    "EvictionNotice",
    "Idempotency",
    "IdempotencyBackend",
    "MemoryIdempotencyBackend",
    "StoredAnswer",
    "entry_cost",
]

_log = structlog.get_logger("smsgw.api.idempotency")

# ~16,000 answers of single messages (~500 bytes each) or ~370 of 1000-message batches.
DEFAULT_CLIENT_BUDGET_BYTES = 8 * 1024 * 1024
# Above every success this API gives (a 1000-id batch answer: 39 KB, 21 KB compressed).
DEFAULT_MAX_ANSWER_BYTES = 64 * 1024
# A claim whose request never finished (the process died) frees the key after this long.
IN_FLIGHT_TTL_S = 60
_REPLAYED_HEADERS = ("Content-Type", "Retry-After", "Location")
_TRANSIENT = frozenset({408, 409, 425, 429})
# Smaller bodies gain too little from compression to be worth the call.
_COMPRESS_FROM = 1024
# Charged per entry besides its key and value: about what Redis spends on the entry's key,
# its member in the age index and its field in the cost hash (MEMORY USAGE, Redis 7: ~500
# bytes for a one-message answer under a 36-character key).
_ENTRY_OVERHEAD = 230
# The same in this process: the answer's objects, its headers dict and the index node cost
# more than Redis' encodings (tracemalloc: ~690 bytes for a one-message answer).
_MEMORY_ENTRY_OVERHEAD = 420
# An operator learns at most this often that a client's answers are evicted before 24 h.
_NOTICE_INTERVAL_S = 60.0


@dataclass(slots=True)
class StoredAnswer:
    fingerprint: bytes
    status: int | None = None  # None while the first request is still running
    body: bytes = b""  # as kept: zlib-compressed if `compressed`
    headers: dict[str, str] = field(default_factory=dict)
    compressed: bool = False
    # SHA-256 of a body too large to keep (then `body` is empty): the replay is refused.
    digest: bytes | None = None
    size: int = 0  # the body's length as first sent

    def stored_bytes(self) -> int:
        headers = sum(len(name) + len(value) for name, value in self.headers.items())
        return len(self.fingerprint) + len(self.body) + headers + len(self.digest or b"") + 16


def entry_cost(key: str, answer: StoredAnswer, overhead: int = _ENTRY_OVERHEAD) -> int:
    """Bytes charged to a client's budget for one entry (in Redis its key is stored three
    times: entry name, age index, cost hash)."""
    return overhead + 3 * len(key) + _allocated(answer.stored_bytes())


def _allocated(size: int) -> int:
    # What the allocator really gives a value of `size` bytes: jemalloc (Redis' allocator)
    # has four size classes per power of two, so a 50 KB answer takes 56 KiB (measured
    # with MEMORY USAGE); counting only `size` would exceed the budget by up to a quarter.
    step = 1 << max((size - 1).bit_length() - 3, 4)
    return -(-size // step) * step


class BudgetExhausted(Exception):
    """The client's claims in flight fill its budget: no new key until some finish."""


class IdempotencyBackend(Protocol):
    async def claim(self, client: str, key: str, fingerprint: bytes) -> StoredAnswer | None:
        """Claim the key for a new request (None), or return what is already stored.

        Raises BudgetExhausted when the client's claims in flight leave no room.
        """

    async def complete(self, client: str, key: str, answer: StoredAnswer) -> None:
        """Store the final answer for the rest of the key's life."""

    async def release(self, client: str, key: str) -> None:
        """Forget the claim: the answer is not worth replaying."""


class Idempotency:
    def __init__(
        self, backend: IdempotencyBackend, max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES
    ) -> None:
        self._backend = backend
        self._max_answer_bytes = max_answer_bytes

    async def run(
        self,
        client: str,
        key: str,
        fingerprint: bytes,
        call: Callable[[], Awaitable[web.Response]],
    ) -> web.Response:
        try:
            existing = await self._backend.claim(client, key, fingerprint)
        except BudgetExhausted as exc:
            raise Problem(
                429,
                "idempotency-budget-exhausted",
                "Too many requests in flight",
                "this client's requests with an Idempotency-Key still running fill its "
                "idempotency budget; retry when some have finished",
                headers={"Retry-After": "1"},
            ) from exc
        if existing is not None:
            return _answer_again(existing, fingerprint)
        try:
            response = await call()
        except Problem as problem:
            response = problem_response(problem)
        except AcceptedUnconfirmed as unconfirmed:
            # Answered 503, but the messages are queued: a retry gets their 202.
            await self._keep(client, key, fingerprint, unconfirmed.response)
            raise
        except BaseException:
            await self._backend.release(client, key)
            raise
        await self._keep(client, key, fingerprint, response)
        return response

    async def _keep(
        self, client: str, key: str, fingerprint: bytes, response: web.Response
    ) -> None:
        answer = _kept(fingerprint, response, self._max_answer_bytes)
        if answer is None:
            await self._backend.release(client, key)
        else:
            await self._backend.complete(client, key, answer)


def _kept(fingerprint: bytes, response: web.Response, limit: int) -> StoredAnswer | None:
    """What a retry of `response` needs, or None if it is not worth (or too large) to keep."""
    status = response.status
    if status >= 500 or status in _TRANSIENT:
        return None
    body = response.body if isinstance(response.body, bytes) else b""
    headers = {h: response.headers[h] for h in _REPLAYED_HEADERS if h in response.headers}
    answer = StoredAnswer(fingerprint, status, body, headers, size=len(body))
    if len(body) >= _COMPRESS_FROM:
        packed = zlib.compress(body, 1)  # ~0.6 ms for the largest answer, a 1000-id batch
        if len(packed) < len(body):
            answer.body, answer.compressed = packed, True
    if len(answer.body) <= limit:
        return answer
    if status >= 400:
        return None  # a refusal changed nothing: its retry gets the same problem anew
    answer.body, answer.compressed = b"", False
    answer.digest = hashlib.sha256(body).digest()
    return answer


def _answer_again(entry: StoredAnswer, fingerprint: bytes) -> web.Response:
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
    if entry.digest is not None:
        raise Problem(
            410,
            "idempotent-answer-not-kept",
            "Answer not kept",
            f"the first request with this key was processed (status {entry.status}) and is "
            f"not processed again, but its answer ({entry.size} bytes, SHA-256 "
            f"{entry.digest.hex()}) was too large to keep",
            headers={"Idempotent-Replayed": "true"},
        )
    body = zlib.decompress(entry.body) if entry.compressed else entry.body
    headers = {**entry.headers, "Idempotent-Replayed": "true"}
    return web.Response(status=entry.status, body=body, headers=headers)


class EvictionNotice:
    """Logs, at most once a minute per client, that its answers are evicted before 24 h:
    the budget, not the TTL, is then what bounds how late a retry is still recognised."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def evicted(self, client: str, count: int, youngest_age_s: float) -> None:
        now = time.monotonic()
        if count <= 0 or now - self._last.get(client, -_NOTICE_INTERVAL_S) < _NOTICE_INTERVAL_S:
            return
        self._last[client] = now
        _log.warning(
            "idempotency_answers_evicted",
            client=client,
            evicted=count,
            # Retries older than this are no longer recognised for this client.
            kept_for_s=round(youngest_age_s, 1),
        )


@dataclass(slots=True)
class _Entry:
    deadline: float  # time.monotonic() after which it is gone
    answer: StoredAnswer
    cost: int
    at: float  # time.monotonic() of the claim or the completion


@dataclass(slots=True)
class _ClientEntries:
    used: int = 0
    done: OrderedDict[str, _Entry] = field(default_factory=OrderedDict)  # oldest first
    # Claims in flight, oldest first (one TTL for all, so also in order of their deadlines).
    live: OrderedDict[str, _Entry] = field(default_factory=OrderedDict)


class MemoryIdempotencyBackend:
    """Entries of one process, bounded in bytes per client."""

    def __init__(
        self,
        *,
        client_budget_bytes: int = DEFAULT_CLIENT_BUDGET_BYTES,
        answer_ttl_s: float = IDEMPOTENCY_TTL_S,
        claim_ttl_s: float = IN_FLIGHT_TTL_S,
    ) -> None:
        self._budget = client_budget_bytes
        self._answer_ttl_s = answer_ttl_s
        self._claim_ttl_s = claim_ttl_s
        self._clients: dict[str, _ClientEntries] = {}
        self._notice = EvictionNotice()

    async def claim(self, client: str, key: str, fingerprint: bytes) -> StoredAnswer | None:
        now = time.monotonic()
        entries = self._clients.setdefault(client, _ClientEntries())
        self._purge(entries, now)
        existing = entries.done.get(key) or entries.live.get(key)
        if existing is not None:
            return existing.answer
        answer = StoredAnswer(fingerprint)
        cost = entry_cost(key, answer, _MEMORY_ENTRY_OVERHEAD)
        self._make_room(client, entries, cost, now)
        if entries.used + cost > self._budget:
            raise BudgetExhausted
        entries.live[key] = _Entry(now + self._claim_ttl_s, answer, cost, now)
        entries.used += cost
        return None

    async def complete(self, client: str, key: str, answer: StoredAnswer) -> None:
        now = time.monotonic()
        entries = self._clients.setdefault(client, _ClientEntries())
        self._purge(entries, now)
        if key in entries.done:
            return  # a retry that outlived our claim finished first: its answer stays
        self._drop(entries, key)
        cost = entry_cost(key, answer, _MEMORY_ENTRY_OVERHEAD)
        self._make_room(client, entries, cost, now)
        # Kept even if claims in flight leave no room: dropping it would let its retry run
        # twice. The budget is then exceeded by this one answer until the next eviction.
        entries.done[key] = _Entry(now + self._answer_ttl_s, answer, cost, now)
        entries.used += cost

    async def release(self, client: str, key: str) -> None:
        entries = self._clients.get(client)
        if entries is not None and key in entries.live:
            self._drop(entries, key)

    def used_bytes(self, client: str) -> int:
        entries = self._clients.get(client)
        return 0 if entries is None else entries.used

    def _make_room(self, client: str, entries: _ClientEntries, cost: int, now: float) -> None:
        """Evict the client's own oldest finished answers until `cost` more bytes fit."""
        evicted, youngest_at = 0, now
        while entries.done and entries.used + cost > self._budget:
            _, oldest = entries.done.popitem(last=False)
            entries.used -= oldest.cost
            evicted, youngest_at = evicted + 1, oldest.at
        self._notice.evicted(client, evicted, now - youngest_at)

    @staticmethod
    def _purge(entries: _ClientEntries, now: float) -> None:
        # Each index is in deadline order (one TTL each): the expired ones are at its front.
        for index in (entries.done, entries.live):
            while index:
                oldest = next(iter(index.values()))
                if oldest.deadline > now:
                    break
                index.popitem(last=False)
                entries.used -= oldest.cost

    @staticmethod
    def _drop(entries: _ClientEntries, key: str) -> None:
        entry = entries.done.pop(key, None) or entries.live.pop(key, None)
        if entry is not None:
            entries.used -= entry.cost
