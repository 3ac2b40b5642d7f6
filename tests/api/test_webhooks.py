"""Delivery receipts: signed Twilio callbacks and Vonage receipts move a message's status,
repeats change nothing, forgeries change nothing."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiohttp.test_utils import TestClient
from twilio.request_validator import RequestValidator
from vonage_http_client.auth import Auth as VonageAuth
from yarl import URL

from bench.fake_provider import DEFAULT_AUTH_TOKEN, FakeTwilio
from bench.vonage_shapes import VonageAccount
from smsgw.providers.twilio import TwilioProvider, request_signature
from smsgw.providers.vonage import VonageProvider, webhook_signature
from smsgw.settings import TwilioProviderSettings, VonageProviderSettings
from tests.api.test_messages import twilio_provider
from tests.helpers import FakeHttp, app_client

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


@pytest.fixture
async def twilio_client(aiohttp_client: Any, aiohttp_server: Any, sms_path: Path) -> Client:
    server = await aiohttp_server(FakeTwilio().make_app())
    return await app_client(
        aiohttp_client, sms_path, server={"public_url": PUBLIC}, providers=[twilio_provider(server)]
    )


async def post_twilio(
    client: Client, message_id: str, status: str, *, token: str = DEFAULT_AUTH_TOKEN, **extra: str
) -> int:
    params = {"MessageSid": "SM" + "1" * 32, "MessageStatus": status, "To": PHONE, **extra}
    path = f"/v1/webhooks/twilio?message_id={message_id}"
    # Signed with Twilio's own library: our check must agree with it.
    signature = RequestValidator(token).compute_signature(PUBLIC + path, params)
    response = await client.post(path, data=params, headers={"X-Twilio-Signature": signature})
    return response.status


def test_our_signature_agrees_with_twilios_library() -> None:
    url = "https://example.com/v1/webhooks/twilio?message_id=msg_1"
    params = {"MessageSid": "SM1", "MessageStatus": "delivered", "Body": "a b&c=d"}
    expected = RequestValidator("secret-token").compute_signature(url, params)
    assert request_signature("secret-token", url, params.items()) == expected


async def test_a_signed_twilio_receipt_marks_the_message_delivered(twilio_client: Client) -> None:
    message_id = await sent_message(twilio_client)
    assert await post_twilio(twilio_client, message_id, "sent") == 204  # intermediate
    assert await status_of(twilio_client, message_id) == (
        "sent",
        ["accepted", "queued", "sending", "sent"],
    )
    assert await post_twilio(twilio_client, message_id, "delivered") == 204
    status, kinds = await status_of(twilio_client, message_id)
    assert status == "delivered"
    assert kinds[-1] == "delivered"
    # Twilio retries the same callback: nothing changes.
    assert await post_twilio(twilio_client, message_id, "delivered") == 204
    assert await status_of(twilio_client, message_id) == (status, kinds)
    # A final status never moves back.
    assert await post_twilio(twilio_client, message_id, "failed", ErrorCode="30003") == 204
    assert (await status_of(twilio_client, message_id))[0] == "delivered"


async def test_an_undelivered_receipt_keeps_the_error_code(twilio_client: Client) -> None:
    message_id = await sent_message(twilio_client)
    assert await post_twilio(twilio_client, message_id, "undelivered", ErrorCode="30005") == 204
    response = await twilio_client.get(f"/v1/messages/{message_id}")
    trail = await response.json()
    assert trail["status"] == "undelivered"
    assert trail["events"][-1]["reason"] == "twilio error 30005"
    assert trail["events"][-1]["provider"] == "twilio"


async def test_a_badly_signed_twilio_receipt_is_403_and_changes_nothing(
    twilio_client: Client,
) -> None:
    message_id = await sent_message(twilio_client)
    assert await post_twilio(twilio_client, message_id, "delivered", token="wrong") == 403
    unsigned = await twilio_client.post(
        f"/v1/webhooks/twilio?message_id={message_id}", data={"MessageStatus": "delivered"}
    )
    assert unsigned.status == 403
    assert (await unsigned.json())["type"] == "urn:smsgw:problem:invalid-signature"
    assert (await status_of(twilio_client, message_id))[0] == "sent"


async def test_a_receipt_without_our_message_id_is_400(twilio_client: Client) -> None:
    assert await post_twilio(twilio_client, "not-ours", "delivered") == 400


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


def vonage_entry(server: Any) -> dict[str, Any]:
    return {
        "name": "vonage",
        "kind": "vonage",
        "api_key": VonageAccount().api_key,
        "api_secret": VonageAccount().api_secret,
        "from": "smsgw",
        "base_url": str(server.make_url("")),
    }


async def test_vonage_receipts_by_get_and_by_json_post(
    aiohttp_client: Any, aiohttp_server: Any, sms_path: Path
) -> None:
    server = await aiohttp_server(FakeTwilio().make_app())
    client = await app_client(
        aiohttp_client, sms_path, server={"public_url": PUBLIC}, providers=[vonage_entry(server)]
    )
    first, second = await sent_message(client), await sent_message(client)
    buffered = {"messageId": "0A01", "status": "buffered", "client-ref": first}
    assert (await client.get("/v1/webhooks/vonage", params=buffered)).status == 204
    assert (await status_of(client, first))[0] == "sent"
    delivered = {**buffered, "status": "delivered", "err-code": "0"}
    assert (await client.get("/v1/webhooks/vonage", params=delivered)).status == 204
    assert (await client.get("/v1/webhooks/vonage", params=delivered)).status == 204  # again
    status, kinds = await status_of(client, first)
    assert status == "delivered"
    assert kinds.count("delivered") == 1

    expired = {"messageId": "0A02", "status": "expired", "err-code": "5", "client-ref": second}
    response = await client.post("/v1/webhooks/vonage", json=expired)
    assert response.status == 204
    trail = await (await client.get(f"/v1/messages/{second}")).json()
    assert trail["status"] == "undelivered"
    assert trail["events"][-1]["reason"] == "vonage err-code 5"
    assert trail["events"][-1]["provider_message_id"] == "0A02"

    long_ago = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - 4 * 86400))
    stale = {**delivered, "client-ref": second, "message-timestamp": long_ago}
    assert (await client.get("/v1/webhooks/vonage", params=stale)).status == 400
    forged = {"messageId": "x", "status": "delivered", "client-ref": "msg_guess"}
    assert (await client.get("/v1/webhooks/vonage", params=forged)).status == 400
    broken = await client.post(
        "/v1/webhooks/vonage", data=b"{", headers={"Content-Type": "application/json"}
    )
    assert broken.status == 400


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
    server = await aiohttp_server(FakeTwilio().make_app())
    entry = {
        **vonage_entry(server),
        "signature_secret": SIGNATURE_SECRET,
        "signature_method": "sha256",
    }
    client = await app_client(
        aiohttp_client, sms_path, server={"public_url": PUBLIC}, providers=[entry]
    )
    message_id = await sent_message(client)
    receipt = {"messageId": "0A01", "status": "delivered", "client-ref": message_id}

    unsigned = await client.get("/v1/webhooks/vonage", params=receipt)
    assert unsigned.status == 403
    assert (await unsigned.json())["type"].endswith("invalid-signature")
    wrong = {**vonage_signed(receipt, "sha256"), "status": "failed"}  # tampered after signing
    assert (await client.get("/v1/webhooks/vonage", params=wrong)).status == 403
    replayed = vonage_signed(receipt, "sha256", at=time.time() - 3600)
    assert (await client.get("/v1/webhooks/vonage", params=replayed)).status == 403
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


async def test_sends_ask_providers_to_report_to_our_webhook() -> None:
    sms_id = "msg_" + "cd" * 16
    from smsgw.providers.base import OutgoingSms

    sms = OutgoingSms(message_id=sms_id, to=PHONE, body="hi", validity_s=None)
    twilio = TwilioProvider(
        TwilioProviderSettings(
            name="twilio", account_sid="AC1", auth_token="t" * 32, from_="+15005550006"
        ),
        callback=f"{PUBLIC}/v1/webhooks/twilio",
    )
    vonage = VonageProvider(
        VonageProviderSettings(name="vonage", api_key="k", api_secret="s", from_="smsgw"),
        callback=f"{PUBLIC}/v1/webhooks/vonage",
    )
    twilio_url = URL("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json")
    vonage_url = URL("https://rest.nexmo.com/sms/json")
    with FakeHttp() as http:
        http.post(twilio_url, status=201, payload={"sid": "SM1", "status": "queued"})
        http.post(vonage_url, payload={"messages": [{"status": "0", "message-id": "0A1"}]})
        for provider in (twilio, vonage):
            await provider.start()
            await provider.send(sms)
            await provider.close()
        twilio_form = parse_qs(http.requests[("POST", twilio_url)][0].kwargs["data"].decode())
        vonage_form = parse_qs(http.requests[("POST", vonage_url)][0].kwargs["data"].decode())
    callback = URL(twilio_form["StatusCallback"][0])
    assert str(callback.with_query(None)) == f"{PUBLIC}/v1/webhooks/twilio"
    assert callback.query["message_id"] == sms_id
    assert abs(int(callback.query["t"]) - time.time()) < 5  # the send time, signed with it
    assert vonage_form["callback"] == [f"{PUBLIC}/v1/webhooks/vonage"]
    assert vonage_form["client-ref"] == [sms_id]


async def test_a_tampered_twilio_receipt_is_403(twilio_client: Client) -> None:
    message_id = await sent_message(twilio_client)
    path = f"/v1/webhooks/twilio?message_id={message_id}"
    signed = {"MessageSid": "SM" + "2" * 32, "MessageStatus": "failed", "ErrorCode": "30007"}
    signature = RequestValidator(DEFAULT_AUTH_TOKEN).compute_signature(PUBLIC + path, signed)
    tampered = {**signed, "MessageStatus": "delivered"}
    response = await twilio_client.post(
        path, data=tampered, headers={"X-Twilio-Signature": signature}
    )
    assert response.status == 403
    # Signed for another message: the URL is part of what is signed.
    other = f"/v1/webhooks/twilio?message_id={UNKNOWN_ID}"
    response = await twilio_client.post(
        other, data=signed, headers={"X-Twilio-Signature": signature}
    )
    assert response.status == 403
    assert (await status_of(twilio_client, message_id))[0] == "sent"


async def test_stale_receipts_are_refused(twilio_client: Client) -> None:
    message_id = await sent_message(twilio_client)
    four_days_ago = str(int(time.time()) - 4 * 86400)
    path = f"/v1/webhooks/twilio?message_id={message_id}&t={four_days_ago}"
    params = {"MessageSid": "SM" + "3" * 32, "MessageStatus": "delivered"}
    signature = RequestValidator(DEFAULT_AUTH_TOKEN).compute_signature(PUBLIC + path, params)
    replayed = await twilio_client.post(
        path, data=params, headers={"X-Twilio-Signature": signature}
    )
    assert replayed.status == 400
    assert "stale" in (await replayed.json())["detail"]
    assert (await status_of(twilio_client, message_id))[0] == "sent"
