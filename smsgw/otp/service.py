"""Start and check verifications: the OTP policy between the API and the store and queue.

A start is checked against the number's own caps first, then against the pumping guard, and
only then stored and queued; whatever fails on the way (a refusal, a full queue, Redis gone,
a cancelled request) undoes what was already done, so a start that sends nothing leaves no
trace: no cooldown, no count, and the user's previous code still works.

A check by phone answers alike whether or not a code is pending (no oracle of who is logging
in): with nothing pending, a placeholder no code matches is checked instead, with the same
attempts and the same failed-check cost, and a wrong code's answer names the (client, phone)
by an opaque id rather than the verification's own.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from smsgw.audit import AuditRecorder
from smsgw.errors import MaxAttemptsReached, TooManySends, VerificationNotFound
from smsgw.otp.codes import CodeHasher, generate_code
from smsgw.otp.guard import AbuseGuard, StartTicket
from smsgw.otp.store import AttemptTarget, OtpStore, SendPolicy, Verification
from smsgw.otp.templates import Templates
from smsgw.phone import PhoneNumber
from smsgw.queue.base import MessageQueue
from smsgw.queue.message import Message
from smsgw.queue.redis import NotReplicated
from smsgw.segments import segment
from smsgw.settings import OtpSettings

__all__ = ["OtpService", "StartedVerification", "VerificationCheck"]

_log = structlog.get_logger("smsgw.otp")


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
        self.send_policy = SendPolicy(
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
        segmentation = segment(rendered.body)
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
            segments=segmentation.segments,
            encoding=segmentation.encoding,
        )
        # The number's own caps first: a start they refuse is counted nowhere else, so one
        # caller hammering one number cannot make the pumping guard refuse its whole range.
        reservation = await self._store.reserve_send(phone.e164, now, self.send_policy)
        if not reservation.allowed:
            raise TooManySends(reservation.reason, math.ceil(reservation.retry_after_s))
        ticket: StartTicket | None = None
        saving = False
        replaced: Verification | None = None
        try:
            ticket = await self.guard.admit_start(phone, self._number_tag(phone.e164))
            saving = True  # from here on the save may have happened even if it raises
            # Stored before queued, so a fast delivery never races ahead of its verification.
            replaced = await self._store.save(verification)
            await self._queue.put(message)
        except BaseException as exc:
            # Nothing was sent, whatever the failure (suspected pumping, a full queue, Redis
            # gone, a cancelled request): undo it all, including the replacement of a code
            # the user may still be holding. Shielded, so a second cancellation cannot stop
            # the undo half-way. Queued but not replicated in time (a 503), the SMS may
            # still go out: it has its trail, but its code no longer verifies, so the
            # client's retry starts afresh (no resend cooldown) and that code is the one.
            if isinstance(exc, NotReplicated):
                self._audit.accepted(message.id, message.created_at, **message.audit_details())
            undo = self._undo_start(
                phone.e164, reservation.sent_at, ticket, verification if saving else None, replaced
            )
            await asyncio.shield(undo)
            raise
        self._audit.accepted(message.id, message.created_at, **message.audit_details())
        return StartedVerification(
            id=verification_id,
            phone=phone.e164,
            expires_at=verification.expires_at,
            resend_after=reservation.next_send_at,
            message_id=message.id,
        )

    async def _undo_start(
        self,
        phone: str,
        at: float,
        ticket: StartTicket | None,
        verification: Verification | None,
        replaced: Verification | None,
    ) -> None:
        steps: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        if verification is not None:
            saved = verification
            steps.append(("verification", lambda: self._store.undo_save(saved, replaced)))
        steps.append(("send", lambda: self._store.release_send(phone, at)))
        if ticket is not None:
            counted = ticket
            steps.append(("pumping_count", lambda: self.guard.cancel_start(counted)))
        for name, step in steps:
            # Each on its own: when Redis is gone they all fail (and the traces expire with
            # their keys); in memory, or after a full queue, each still works.
            try:
                await step()
            except Exception as exc:
                _log.warning("otp_start_undo_failed", step=name, error=type(exc).__name__)

    async def check(
        self,
        *,
        client: str,
        code: str,
        verification_id: str | None = None,
        phone: str | None = None,
    ) -> VerificationCheck:
        """Compare `code`; raises VerificationNotFound (by id only), MaxAttemptsReached or
        TooManyFailedChecks."""
        now = time.time()
        placeholder = None
        if verification_id is None and phone is not None:
            placeholder = Verification(
                id="otp_" + os.urandom(16).hex(),  # never shown: by id it stays unknown
                client=client,
                phone=phone,
                code_hash=b"",  # no code's HMAC matches it
                created_at=now,
                expires_at=now + self._settings.ttl_s,
                max_attempts=self._settings.max_attempts,
            )
        target = AttemptTarget(client, verification_id, phone, placeholder)
        result = await self._store.reserve_attempt(target, now)
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
            shown = verification.id
            if verification_id is None:
                shown = "otp_" + self._hasher.tag("by-phone", f"{client}\x00{verification.phone}")
            return VerificationCheck(shown, valid=False, attempts_left=attempts_left)
        await self.guard.check_passed(verification.phone, failure)
        if not await self._store.approve(verification):
            raise VerificationNotFound  # a concurrent check approved it first
        try:
            await self.guard.mark_verified(self._number_tag(verification.phone))
        except Exception as exc:
            # The approval stands; the number only misses its exemption from the pumping guard.
            _log.warning("verified_mark_failed", error=type(exc).__name__)
        return VerificationCheck(verification.id, valid=True, attempts_left=attempts_left)

    def sweep(self, now: float) -> int:
        """Drop what aged out of the embedded (memory) state: expired verifications, send logs
        (kept as long as the daily cap needs), failed checks, pumping counters and verified
        marks. A no-op on Redis, which expires its keys itself. How many entries went."""
        return self._store.sweep(now, self.send_policy) + self.guard.sweep()

    def _number_tag(self, phone: str) -> str:
        return self._hasher.tag("verified-number", phone)
