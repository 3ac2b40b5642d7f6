"""OTP state in Redis, shared by every replica, with the memory store's semantics.

Each read-then-write is one Lua script (files in lua/), so the attempt cap and the send
policy hold however many replicas receive the requests. Every key expires with its
verification or its send window: nothing needs sweeping.
"""

from __future__ import annotations

from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from smsgw.otp.store import AttemptResult, SendPolicy, SendReservation, Verification
from smsgw.redis_keys import RedisKeys

__all__ = ["RedisOtpStore"]


def _script(redis: Redis, name: str) -> AsyncScript:
    source = resources.files("smsgw.otp").joinpath("lua", f"{name}.lua").read_text()
    # register_script re-sends the source after NOSCRIPT (a flush or a failover): never
    # cache a SHA ourselves.
    return redis.register_script(source)


class RedisOtpStore:
    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self._keys = keys
        self._verification_prefix = keys.verification("")
        self._reserve_send = _script(redis, "reserve_send")
        self._save = _script(redis, "save")
        self._reserve_attempt = _script(redis, "reserve_attempt")
        self._finish = _script(redis, "finish")
        self._undo_save = _script(redis, "undo_save")
        self._redis = redis

    async def reserve_send(self, phone: str, now: float, policy: SendPolicy) -> SendReservation:
        reply = await self._reserve_send(
            keys=[self._keys.sends(phone)],
            args=[
                repr(now),
                policy.window_s,
                policy.cooldown_s,
                policy.max_sends,
                policy.daily_max or 0,
                policy.daily_window_s,
            ],
        )
        if int(reply[0]) == 1:
            return SendReservation(True, 0.0, float(reply[1]))
        return SendReservation(False, float(reply[1]), 0.0, _text(reply[2]))

    async def release_send(self, phone: str, at: float) -> None:
        stamp = f"{at:.6f}"  # the score reserve_send wrote
        await self._redis.zremrangebyscore(self._keys.sends(phone), stamp, stamp)

    async def save(self, verification: Verification) -> Verification | None:
        replaced = await self._save(
            keys=[
                self._keys.verification(verification.id),
                self._keys.pending(verification.client, verification.phone),
            ],
            args=[
                self._verification_prefix,
                verification.id,
                int(verification.expires_at * 1000),
                *_fields(verification),
            ],
        )
        if not replaced:
            return None
        fields = _pairs(replaced)
        return _verification(_text(fields[b"id"]), fields)

    async def undo_save(self, verification: Verification, replaced: Verification | None) -> None:
        new_key = self._keys.verification(verification.id)
        restore: list[str | bytes | int] = ["", 0]
        replaced_key = new_key  # not touched without a replaced verification
        if replaced is not None:
            restore = [replaced.id, int(replaced.expires_at * 1000), *_fields(replaced)]
            replaced_key = self._keys.verification(replaced.id)
        pointer = self._keys.pending(verification.client, verification.phone)
        await self._undo_save(
            keys=[new_key, pointer, replaced_key], args=[verification.id, *restore]
        )

    async def reserve_attempt(
        self,
        client: str,
        now: float,
        *,
        verification_id: str | None,
        phone: str | None,
        placeholder: Verification | None = None,
    ) -> AttemptResult:
        args: list[str | bytes | int] = []
        if verification_id is not None:
            kind, key = "id", self._keys.verification(verification_id)
        elif phone is not None:
            kind, key = "phone", self._keys.pending(client, phone)
            if placeholder is not None:
                expires_ms = int(placeholder.expires_at * 1000)
                args = [placeholder.id, expires_ms, *_fields(placeholder)]
        else:
            return AttemptResult("not_found")
        reply = await self._reserve_attempt(
            keys=[key], args=[kind, self._verification_prefix, client, repr(now), *args]
        )
        outcome = _text(reply[0])
        if outcome == "reserved":
            return AttemptResult("reserved", _verification(_text(reply[1]), _pairs(reply[2:])))
        if outcome == "exhausted":
            return AttemptResult("exhausted")
        return AttemptResult("not_found")

    async def approve(self, verification: Verification) -> bool:
        return await self._end(verification)

    def sweep(self, now: float, policy: SendPolicy) -> int:
        return 0  # every key expires with its verification or its send log

    async def _end(self, verification: Verification) -> bool:
        ended = await self._finish(
            keys=[
                self._keys.verification(verification.id),
                self._keys.pending(verification.client, verification.phone),
            ],
            args=[verification.id],
        )
        return bool(ended)


def _fields(verification: Verification) -> list[str | bytes]:
    return [
        "id", verification.id,
        "client", verification.client,
        "phone", verification.phone,
        "code_hash", verification.code_hash,
        "created_at", repr(verification.created_at),
        "expires_at", repr(verification.expires_at),
        "max_attempts", str(verification.max_attempts),
        "attempts", str(verification.attempts),
    ]  # fmt: skip


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat) - 1, 2)}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _verification(verification_id: str, fields: dict[bytes, bytes]) -> Verification:
    return Verification(
        id=verification_id,
        client=_text(fields[b"client"]),
        phone=_text(fields[b"phone"]),
        code_hash=fields[b"code_hash"],
        created_at=float(fields[b"created_at"]),
        expires_at=float(fields[b"expires_at"]),
        max_attempts=int(fields[b"max_attempts"]),
        attempts=int(fields[b"attempts"]),
    )
