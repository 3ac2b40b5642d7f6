"""OTP state in Redis, shared by every replica, with the memory store's semantics.

Each read-then-write is one Lua script (files in lua/), so the attempt cap and the send
policy hold however many replicas receive the requests. The scripts judge time on Redis'
clock (TIME), so replicas whose own clocks disagree still agree on cooldowns, windows and
expiry; the `now` the protocol passes is used only with `trust_caller_time` (tests that drive
time). Every key expires with its verification or its send window: nothing needs sweeping.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from smsgw.otp.store import AttemptResult, AttemptTarget, SendPolicy, SendReservation, Verification
from smsgw.redis_keys import RedisKeys
from smsgw.redis_scripts import load_script

__all__ = ["RedisOtpStore", "script_now"]


def _script(redis: Redis, name: str) -> AsyncScript:
    return load_script(redis, "smsgw.otp", f"lua/{name}.lua", helpers=["lua/_pending.lua"])


def script_now(now: float, trust_caller_time: bool) -> str:
    """The `now` argument of the OTP scripts: empty (Redis' clock) unless a test drives time."""
    return repr(now) if trust_caller_time else ""


class RedisOtpStore:
    def __init__(self, redis: Redis, keys: RedisKeys, *, trust_caller_time: bool = False) -> None:
        self._keys = keys
        self._trust_caller_time = trust_caller_time
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
                script_now(now, self._trust_caller_time),
                policy.window_s,
                policy.cooldown_s,
                policy.max_sends,
                policy.daily_max or 0,
                policy.daily_window_s,
            ],
        )
        if int(reply[0]) == 1:
            return SendReservation(True, 0.0, float(reply[1]), sent_at=float(reply[2]))
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

    async def reserve_attempt(self, target: AttemptTarget, now: float) -> AttemptResult:
        args: list[str | bytes | int] = []
        client, placeholder = target.client, target.placeholder
        if target.verification_id is not None:
            kind, key = "id", self._keys.verification(target.verification_id)
        elif target.phone is not None:
            kind, key = "phone", self._keys.pending(client, target.phone)
            if placeholder is not None:
                expires_ms = int(placeholder.expires_at * 1000)
                args = [placeholder.id, expires_ms, *_fields(placeholder)]
        else:
            return AttemptResult("not_found")
        reply = await self._reserve_attempt(
            keys=[key],
            args=[
                kind,
                self._verification_prefix,
                client,
                script_now(now, self._trust_caller_time),
                *args,
            ],
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
