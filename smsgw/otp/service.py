"""Start and check verifications: the OTP policy between the API and the store and queue."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

from smsgw.audit import AuditRecorder
from smsgw.errors import MaxAttemptsReached, QueueFull, TooManySends, VerificationNotFound
from smsgw.otp.codes import CodeHasher, generate_code
from smsgw.otp.guard import AbuseGuard
from smsgw.otp.store import OtpStore, SendPolicy, Verification
from smsgw.otp.templates import Templates
from smsgw.phone import PhoneNumber
from smsgw.queue.base import MessageQueue
from smsgw.queue.message import Message
from smsgw.settings import OtpSettings

__all__ = ["OtpService", "StartedVerification", "VerificationCheck"]


@dataclass(frozen=True, slots=True)
class StartedVerification:
    id: str
    phone: str
    expires_at: float
    resend_after: float
    message_id: str


@dataclass(frozen=True, slots=True)
class VerificationCheck:
    id: str
    valid: bool
    attempts_left: int


class OtpService:
    def __init__(
        self,
        settings: OtpSettings,
        store: OtpStore,
        queue: MessageQueue,
        hasher: CodeHasher,
        audit: AuditRecorder,
        guard: AbuseGuard,
    ) -> None:
        self._settings = settings
        self.guard = guard
        self._store = store
        self._queue = queue
        self._hasher = hasher
        self._audit = audit
        self._templates = Templates(settings.templates)
        self._policy = SendPolicy(
            max_sends=settings.max_sends,
            window_s=settings.send_window_s,
            cooldown_s=settings.resend_cooldown_s,
            daily_max=guard.settings.daily_sends_per_number,
        )

    async def start(
        self,
        *,
        client: str,
        phone: PhoneNumber,
        app: str | None = None,
        length: int | None = None,
        locale: str | None = None,
        ttl_s: int | None = None,
    ) -> StartedVerification:
        """Send a fresh code to `phone`, replacing any pending one of this client."""
        now = time.time()
        await self.guard.check_start(phone)  # SMS pumping: refuse before anything is recorded
        reservation = await self._store.reserve_send(phone.e164, now, self._policy)
        if not reservation.allowed:
            raise TooManySends(reservation.reason, math.ceil(reservation.retry_after_s))
        ttl = ttl_s or self._settings.ttl_s
        verification_id = "otp_" + os.urandom(16).hex()
        code = generate_code(length or self._settings.length)
        rendered = self._templates.render(
            app=app or self._settings.app_name, locale=locale, code=code, ttl_s=ttl
        )
        verification = Verification(
            id=verification_id,
            client=client,
            phone=phone.e164,
            code_hash=self._hasher.digest(verification_id, code),
            created_at=now,
            expires_at=now + ttl,
            max_attempts=self._settings.max_attempts,
        )
        message = Message(
            to=phone.e164,
            country=phone.country,
            body=rendered.body,
            client=client,
            priority="high",
            client_ref=verification_id,
            expires_at=verification.expires_at,
            code_span=rendered.code_span,
            created_at=now,
        )
        # Stored before queued, so a fast delivery never races ahead of its verification.
        replaced = await self._store.save(verification)
        try:
            await self._queue.put(message)
        except QueueFull:
            # Nothing was sent: undo everything, including the replacement of a code the user
            # may still be holding.
            await self._store.discard(verification)
            if replaced is not None:
                await self._store.save(replaced)
            await self._store.release_send(phone.e164, now)
            raise
        self._audit.accepted(message.id, message.created_at, **message.audit_details())
        return StartedVerification(
            id=verification_id,
            phone=phone.e164,
            expires_at=verification.expires_at,
            resend_after=reservation.next_send_at,
            message_id=message.id,
        )

    async def check(
        self,
        *,
        client: str,
        code: str,
        verification_id: str | None = None,
        phone: str | None = None,
    ) -> VerificationCheck:
        """Compare `code`; raises VerificationNotFound, MaxAttemptsReached or
        TooManyFailedChecks."""
        result = await self._store.reserve_attempt(
            client, time.time(), verification_id=verification_id, phone=phone
        )
        if result.outcome == "exhausted":
            raise MaxAttemptsReached
        verification = result.verification
        if result.outcome == "not_found" or verification is None:
            raise VerificationNotFound
        attempts_left = verification.max_attempts - verification.attempts
        # Counted as a failure of the number unless the code turns out right (across all its
        # verifications, so new verifications do not buy new guesses).
        failure = await self.guard.reserve_check(verification.phone)
        if not self._hasher.matches(verification.id, code, verification.code_hash):
            return VerificationCheck(verification.id, valid=False, attempts_left=attempts_left)
        await self.guard.check_passed(verification.phone, failure)
        if not await self._store.approve(verification):
            raise VerificationNotFound  # a concurrent check approved it first
        return VerificationCheck(verification.id, valid=True, attempts_left=attempts_left)
