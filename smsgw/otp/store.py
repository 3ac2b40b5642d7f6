"""Where verifications and per-number send history live: the protocol, and the memory store
(the Redis one, shared by replicas, is redis_store.py).

Every method of the memory store that reads and then writes does so without an await in
between, so each is atomic on the event loop; the Redis store gives the same guarantees with
Lua, and judges time on Redis' clock instead of the `now` passed in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import Literal, Protocol

__all__ = [
    "AttemptResult",
    "MemoryOtpStore",
    "OtpStore",
    "SendPolicy",
    "SendReservation",
    "Verification",
]


@dataclass(frozen=True, slots=True)
class Verification:
    id: str
    client: str
    phone: str
    code_hash: bytes
    created_at: float
    expires_at: float
    max_attempts: int
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class SendPolicy:
    max_sends: int
    window_s: float
    cooldown_s: float
    # A second, longer cap (AWS's habit: 10 per number per day); the send log is kept this
    # long. None: only max_sends per window_s.
    daily_max: int | None = None
    daily_window_s: float = 86400.0

    @property
    def kept_s(self) -> float:
        """How long a send stays in a number's log."""
        return max(self.window_s, self.daily_window_s) if self.daily_max else self.window_s


@dataclass(frozen=True, slots=True)
class SendReservation:
    allowed: bool
    retry_after_s: float  # when refused: wait this long
    next_send_at: float  # when allowed: earliest time of the next send to this number
    reason: str = ""
    # When allowed: the time the send was recorded at (release_send takes it back).
    sent_at: float = 0.0


@dataclass(frozen=True, slots=True)
class AttemptTarget:
    """What one check is against: a verification by id, or (client, phone)'s pending one.

    Checked by phone with nothing pending, `placeholder` (a verification no code matches)
    becomes the pending one and is checked instead.
    """

    client: str
    verification_id: str | None = None
    phone: str | None = None
    placeholder: Verification | None = None


@dataclass(frozen=True, slots=True)
class AttemptResult:
    outcome: Literal["not_found", "exhausted", "reserved"]
    verification: Verification | None = None  # with the reserved attempt counted


class OtpStore(Protocol):
    async def reserve_send(self, phone: str, now: float, policy: SendPolicy) -> SendReservation:
        """Check the send policy for `phone` and, if allowed, record a send at `now` (the
        Redis store: at Redis' time); the reservation says when (`sent_at`)."""

    async def release_send(self, phone: str, at: float) -> None:
        """Forget the send recorded at `at`, a reservation's `sent_at` (the message could not
        be queued)."""

    async def save(self, verification: Verification) -> Verification | None:
        """Store it as the one pending verification of (client, phone); return the replaced one."""

    async def undo_save(self, verification: Verification, replaced: Verification | None) -> None:
        """Its SMS could not be queued: forget it and, if it is still the pending one, put
        back the verification its save replaced (unless another start took the place)."""

    async def reserve_attempt(self, target: AttemptTarget, now: float) -> AttemptResult:
        """Count one check against the pending verification, unless its attempts are spent.

        The attempt is counted before the code is compared: with 50 concurrent wrong checks,
        exactly max_attempts get a comparison and the rest are refused. A target's
        placeholder takes its place in the same atomic step.
        """

    async def approve(self, verification: Verification) -> bool:
        """End the verification as approved; False if it was no longer pending."""

    def sweep(self, now: float, policy: SendPolicy) -> int:
        """Drop what aged out (memory): expired verifications, sends older than any part of
        `policy` needs. Returns how many entries went."""


class MemoryOtpStore:
    def __init__(self) -> None:
        self._verifications: dict[str, Verification] = {}
        self._pending_by_phone: dict[tuple[str, str], str] = {}
        self._sends: dict[str, deque[float]] = {}

    async def reserve_send(self, phone: str, now: float, policy: SendPolicy) -> SendReservation:
        sends = self._sends.setdefault(phone, deque())
        while sends and sends[0] <= now - policy.kept_s:
            sends.popleft()
        if sends and now - sends[-1] < policy.cooldown_s:
            wait = sends[-1] + policy.cooldown_s - now
            return SendReservation(False, wait, 0.0, "resend-cooldown")
        recent = [t for t in sends if t > now - policy.window_s]
        if len(recent) >= policy.max_sends:
            wait = recent[0] + policy.window_s - now
            return SendReservation(False, wait, 0.0, "too-many-sends")
        if policy.daily_max is not None and len(sends) >= policy.daily_max:
            wait = sends[0] + policy.daily_window_s - now
            return SendReservation(False, wait, 0.0, "daily-cap")
        sends.append(now)
        next_send_at = now + policy.cooldown_s
        if len(recent) + 1 >= policy.max_sends:
            oldest = recent[0] if recent else now
            next_send_at = max(next_send_at, oldest + policy.window_s)
        if policy.daily_max is not None and len(sends) >= policy.daily_max:
            next_send_at = max(next_send_at, sends[0] + policy.daily_window_s)
        return SendReservation(True, 0.0, next_send_at, sent_at=now)

    async def release_send(self, phone: str, at: float) -> None:
        sends = self._sends.get(phone)
        if sends is not None and at in sends:
            sends.remove(at)

    async def save(self, verification: Verification) -> Verification | None:
        key = (verification.client, verification.phone)
        previous_id = self._pending_by_phone.get(key)
        previous = None if previous_id is None else self._verifications.pop(previous_id, None)
        self._verifications[verification.id] = verification
        self._pending_by_phone[key] = verification.id
        return previous

    async def undo_save(self, verification: Verification, replaced: Verification | None) -> None:
        key = (verification.client, verification.phone)
        ours = self._pending_by_phone.get(key) == verification.id
        self._drop(verification.id)
        if ours and replaced is not None:
            self._verifications[replaced.id] = replaced
            self._pending_by_phone[key] = replaced.id

    async def reserve_attempt(self, target: AttemptTarget, now: float) -> AttemptResult:
        client, verification_id, phone = target.client, target.verification_id, target.phone
        by_phone = False
        if verification_id is None and phone is not None:
            by_phone = True
            verification_id = self._pending_by_phone.get((client, phone))
        found = self._verifications.get(verification_id) if verification_id else None
        if found is not None and found.client != client:
            found = None
        if found is not None and now >= found.expires_at:
            self._drop(found.id)
            found = None
        if found is None:
            placeholder = target.placeholder
            if not by_phone or placeholder is None:
                return AttemptResult("not_found")
            self._verifications[placeholder.id] = placeholder
            self._pending_by_phone[(placeholder.client, placeholder.phone)] = placeholder.id
            found = placeholder
        if found.attempts >= found.max_attempts:
            return AttemptResult("exhausted", found)
        counted = replace(found, attempts=found.attempts + 1)
        self._verifications[found.id] = counted
        return AttemptResult("reserved", counted)

    async def approve(self, verification: Verification) -> bool:
        return self._drop(verification.id) is not None

    def sweep(self, now: float, policy: SendPolicy) -> int:
        expired = [v.id for v in self._verifications.values() if v.expires_at <= now]
        for verification_id in expired:
            self._drop(verification_id)
        # By what the longest rule needs (the daily cap: 24 h), not the 10-minute window: a
        # history dropped earlier let a number have a new set of codes every 10 minutes.
        kept_s = policy.kept_s
        stale = [p for p, s in self._sends.items() if not s or s[-1] <= now - kept_s]
        for phone in stale:
            del self._sends[phone]
        return len(expired) + len(stale)

    def _drop(self, verification_id: str) -> Verification | None:
        verification = self._verifications.pop(verification_id, None)
        if verification is not None:
            key = (verification.client, verification.phone)
            if self._pending_by_phone.get(key) == verification_id:
                del self._pending_by_phone[key]
        return verification
