"""Idempotency entries in Redis, shared by every replica, bounded in bytes per client.

Each call is one script (lua/idempotency.lua) on the client's keys, which RedisKeys puts
under one hash tag: the entry itself plus the client's age indexes and byte counter, so the
claim, the eviction of the client's own oldest answers and the charge happen atomically.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import msgspec
from redis.asyncio import Redis

from smsgw.api.idempotency import (
    DEFAULT_CLIENT_BUDGET_BYTES,
    IN_FLIGHT_TTL_S,
    BudgetExhausted,
    EvictionNotice,
    StoredAnswer,
    entry_cost,
)
from smsgw.redis_keys import IDEMPOTENCY_TTL_S, RedisKeys

__all__ = ["RedisIdempotencyBackend"]

_EXISTS, _FULL = 1, 2

# fingerprint, status, body, headers, compressed, digest, size: binary-safe (a compressed
# body is arbitrary bytes) and a few bytes of framing.
_Wire = tuple[bytes, int | None, bytes, dict[str, str], bool, bytes | None, int]
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Wire)


class RedisIdempotencyBackend:
    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        *,
        client_budget_bytes: int = DEFAULT_CLIENT_BUDGET_BYTES,
        answer_ttl_s: float = IDEMPOTENCY_TTL_S,
        claim_ttl_s: float = IN_FLIGHT_TTL_S,
    ) -> None:
        self._keys = keys
        self._budget = client_budget_bytes
        self._answer_ms = max(1, round(answer_ttl_s * 1000))
        self._claim_ms = max(1, round(claim_ttl_s * 1000))
        source = resources.files("smsgw.api").joinpath("lua", "idempotency.lua").read_text()
        # register_script re-sends the source after NOSCRIPT: no SHA is cached by us.
        self._script = redis.register_script(source)
        self._notice = EvictionNotice()

    async def claim(self, client: str, key: str, fingerprint: bytes) -> StoredAnswer | None:
        code, stored = await self._call("claim", client, key, StoredAnswer(fingerprint))
        if code == _EXISTS:
            return _decode(stored)
        if code == _FULL:
            raise BudgetExhausted
        return None

    async def complete(self, client: str, key: str, answer: StoredAnswer) -> None:
        await self._call("complete", client, key, answer)

    async def release(self, client: str, key: str) -> None:
        await self._call("release", client, key, None)

    async def _call(
        self, op: str, client: str, key: str, answer: StoredAnswer | None
    ) -> tuple[int, Any]:
        base = self._keys.idempotency(client)
        keys = [base + "e:" + key, base + "done", base + "live", base + "cost", base + "used"]
        value = b"" if answer is None else _encode(answer)
        cost = 0 if answer is None else entry_cost(key, answer)
        args: list[bytes | str | int] = [
            op,
            key,
            base + "e:",
            self._budget,
            self._answer_ms,
            self._claim_ms,
            value,
            cost,
        ]
        code, stored, evicted, youngest_ms = await self._script(keys=keys, args=args)
        self._notice.evicted(client, int(evicted), int(youngest_ms) / 1000)
        return int(code), stored


def _encode(answer: StoredAnswer) -> bytes:
    return _encoder.encode(
        (
            answer.fingerprint,
            answer.status,
            answer.body,
            answer.headers,
            answer.compressed,
            answer.digest,
            answer.size,
        )
    )


def _decode(raw: bytes) -> StoredAnswer:
    fingerprint, status, body, headers, compressed, digest, size = _decoder.decode(raw)
    return StoredAnswer(fingerprint, status, body, headers, compressed, digest, size)
