"""Delivery receipts: signed Twilio callbacks and Vonage receipts move a message's status,
repeats change nothing, forgeries change nothing."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import msgspec
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient
from twilio.request_validator import RequestValidator
from vonage_http_client.auth import Auth as VonageAuth
from yarl import URL

from smsgw.api.keys import RECEIPTS
from smsgw.app import create_app
from smsgw.app_keys import AUDIT, RECEIPT_TAGS
from smsgw.providers import OutgoingSms, ReceiptTagger, build_provider
from smsgw.providers.receipt_tags import receipt_keys
from smsgw.providers.twilio import request_signature
from smsgw.providers.vonage import webhook_signature
from smsgw.settings import (
    OtpSettings,
    Settings,
    TwilioProviderSettings,
    VonageProviderSettings,
    parse_settings,
)
from testkit.fake_provider import DEFAULT_AUTH_TOKEN, FakeTwilio
from testkit.vonage_shapes import VonageAccount
from tests.api.test_messages import twilio_provider
from tests.helpers import ScriptedHttp, app_client, make_settings

PUBLIC = "https://sms.example.com"
PHONE = "+14155550100"
UNKNOWN_ID = "msg_" + "ab" * 16

Client = TestClient[Any, Any]


async def status_of(client: Client, message_id: str) -> tuple[str, list[str]]:
    response = await client.get(f"/v1/messages/{message_id}")
    assert response.status == 200
    trail = await response.json()
    return trail["status"], [e["type"] for e in trail["events"]]


async def sent_message(client: Client) -> str:
    response = await client.post("/v1/messages", json={"to": PHONE, "body": "hello"})
    message_id: str = (await response.json())["id"]
    deadline = time.monotonic() + 5
    while (await status_of(client, message_id))[0] != "sent":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    return message_id


def capture_sends(fake: web.Application) -> list[dict[str, str]]:
    """Every send form the fake provider gets, in order: what our send path really said."""
    forms: list[dict[str, str]] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method == "POST":
            forms.append(dict(parse_qsl((await request.read()).decode(), keep_blank_values=True)))
        return await handler(request)  # type: ignore[no-any-return]

    fake.middlewares.append(record)
    return forms


def client_ref_of(forms: list[dict[str, str]], message_id: str) -> str:
    refs = [f["client-ref"] for f in forms if f.get("client-ref", "").startswith(message_id)]
    assert refs, f"no send of {message_id} in {forms}"
    return refs[-1]


def callback_of(forms: list[dict[str, str]], message_id: str) -> str:
    """The StatusCallback our send gave Twilio for `message_id`, as a path on our server."""
    urls = [URL(f["StatusCallback"]) for f in forms if message_id in f.get("StatusCallback", "")]
    assert urls, f"no send of {message_id} in {forms}"
    return str(urls[-1].relative())


def vonage_entry(server: Any) -> dict[str, Any]:
    return {
        "name": "vonage",
        "kind": "vonage",
        "api_key": VonageAccount().api_key,
        "api_secret": VonageAccount().api_secret,
        "from": "smsgw",
        "base_url": str(server.make_url("")),
    }


async def audit_events(client: Client, message_id: str) -> list[str]:
    """Every audit event of `message_id`, stored or still in the writer's buffer."""
    writer = client.app[AUDIT]
    stored = await writer.store.events(message_id)
    return [e.kind for e in stored] + [e.kind for e in writer.unstored(message_id)]


async def vonage_client(
    aiohttp_client: Any, aiohttp_server: Any, sms_path: Path, *entries: dict[str, Any]
) -> tuple[Client, list[dict[str, str]]]:
    """The app with Vonage providers (`entries` over the default one) sending to the fake,
    and the forms the fake received."""
    fake = FakeTwilio().make_app()
    forms = capture_sends(fake)
    server = await aiohttp_server(fake)
    providers = [{**vonage_entry(server), **entry} for entry in entries or ({},)]
    client = await app_client(
        aiohttp_client, sms_path, server={"public_url": PUBLIC}, providers=providers
    )
    return client, forms


@dataclass
class Rig:
    client: Client
    forms: list[dict[str, str]]  # what the fake provider received


@pytest.fixture
async def twilio(aiohttp_client: Any, aiohttp_server: Any, sms_path: Path) -> Rig:
    fake = FakeTwilio().make_app()
    forms = capture_sends(fake)
    server = await aiohttp_server(fake)
    client = await app_client(
        aiohttp_client, sms_path, server={"public_url": PUBLIC}, providers=[twilio_provider(server)]
    )
    return Rig(client, forms)


async def post_twilio(
    client: Client, path: str, status: str, *, token: str = DEFAULT_AUTH_TOKEN, **extra: str
) -> int:
    """POST a status callback to `path` (the StatusCallback of a send), signed."""
    params = {"MessageSid": "SM" + "1" * 32, "MessageStatus": status, "To": PHONE, **extra}
    # Signed with Twilio's own library: our check must agree with it.
    signature = RequestValidator(token).compute_signature(PUBLIC + path, params)
    response = await client.post(path, data=params, headers={"X-Twilio-Signature": signature})
    return response.status


def test_our_signature_agrees_with_twilios_library() -> None:
    url = "https://example.com/v1/webhooks/twilio?message_id=msg_1"
    params = {"MessageSid": "SM1", "MessageStatus": "delivered", "Body": "a b&c=d"}
    expected = RequestValidator("secret-token").compute_signature(url, params)
    assert request_signature("secret-token", url, params.items()) == expected


async def test_a_signed_twilio_receipt_marks_the_message_delivered(twilio: Rig) -> None:
    client = twilio.client
    message_id = await sent_message(client)
    callback = callback_of(twilio.forms, message_id)
    assert await post_twilio(client, callback, "sent") == 204  # intermediate
    assert await status_of(client, message_id) == (
        "sent",
        ["accepted", "queued", "sending", "sent"],
    )
    assert await post_twilio(client, callback, "delivered") == 204
    status, kinds = await status_of(client, message_id)
    assert status == "delivered"
    assert kinds[-1] == "delivered"
    # Twilio retries the same callback: nothing changes.
    assert await post_twilio(client, callback, "delivered") == 204
    assert await status_of(client, message_id) == (status, kinds)
    # A final status never moves back.
    assert await post_twilio(client, callback, "failed", ErrorCode="30003") == 204
    assert (await status_of(client, message_id))[0] == "delivered"


async def test_an_undelivered_receipt_keeps_the_error_code(twilio: Rig) -> None:
    message_id = await sent_message(twilio.client)
    callback = callback_of(twilio.forms, message_id)
    assert await post_twilio(twilio.client, callback, "undelivered", ErrorCode="30005") == 204
    response = await twilio.client.get(f"/v1/messages/{message_id}")
    trail = await response.json()
    assert trail["status"] == "undelivered"
    assert trail["events"][-1]["reason"] == "twilio error 30005"
    assert trail["events"][-1]["provider"] == "twilio"


async def test_a_badly_signed_twilio_receipt_is_403_and_changes_nothing(twilio: Rig) -> None:
    message_id = await sent_message(twilio.client)
    callback = callback_of(twilio.forms, message_id)
    assert await post_twilio(twilio.client, callback, "delivered", token="wrong") == 403
    unsigned = await twilio.client.post(callback, data={"MessageStatus": "delivered"})
    assert unsigned.status == 403
    assert (await unsigned.json())["type"] == "urn:smsgw:problem:invalid-signature"
    assert (await status_of(twilio.client, message_id))[0] == "sent"


async def test_a_signed_twilio_receipt_without_our_tag_is_403(twilio: Rig) -> None:
    """Signed by Twilio is not enough: the URL must carry our tag for this message (a
    callback URL of another message, provider or key does not)."""
    message_id = await sent_message(twilio.client)
    genuine = URL(callback_of(twilio.forms, message_id))
    query = dict(genuine.query)
    other = {**query, "tag": "0" * 32}
    for forged in (
        genuine.with_query({k: v for k, v in query.items() if k != "tag"}),
        genuine.with_query(other),
        genuine.with_query({**query, "message_id": UNKNOWN_ID}),
        genuine.with_query({**query, "t": str(int(query["t"]) + 1)}),
    ):
        assert await post_twilio(twilio.client, str(forged), "delivered") == 403, forged
    assert (await status_of(twilio.client, message_id))[0] == "sent"
    assert await audit_events(twilio.client, UNKNOWN_ID) == []


async def test_a_receipt_without_our_message_id_is_400(twilio: Rig) -> None:
    path = "/v1/webhooks/twilio?message_id=not-ours"
    assert await post_twilio(twilio.client, path, "delivered") == 400


async def test_webhooks_need_a_public_url_and_a_receipt_provider(
    client: Client, aiohttp_client: Any, aiohttp_server: Any, sms_path: Path
) -> None:
    # The default app: console provider, no public_url.
    response = await client.post("/v1/webhooks/console", data={"MessageStatus": "delivered"})
    assert response.status == 404
    assert (await response.json())["type"] == "urn:smsgw:problem:unknown-webhook"
    server = await aiohttp_server(FakeTwilio().make_app())
    no_url = await app_client(aiohttp_client, sms_path, providers=[twilio_provider(server)])
    assert (await no_url.post("/v1/webhooks/twilio", data={})).status == 404


async def test_vonage_receipts_by_get_and_by_json_post(
    aiohttp_client: Any, aiohttp_server: Any, sms_path: Path
) -> None:
    client, forms = await vonage_client(aiohttp_client, aiohttp_server, sms_path)
    first, second = await sent_message(client), await sent_message(client)
    # Receipts echo the client-ref our send put there: the id, the send time and the tag.
    first_ref, second_ref = client_ref_of(forms, first), client_ref_of(forms, second)
    assert first_ref.startswith(f"{first}.")
    buffered = {"messageId": "0A01", "status": "buffered", "client-ref": first_ref}
    assert (await client.get("/v1/webhooks/vonage", params=buffered)).status == 204
    assert (await status_of(client, first))[0] == "sent"
    delivered = {**buffered, "status": "delivered", "err-code": "0"}
    assert (await client.get("/v1/webhooks/vonage", params=delivered)).status == 204
    assert (await client.get("/v1/webhooks/vonage", params=delivered)).status == 204  # again
    status, kinds = await status_of(client, first)
    assert status == "delivered"
    assert kinds.count("delivered") == 1

    expired = {"messageId": "0A02", "status": "expired", "err-code": "5", "client-ref": second_ref}
    response = await client.post("/v1/webhooks/vonage", json=expired)
    assert response.status == 204
    trail = await (await client.get(f"/v1/messages/{second}")).json()
    assert trail["status"] == "undelivered"
    assert trail["events"][-1]["reason"] == "vonage err-code 5"
    assert trail["events"][-1]["provider_message_id"] == "0A02"

    long_ago = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - 4 * 86400))
    stale = {**delivered, "client-ref": second_ref, "message-timestamp": long_ago}
    assert (await client.get("/v1/webhooks/vonage", params=stale)).status == 400
    forged = {"messageId": "x", "status": "delivered", "client-ref": "msg_guess"}
    assert (await client.get("/v1/webhooks/vonage", params=forged)).status == 400
    broken = await client.post(
        "/v1/webhooks/vonage", data=b"{", headers={"Content-Type": "application/json"}
    )
    assert broken.status == 400


async def test_a_forged_vonage_receipt_is_403_and_writes_nothing(
    aiohttp_client: Any, aiohttp_server: Any, sms_path: Path
) -> None:
    """Unsigned Vonage receipts naming any id of our shape used to be recorded: anyone could
    write audit rows and seen-receipt entries, or forge the status of a real message."""
    client, _ = await vonage_client(aiohttp_client, aiohttp_server, sms_path)
    real = await sent_message(client)
    for message_id in (real, UNKNOWN_ID):
        for client_ref in (message_id, f"{message_id}.{int(time.time())}.{'0' * 32}"):
            forged = {"messageId": "0A09", "status": "delivered", "client-ref": client_ref}
            response = await client.get("/v1/webhooks/vonage", params=forged)
            assert response.status == 403, client_ref
            assert response.headers["Content-Type"] == "application/problem+json"
            response = await client.post("/v1/webhooks/vonage", json=forged)
            assert response.status == 403
    assert (await status_of(client, real))[0] == "sent"
    assert await audit_events(client, UNKNOWN_ID) == []
    assert "delivered" not in await audit_events(client, real)
    # No seen-receipt entry was written: the genuine receipt would still be recorded.
    assert await client.app[RECEIPTS].first_time(UNKNOWN_ID, "delivered")
    assert await client.app[RECEIPTS].first_time(real, "delivered")


async def test_a_receipt_tagged_for_another_provider_is_refused(
    aiohttp_client: Any, aiohttp_server: Any, sms_path: Path
) -> None:
    client, forms = await vonage_client(
        aiohttp_client, aiohttp_server, sms_path, {"name": "vonage"}, {"name": "vonage-b"}
    )
    message_id = await sent_message(client)
    trail = await (await client.get(f"/v1/messages/{message_id}")).json()
    sender = trail["provider"]
    other = "vonage-b" if sender == "vonage" else "vonage"
    receipt = {
        "messageId": "0A01",
        "status": "delivered",
        "client-ref": client_ref_of(forms, message_id),
    }
    response = await client.get(f"/v1/webhooks/{other}", params=receipt)
    assert response.status == 403
    assert (await status_of(client, message_id))[0] == "sent"
    # Through the provider that sent it, the same receipt is genuine.
    assert (await client.get(f"/v1/webhooks/{sender}", params=receipt)).status == 204
    assert (await status_of(client, message_id))[0] == "delivered"


SIGNATURE_SECRET = "vonage-signature-secret"


def vonage_signed(
    params: dict[str, str], method: str, *, at: float | None = None
) -> dict[str, str]:
    """`params` with a timestamp and a sig computed as Vonage does: the HMAC methods by
    Vonage's own Python SDK, md5hash (which the SDK does not offer) from its definition."""
    signed = {**params, "timestamp": str(int(time.time() if at is None else at))}
    if method == "md5hash":
        pairs = sorted(signed.items())
        query = "".join(f"&{k}={v.replace('&', '_').replace('=', '_')}" for k, v in pairs)
        sig = hashlib.md5((query + SIGNATURE_SECRET).encode()).hexdigest()  # noqa: S324
    else:
        auth = VonageAuth(api_key="k", signature_secret=SIGNATURE_SECRET, signature_method=method)
        sig = auth.sign_params(dict(signed)).upper()  # Vonage sends HMACs in uppercase
    return {**signed, "sig": sig}


@pytest.mark.parametrize("method", ["md5hash", "md5", "sha1", "sha256", "sha512"])
def test_our_vonage_signature_agrees_with_vonages_definition(method: str) -> None:
    params = {"messageId": "0A01", "status": "delivered", "client-ref": "a&b=c", "msisdn": "1"}
    signed = vonage_signed(params, method)
    pairs = [(k, v) for k, v in signed.items()]
    assert webhook_signature(SIGNATURE_SECRET, method, pairs) == signed["sig"].lower()  # type: ignore[arg-type]


async def test_signed_vonage_receipts_need_a_valid_recent_signature(
    aiohttp_client: Any, aiohttp_server: Any, sms_path: Path
) -> None:
    signed_webhooks = {"signature_secret": SIGNATURE_SECRET, "signature_method": "sha256"}
    client, forms = await vonage_client(aiohttp_client, aiohttp_server, sms_path, signed_webhooks)
    message_id = await sent_message(client)
    ref = client_ref_of(forms, message_id)
    receipt = {"messageId": "0A01", "status": "delivered", "client-ref": ref}

    unsigned = await client.get("/v1/webhooks/vonage", params=receipt)
    assert unsigned.status == 403
    assert (await unsigned.json())["type"].endswith("invalid-signature")
    wrong = {**vonage_signed(receipt, "sha256"), "status": "failed"}  # tampered after signing
    assert (await client.get("/v1/webhooks/vonage", params=wrong)).status == 403
    replayed = vonage_signed(receipt, "sha256", at=time.time() - 3600)
    assert (await client.get("/v1/webhooks/vonage", params=replayed)).status == 403
    # Signed by Vonage, but without our tag: not a message we sent through it.
    untagged = vonage_signed({**receipt, "client-ref": message_id}, "sha256")
    response = await client.get("/v1/webhooks/vonage", params=untagged)
    assert response.status == 403
    assert (await response.json())["type"].endswith("invalid-receipt-tag")
    assert (await status_of(client, message_id))[0] == "sent"  # none of them changed anything

    # Signed as Vonage does, by GET and by form POST.
    signed = await client.get("/v1/webhooks/vonage", params=vonage_signed(receipt, "sha256"))
    assert signed.status == 204
    assert (await status_of(client, message_id))[0] == "delivered"
    again = await client.post("/v1/webhooks/vonage", data=vonage_signed(receipt, "sha256"))
    assert again.status == 204
    assert (await status_of(client, message_id))[1].count("delivered") == 1


async def test_a_receipt_before_the_send_is_recorded_is_kept() -> None:
    """Recorded under our id whatever else is stored yet: nothing to look up first."""
    # Covered at the store level: a receipt is one event under the message id it names,
    # and the trail is complete once the sending replica's events are stored too.
    from smsgw.audit import AuditEvent, summarize

    receipt = AuditEvent(message_id=UNKNOWN_ID, key="2:a", kind="delivered", at=2.0, replica="r")
    accepted = AuditEvent(
        message_id=UNKNOWN_ID, key="1:b", kind="accepted", at=1.0, replica="s", client="c"
    )
    sent = AuditEvent(message_id=UNKNOWN_ID, key="1:c", kind="sent", at=1.5, replica="s")
    # The receipt was stored first; the others arrive later and sort before it.
    assert summarize(UNKNOWN_ID, [receipt, accepted, sent]).status == "delivered"


RECEIPT_SECRET = "receipt-secret-0123456789"
OLD_RECEIPT_SECRET = "old-receipt-secret-0123456789"
TWILIO_AUTH = "t" * 32
TWILIO_ENTRY = {
    "name": "twilio",
    "kind": "twilio",
    "account_sid": "AC1",
    "auth_token": TWILIO_AUTH,
    "from": "+15005550006",
}
VONAGE_ENTRY = {"name": "vonage", "kind": "vonage", "api_key": "k", "api_secret": "s", "from": "x"}
TWILIO_API = "/2010-04-01/Accounts/AC1/Messages.json"
VONAGE_API = "/sms/json"


def replica(sms_path: Path, **server: str) -> Settings:
    """Settings of one replica taking receipts for TWILIO_ENTRY and VONAGE_ENTRY."""
    otp = {"secret": server.pop("otp_secret")} if "otp_secret" in server else {}
    return make_settings(
        sms_path,
        server={"public_url": PUBLIC, **server},
        otp=otp,
        providers=[TWILIO_ENTRY, VONAGE_ENTRY],
    )


async def forms_sent(settings: Settings, twilio_id: str, vonage_id: str) -> tuple[URL, str]:
    """Send one SMS through each provider as a replica with `settings` would (to a scripted
    server standing in for both APIs); returns Twilio's StatusCallback and Vonage's
    client-ref."""
    keys = receipt_keys(settings.server, settings.otp)
    assert keys is not None
    tagger = ReceiptTagger(*keys)
    async with ScriptedHttp() as http:
        twilio, vonage = (
            build_provider(msgspec.structs.replace(p, base_url=http.url), PUBLIC, tagger)
            for p in settings.providers
        )
        http.post(TWILIO_API, status=201, payload={"sid": "SM1", "status": "queued"})
        http.post(VONAGE_API, payload={"messages": [{"status": "0", "message-id": "0A1"}]})
        for provider, message_id in ((twilio, twilio_id), (vonage, vonage_id)):
            await provider.start()
            await provider.send(OutgoingSms(message_id=message_id, to=PHONE, body="hi"))
            await provider.close()
        twilio_form = http.sent(TWILIO_API)[0].form()
        vonage_form = http.sent(VONAGE_API)[0].form()
    assert vonage_form["callback"] == [f"{PUBLIC}/v1/webhooks/vonage"]
    return URL(twilio_form["StatusCallback"][0]), vonage_form["client-ref"][0]


async def post_receipts(client: Client, callback: URL, client_ref: str) -> tuple[int, int]:
    """A Twilio and a Vonage 'delivered' receipt built from what the sends said."""
    path = str(callback.relative())
    twilio = await post_twilio(client, path, "delivered", token=TWILIO_AUTH)
    receipt = {"messageId": "0A1", "status": "delivered", "client-ref": client_ref}
    vonage = await client.get("/v1/webhooks/vonage", params=receipt)
    return twilio, vonage.status


TWILIO_ID, VONAGE_ID = "msg_" + "cd" * 16, "msg_" + "ef" * 16


async def test_genuine_receipts_from_the_send_path_are_accepted(
    aiohttp_client: Any, sms_path: Path
) -> None:
    settings = replica(sms_path, receipt_secret=RECEIPT_SECRET)
    callback, client_ref = await forms_sent(settings, TWILIO_ID, VONAGE_ID)
    assert str(callback.with_query(None)) == f"{PUBLIC}/v1/webhooks/twilio"
    assert callback.query["message_id"] == TWILIO_ID
    assert abs(int(callback.query["t"]) - time.time()) < 5  # the send time, signed with it
    assert len(callback.query["tag"]) == 32
    # Vonage: the id, the send time and the tag, within its 100 characters.
    message_id, sent_at, tag = client_ref.split(".")
    assert message_id == VONAGE_ID
    assert abs(int(sent_at) - time.time()) < 5
    assert len(tag) == 32
    assert len(client_ref) <= 100

    # Another replica with the same settings (the key is not per process) takes them.
    client = await aiohttp_client(create_app(settings))
    assert await post_receipts(client, callback, client_ref) == (204, 204)
    assert await audit_events(client, TWILIO_ID) == ["delivered"]
    assert await audit_events(client, VONAGE_ID) == ["delivered"]

    # Twilio's tag in Vonage's client-ref: the tag names the provider, so it is refused.
    moved = f"{TWILIO_ID}.{callback.query['t']}.{callback.query['tag']}"
    receipt = {"messageId": "0A2", "status": "failed", "client-ref": moved}
    assert (await client.get("/v1/webhooks/vonage", params=receipt)).status == 403
    assert await audit_events(client, TWILIO_ID) == ["delivered"]


async def test_receipts_tagged_under_the_previous_secret_are_taken_during_a_rotation(
    aiohttp_client: Any, sms_path: Path
) -> None:
    before = replica(sms_path, receipt_secret=OLD_RECEIPT_SECRET)
    callback, client_ref = await forms_sent(before, TWILIO_ID, VONAGE_ID)
    rotating = replica(
        sms_path, receipt_secret=RECEIPT_SECRET, receipt_previous_secret=OLD_RECEIPT_SECRET
    )
    client = await aiohttp_client(create_app(rotating))
    assert await post_receipts(client, callback, client_ref) == (204, 204)
    # Once the previous secret is dropped, its tags are refused.
    rotated = await aiohttp_client(create_app(replica(sms_path, receipt_secret=RECEIPT_SECRET)))
    assert await post_receipts(rotated, callback, client_ref) == (403, 403)
    # Tags of the new secret verify on both.
    callback, client_ref = await forms_sent(rotating, UNKNOWN_ID, "msg_" + "12" * 16)
    assert await post_receipts(rotated, callback, client_ref) == (204, 204)


async def test_without_receipt_secret_the_key_is_derived_from_the_otp_secret(
    aiohttp_client: Any, sms_path: Path
) -> None:
    first = replica(sms_path, otp_secret="shared-otp-secret-0123456789")
    callback, client_ref = await forms_sent(first, TWILIO_ID, VONAGE_ID)
    # Another replica (or the same after a restart) with the same otp.secret takes them ...
    same = await aiohttp_client(create_app(first))
    assert await post_receipts(same, callback, client_ref) == (204, 204)
    # ... one with another otp.secret does not.
    other = replica(sms_path, otp_secret="other-otp-secret-0123456789")
    elsewhere = await aiohttp_client(create_app(other))
    assert await post_receipts(elsewhere, callback, client_ref) == (403, 403)
    # The key is derived, not otp.secret itself: a dedicated receipt_secret of the same
    # text gives the same key (how to move to one: receipt_previous_secret = the otp secret).
    assert receipt_keys(first.server, first.otp) == receipt_keys(
        replica(sms_path, receipt_secret="shared-otp-secret-0123456789").server, OtpSettings()
    )


def startup_warnings(settings: Settings) -> dict[str, dict[str, Any]]:
    with structlog.testing.capture_logs() as logs:
        create_app(settings)
    return {e["event"]: e for e in logs if e["log_level"] == "warning"}


def test_a_vonage_provider_without_signature_secret_is_warned_about(sms_path: Path) -> None:
    warned = startup_warnings(replica(sms_path, receipt_secret=RECEIPT_SECRET))
    assert warned["unsigned_vonage_receipts"]["provider"] == "vonage"
    assert "signature_secret" in warned["unsigned_vonage_receipts"]["detail"]
    assert "ephemeral_receipt_secret" not in warned
    signed = make_settings(
        sms_path,
        server={"public_url": PUBLIC, "receipt_secret": RECEIPT_SECRET},
        providers=[TWILIO_ENTRY, {**VONAGE_ENTRY, "signature_secret": SIGNATURE_SECRET}],
    )
    assert startup_warnings(signed) == {}
    # No webhook without public_url, and none on a worker: nothing to warn about there.
    no_webhook = make_settings(sms_path, providers=[VONAGE_ENTRY])
    assert startup_warnings(no_webhook) == {}
    worker = make_settings(
        sms_path,
        server={"public_url": PUBLIC, "receipt_secret": RECEIPT_SECRET, "role": "worker"},
        redis={"url": "redis://127.0.0.1:1/0"},  # not connected by create_app
        providers=[VONAGE_ENTRY],
    )
    assert startup_warnings(worker) == {}


def test_without_any_secret_the_ephemeral_receipt_key_is_warned_about(sms_path: Path) -> None:
    raw = {"server": {"public_url": PUBLIC}, "providers": [TWILIO_ENTRY]}
    warned = startup_warnings(parse_settings(raw, env={}))
    assert "refused" in warned["ephemeral_receipt_secret"]["detail"]
    console_only = parse_settings({"server": {"public_url": PUBLIC}}, env={})
    assert "ephemeral_receipt_secret" not in startup_warnings(console_only)


def test_a_receipt_callback_needs_a_tagger() -> None:
    twilio = msgspec.convert(TWILIO_ENTRY, TwilioProviderSettings)
    vonage = msgspec.convert(VONAGE_ENTRY, VonageProviderSettings)
    for entry in (twilio, vonage):
        with pytest.raises(ValueError, match="tagger"):
            build_provider(entry, PUBLIC)


async def test_a_tampered_twilio_receipt_is_403(twilio: Rig) -> None:
    message_id = await sent_message(twilio.client)
    path = callback_of(twilio.forms, message_id)
    signed = {"MessageSid": "SM" + "2" * 32, "MessageStatus": "failed", "ErrorCode": "30007"}
    signature = RequestValidator(DEFAULT_AUTH_TOKEN).compute_signature(PUBLIC + path, signed)
    tampered = {**signed, "MessageStatus": "delivered"}
    response = await twilio.client.post(
        path, data=tampered, headers={"X-Twilio-Signature": signature}
    )
    assert response.status == 403
    # Signed for another message: the URL is part of what is signed.
    other = path.replace(message_id, UNKNOWN_ID)
    response = await twilio.client.post(
        other, data=signed, headers={"X-Twilio-Signature": signature}
    )
    assert response.status == 403
    assert (await status_of(twilio.client, message_id))[0] == "sent"


async def test_stale_receipts_are_refused(twilio: Rig) -> None:
    message_id = await sent_message(twilio.client)
    four_days_ago = int(time.time()) - 4 * 86400
    # A genuine tag for a send four days ago: older than the memory of seen receipts.
    tag = twilio.client.app[RECEIPT_TAGS].tag("twilio", message_id, four_days_ago)
    path = f"/v1/webhooks/twilio?message_id={message_id}&t={four_days_ago}&tag={tag}"
    assert await post_twilio(twilio.client, path, "delivered") == 400
    assert (await status_of(twilio.client, message_id))[0] == "sent"
