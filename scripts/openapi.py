"""Write smsgw/api/openapi.json: the paths here, the request schemas from smsgw.api.schemas.

Run `python scripts/openapi.py` after changing an endpoint; a test fails while the committed
document and this generator disagree, so the spec cannot drift from the validation code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from smsgw import __version__
from smsgw.api.schemas import MessageBatchBody, MessageBody, OtpStartBody, OtpVerifyBody

TARGET = Path(__file__).resolve().parent.parent / "smsgw" / "api" / "openapi.json"
REF = "#/components/schemas/{name}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name=name)}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": _ref("Problem")}},
    }


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


_COMMON_POST_ERRORS = {
    "400": _problem("Malformed JSON, invalid fields or invalid phone number"),
    "401": _problem("Missing or invalid API key"),
    "409": _problem("A request with the same Idempotency-Key is still running"),
    "410": _problem(
        "The request with this Idempotency-Key was processed, but its answer was too large "
        "to keep (idempotent-answer-not-kept): it is not processed again"
    ),
    "413": _problem("Body too large"),
    "415": _problem("Body is not application/json"),
    "422": _problem(
        "Idempotency-Key reused with another body, destination not served, or a body longer "
        "than the providers serving it accept (body-too-long: nothing is queued)"
    ),
    "503": _problem("Queue full or replica draining (see Retry-After)"),
}
# Any POST may get it, besides the reasons of its own 429 (if any).
_IDEMPOTENCY_BUDGET_429 = (
    "this client's requests with an Idempotency-Key in flight fill its idempotency budget "
    "(see Retry-After)"
)
_IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Same key and body within 24 h return the first response and send nothing.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


def _post(summary: str, body: str, ok: str, ok_schema: dict[str, Any], **errors: Any) -> Any:
    responses = {ok: _json(summary, ok_schema), **_COMMON_POST_ERRORS}
    too_many = errors.pop("e429", None)
    too_many = f"{too_many}; or {_IDEMPOTENCY_BUDGET_429}" if too_many else _IDEMPOTENCY_BUDGET_429
    responses["429"] = _problem(too_many[0].upper() + too_many[1:])
    responses.update({code.removeprefix("e"): _problem(text) for code, text in errors.items()})
    return {
        "post": {
            "summary": summary,
            "security": [{"bearer": []}],
            "parameters": [_IDEMPOTENCY_HEADER],
            "requestBody": _body(body),
            "responses": dict(sorted(responses.items())),
        }
    }


def _get(summary: str, schema: dict[str, Any], *, not_ready: bool = False) -> Any:
    responses: dict[str, Any] = {"200": _json(summary, schema)}
    if not_ready:
        responses["503"] = _problem("Draining or saturated")
    return {"get": {"summary": summary, "security": [], "responses": responses}}


def _query(name: str, description: str, schema: dict[str, Any], required: bool = False) -> Any:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


def _audit_get(summary: str, schema: dict[str, Any], parameters: list[Any], **errors: Any) -> Any:
    responses = {
        "200": _json(summary, schema),
        "401": _problem("Missing or invalid API key"),
        "429": _problem("Request quota of this client exceeded (see Retry-After)"),
        "503": _problem("Audit store unavailable (see Retry-After)"),
    }
    responses.update({code.removeprefix("e"): _problem(text) for code, text in errors.items()})
    return {
        "summary": summary,
        "security": [{"bearer": []}],
        "parameters": parameters,
        "responses": dict(sorted(responses.items())),
    }


def _webhook() -> Any:
    responses = {
        "204": {"description": "Recorded, or a repeat or an intermediate status (no change)"},
        "400": _problem("The receipt names no message of ours, or its body is malformed"),
        "403": _problem(
            "Nothing recorded: the receipt lacks our tag for a message sent through this "
            "provider (Twilio: in the callback URL; Vonage: in client-ref); Twilio: "
            "X-Twilio-Signature does not match; Vonage with a signature_secret: sig does "
            "not match or timestamp not within 5 minutes"
        ),
        "404": _problem("No twilio/vonage provider by this name, or server.public_url unset"),
    }
    provider = {"name": "provider", "in": "path", "required": True, "schema": _STR}
    operation = {
        "security": [],
        "parameters": [provider],
        "responses": responses,
    }
    form = {"type": "object", "additionalProperties": {"type": "string"}}
    return {
        "post": {
            **operation,
            "summary": "Delivery receipt from a provider (Twilio status callback, Vonage DLR)",
            "requestBody": {
                "required": False,
                "content": {
                    "application/x-www-form-urlencoded": {"schema": form},
                    "application/json": {"schema": {"type": "object"}},
                },
            },
        },
        "get": {**operation, "summary": "Delivery receipt from Vonage (GET callbacks)"},
    }


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required if required is not None else list(properties),
    }


_STR = {"type": "string"}
_SEGMENTS = {
    "type": "integer",
    "minimum": 1,
    "description": "parts the body is sent in, as providers count (and bill) it",
}
_ENCODING = {"enum": ["GSM-7", "UCS-2"]}
# Messages accepted before segments were counted have neither.
_SEGMENTS_OR_NULL = {**_SEGMENTS, "type": ["integer", "null"]}
_ENCODING_OR_NULL = {"enum": ["GSM-7", "UCS-2", None]}
_TIME = {"type": "string", "format": "date-time"}


def build() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [OtpStartBody, OtpVerifyBody, MessageBody, MessageBatchBody], ref_template=REF
    )
    components["Problem"] = {
        "type": "object",
        "description": "RFC 9457 problem details",
        "properties": {
            "type": _STR,
            "title": _STR,
            "status": {"type": "integer"},
            "detail": _STR,
            "errors": {
                "type": "array",
                "items": _object({"pointer": _STR, "detail": _STR}),
            },
        },
        "required": ["type", "title", "status"],
    }
    started = _object(
        {
            "id": _STR,
            "status": {"const": "pending"},
            "phone": _STR,
            "expires_at": _TIME,
            "resend_after": _TIME,
            "message_id": _STR,
        }
    )
    checked = _object(
        {
            "id": _STR,
            "status": {"enum": ["approved", "pending"]},
            "valid": {"type": "boolean"},
            "attempts_left": {"type": "integer", "minimum": 0},
        }
    )
    nullable_str = {"type": ["string", "null"]}
    summary_fields = {
        "id": _STR,
        "to": _STR,
        "status": {
            "enum": [
                "queued",
                "sending",
                "sent",
                "delivered",
                "undelivered",
                "failed",
                "expired",
                "rejected",
            ]
        },
        "provider": nullable_str,
        "attempts": {"type": "integer", "minimum": 0},
        "client_ref": nullable_str,
        "priority": {"enum": ["high", "normal"]},
        "body": {"type": "string", "description": "as sent, with an OTP code masked"},
        "segments": _SEGMENTS_OR_NULL,
        "encoding": _ENCODING_OR_NULL,
        "created_at": _TIME,
    }
    event = {
        "type": "object",
        "properties": {
            "type": {
                "enum": [
                    "accepted",
                    "queued",
                    "sending",
                    "sent",
                    "retry",
                    "failed",
                    "expired",
                    "rejected",
                    "delivered",
                    "undelivered",
                ]
            },
            "at": _TIME,
            "provider": _STR,
            "attempt": {"type": "integer", "minimum": 1},
            "provider_message_id": _STR,
            "reason": _STR,
            "replica": _STR,
            "possible_duplicate": {"type": "boolean"},
        },
        "required": ["type", "at"],
    }
    trail = _object({**summary_fields, "events": {"type": "array", "items": event}})
    listing = _object(
        {
            "messages": {"type": "array", "items": _object(summary_fields)},
            "next_cursor": nullable_str,
        }
    )
    paths = {
        "/v1/otp": _post(
            "Start a verification: send a one-time code by SMS",
            "OtpStartBody",
            "202",
            started,
            e403="Destination country not allowed for this client",
            e429="Too many codes to this number (10 minutes, daily cap), resend cooldown, or "
            "suspected SMS pumping to its range or country (see Retry-After)",
        ),
        "/v1/otp/verify": _post(
            "Check a code",
            "OtpVerifyBody",
            "200",
            checked,
            e404="By id: unknown, expired or already approved verification (never by phone)",
            e429="Max check attempts reached, or too many wrong codes for this number lately "
            "(see Retry-After)",
        ),
        "/v1/messages": {
            **_post(
                "Send one SMS",
                "MessageBody",
                "202",
                _object(
                    {
                        "id": _STR,
                        "status": {"const": "queued"},
                        "segments": _SEGMENTS,
                        "encoding": _ENCODING,
                    }
                ),
                e403="Destination country not allowed for this client",
            ),
            "get": _audit_get(
                "Messages this client sent to one number, newest first",
                listing,
                [
                    _query("to", "Recipient, E.164", _STR, required=True),
                    _query("since", "Accepted at or after (RFC 3339)", _TIME),
                    _query("until", "Accepted at or before (RFC 3339)", _TIME),
                    _query(
                        "limit",
                        "Page size",
                        {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                    ),
                    _query("cursor", "next_cursor of the previous page", _STR),
                ],
                e400="Invalid or unknown query parameter",
            ),
        },
        "/v1/messages/{message_id}": {
            "get": _audit_get(
                "A message's audit trail: status, provider, attempts and every event",
                trail,
                [{"name": "message_id", "in": "path", "required": True, "schema": _STR}],
                e404="No message with this id was sent by this client",
            )
        },
        "/v1/messages/batch": _post(
            "Send up to 1000 SMS, all or nothing",
            "MessageBatchBody",
            "202",
            _object({"ids": {"type": "array", "items": _STR}}),
            e403="A destination country not allowed for this client (nothing is queued)",
        ),
        "/v1/webhooks/{provider}": _webhook(),
        "/healthz": _get("Liveness", _object({"status": {"const": "ok"}})),
        "/readyz": _get(
            "Readiness",
            _object({"status": {"const": "ready"}}, required=["status"]),
            not_ready=True,
        ),
        "/openapi.json": _get("This document", {"type": "object"}),
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text exposition format)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Prometheus metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }
    paths["/v1/otp/verify"]["post"]["description"] = (
        "By `id` (the verification's own, from the start): a wrong code is 200 with "
        "`valid: false` and the attempts left; an unknown, expired or approved id is 404. "
        "By `phone`: the answer does not tell whether a code is pending. With nothing "
        "pending, a wrong code is answered exactly as for a pending one (200, `valid: "
        "false`, attempts counting down from the same maximum, then 429 "
        "`max-attempts-reached`) and costs the number a failed check alike. The `id` of a "
        "wrong-code answer by phone is an opaque name of (client, phone), the same whether "
        "or not a code is pending, not a verification id (by id it is unknown); the right "
        "code's answer carries the verification's own id."
    )
    return {
        "openapi": "3.1.0",
        "info": {"title": "smsgw", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    TARGET.write_text(render())
    sys.stdout.write(f"wrote {TARGET}\n")
