"""POST /v1/otp and POST /v1/otp/verify."""

from __future__ import annotations

from aiohttp import web

from smsgw.api.destinations import parse_destination
from smsgw.api.inputs import decode_json
from smsgw.api.metrics import METRICS
from smsgw.api.problems import Problem
from smsgw.api.queueing import queue_full_problem
from smsgw.api.responses import json_response, rfc3339
from smsgw.api.schemas import OtpStartBody, OtpVerifyBody
from smsgw.app_keys import OTP
from smsgw.errors import (
    MaxAttemptsReached,
    QueueFull,
    TooManyFailedChecks,
    TooManySends,
    VerificationNotFound,
)
from smsgw.phone import InvalidPhoneNumber, parse_phone

__all__ = ["start_verification", "verify_code"]

_SEND_REFUSALS = {
    "resend-cooldown": "wait before asking for another code for this number",
    "too-many-sends": "too many codes were sent to this number recently",
    "daily-cap": "this number has had as many codes as it may get in 24 hours",
    "suspected-pumping": "unusually many codes go to this number range or country; try again later",
}

# A check the policy refused: (metric label, status, problem type, title, detail).
_CHECK_REFUSALS: dict[type[Exception], tuple[str, int, str, str, str]] = {
    VerificationNotFound: (
        "not_found",
        404,
        "verification-not-found",
        "Verification not found",
        "no pending verification: unknown, expired or already approved",
    ),
    TooManyFailedChecks: (
        "number_locked",
        429,
        "too-many-failed-checks",
        "Too many wrong codes",
        "too many wrong codes for this number lately; try again later",
    ),
    MaxAttemptsReached: (
        "max_attempts",
        429,
        "max-attempts-reached",
        "Max check attempts reached",
        "too many wrong codes: start a new verification",
    ),
}


async def start_verification(request: web.Request, client: str, body: bytes) -> web.Response:
    data = decode_json(body, OtpStartBody)
    phone = parse_destination(request, client, data.phone, "#/phone")
    assert phone is not None  # parse_destination raised otherwise
    try:
        started = await request.app[OTP].start(
            client=client,
            phone=phone,
            app=data.app,
            length=data.length,
            locale=data.locale,
            ttl_s=data.ttl_s,
        )
    except TooManySends as exc:
        request.app[METRICS].otp_starts.labels(exc.reason).inc()
        raise Problem(
            429,
            exc.reason,
            "Too many codes",
            _SEND_REFUSALS.get(exc.reason, exc.reason),
            headers={"Retry-After": str(max(exc.retry_after_s, 1))},
        ) from exc
    except QueueFull as exc:
        request.app[METRICS].otp_starts.labels("queue-full").inc()
        raise queue_full_problem(exc) from exc
    request.app[METRICS].otp_starts.labels("accepted").inc()
    return json_response(
        {
            "id": started.id,
            "status": "pending",
            "phone": started.phone,
            "expires_at": rfc3339(started.expires_at),
            "resend_after": rfc3339(started.resend_after, round_up=True),
            "message_id": started.message_id,
        },
        status=202,
    )


async def verify_code(request: web.Request, client: str, body: bytes) -> web.Response:
    data = decode_json(body, OtpVerifyBody)
    if (data.id is None) == (data.phone is None):
        raise Problem(
            400,
            "invalid-request",
            "Invalid request",
            "give exactly one of id and phone",
            errors=[{"pointer": "#/id", "detail": "give exactly one of id and phone"}],
        )
    phone = None
    if data.phone is not None:
        try:
            phone = parse_phone(data.phone).e164
        except InvalidPhoneNumber as exc:
            raise Problem(
                400,
                "invalid-phone",
                "Invalid phone number",
                str(exc),
                errors=[{"pointer": "#/phone", "detail": str(exc)}],
            ) from exc
    checks = request.app[METRICS].otp_checks
    try:
        result = await request.app[OTP].check(
            client=client, code=data.code, verification_id=data.id, phone=phone
        )
    except (VerificationNotFound, TooManyFailedChecks, MaxAttemptsReached) as exc:
        label, status, slug, title, detail = next(
            refusal for kind, refusal in _CHECK_REFUSALS.items() if isinstance(exc, kind)
        )
        checks.labels(label).inc()
        headers = None
        if isinstance(exc, TooManyFailedChecks):
            headers = {"Retry-After": str(exc.retry_after_s)}
        raise Problem(status, slug, title, detail, headers=headers) from exc
    checks.labels("approved" if result.valid else "wrong_code").inc()
    return json_response(
        {
            "id": result.id,
            "status": "approved" if result.valid else "pending",
            "valid": result.valid,
            "attempts_left": result.attempts_left,
        }
    )
