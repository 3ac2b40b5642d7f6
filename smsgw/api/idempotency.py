"""Idempotency-Key: the same key and body within 24 h get the first response, nothing new.

Answers worth replaying are the deterministic ones (2xx and 4xx other than 408/409/425/429),
so a client retrying after a 503 or a cooldown gets a real second try. The decision logic is
here once; where entries live (process memory, or Redis for every replica) is a backend.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import orjson
from aiohttp import web
from redis.asyncio import Redis

from smsgw.api.problems import Problem, problem_response
from smsgw.redis_keys import IDEMPOTENCY_TTL_S, RedisKeys

__all__ = ["Idempotency", "MemoryIdempotencyBackend", "RedisIdempotencyBackend", "StoredAnswer"]

DEFAULT_MAX_ENTRIES = 100_000
# A claim whose request never finished (the process died) frees the key after this long.
IN_FLIGHT_TTL_S = 60
_REPLAYED_HEADERS = ("Content-Type", "Retry-After", "Location")
_TRANSIENT = frozenset({408, 409, 425, 429})


@dataclass(slots=True)
class StoredAnswer:
    fingerprint: bytes
    status: int | None = None  # None while the first request is still running
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class IdempotencyBackend(Protocol):
    async def claim(self, client: str, key: str, fingerprint: bytes) -> StoredAnswer | None:
        """Claim the key for a new request (None), or return what is already stored."""

    async def complete(self, client: str, key: str, answer: StoredAnswer) -> None:
        """Store the final answer for the rest of the key's life."""

    async def release(self, client: str, key: str) -> None:
        """Forget the claim: the answer is not worth replaying."""


class Idempotency:
    def __init__(self, backend: IdempotencyBackend) -> None:
        self._backend = backend

    async def run(
        self,
        client: str,
        key: str,
        fingerprint: bytes,
        call: Callable[[], Awaitable[web.Response]],
    ) -> web.Response:
        existing = await self._backend.claim(client, key, fingerprint)
        if existing is not None:
            return _answer_again(existing, fingerprint)
        try:
            response = await call()
        except Problem as problem:
            response = problem_response(problem)
        except BaseException:
            await self._backend.release(client, key)
            raise
        if _worth_replaying(response.status):
            body = response.body if isinstance(response.body, bytes) else b""
            headers = {h: response.headers[h] for h in _REPLAYED_HEADERS if h in response.headers}
            await self._backend.complete(
                client, key, StoredAnswer(fingerprint, response.status, body, headers)
            )
        else:
            await self._backend.release(client, key)
        return response


class MemoryIdempotencyBackend:
    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._max_entries = max_entries
        # (client, key) -> (expires_at, answer); insertion order is expiry order.
        self._entries: OrderedDict[tuple[str, str], tuple[float, StoredAnswer]] = OrderedDict()

    async def claim(self, client: str, key: str, fingerprint: bytes) -> StoredAnswer | None:
        now = time.time()
        self._purge(now)
        entry = self._entries.get((client, key))
        if entry is not None:
            return entry[1]
        self._entries[(client, key)] = (now + IDEMPOTENCY_TTL_S, StoredAnswer(fingerprint))
        return None

    async def complete(self, client: str, key: str, answer: StoredAnswer) -> None:
        entry = self._entries.get((client, key))
        if entry is not None:
            self._entries[(client, key)] = (entry[0], answer)

    async def release(self, client: str, key: str) -> None:
        self._entries.pop((client, key), None)

    def _purge(self, now: float) -> None:
        entries = self._entries
        while entries:
            expires_at, _ = next(iter(entries.values()))
            if expires_at > now and len(entries) < self._max_entries:
                break
            entries.popitem(last=False)


class RedisIdempotencyBackend:
    """One key per (client, Idempotency-Key), shared by every replica."""

    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self._redis = redis
        self._keys = keys

    async def claim(self, client: str, key: str, fingerprint: bytes) -> StoredAnswer | None:
        redis_key = self._keys.idempotency(client, key)
        claimed = await self._redis.set(
            redis_key, _encode(StoredAnswer(fingerprint)), nx=True, ex=IN_FLIGHT_TTL_S
        )
        if claimed:
            return None
        stored = await self._redis.get(redis_key)
        if stored is None:  # expired between the two calls: treat as in flight, retry soon
            return StoredAnswer(fingerprint)
        return _decode(stored)

    async def complete(self, client: str, key: str, answer: StoredAnswer) -> None:
        await self._redis.set(
            self._keys.idempotency(client, key), _encode(answer), ex=IDEMPOTENCY_TTL_S
        )

    async def release(self, client: str, key: str) -> None:
        await self._redis.delete(self._keys.idempotency(client, key))


def _encode(answer: StoredAnswer) -> bytes:
    return orjson.dumps(
        {
            "f": answer.fingerprint.hex(),
            "s": answer.status,
            "b": answer.body.decode("latin-1"),
            "h": answer.headers,
        }
    )


def _decode(raw: bytes | str) -> StoredAnswer:
    data = orjson.loads(raw)
    return StoredAnswer(
        bytes.fromhex(data["f"]), data["s"], data["b"].encode("latin-1"), dict(data["h"])
    )


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
    headers = {**entry.headers, "Idempotent-Replayed": "true"}
    return web.Response(status=entry.status, body=entry.body, headers=headers)


def _worth_replaying(status: int) -> bool:
    return status < 500 and status not in _TRANSIENT
