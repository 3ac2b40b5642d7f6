"""A provider kind defined outside smsgw (here, in this file only) is a full provider: its
config is loaded, the app sends through it, and its receipts reach the generic webhook.

Nothing in smsgw names "pigeon": the settings class registers itself by subclassing
ProviderSettings, the provider class by declaring its settings_type.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from smsgw.api.keys import RECEIPTS
from smsgw.app import create_app
from smsgw.app_keys import RECEIPT_TAGS
from smsgw.errors import PermanentProviderError
from smsgw.providers import HttpProvider, OutgoingSms, Receipt, ReceiptRequest, ReceiptRoute
from smsgw.providers.http import Answer
from smsgw.providers.receipts import check_tag, our_message_id, short_text
from smsgw.settings import ProviderSettings, load_settings

pytestmark = pytest.mark.timeout(30)

Client = TestClient[Any, Any]
PUBLIC = "https://sms.example.com"
PHONE = "+14155550100"


class PigeonSettings(ProviderSettings, frozen=True, kw_only=True, tag="pigeon"):
    _secret_fields = frozenset({"api_key"})

    api_key: str
    base_url: str


class PigeonProvider(HttpProvider):
    """A made-up JSON API: POST /v2/send {to, text, ref, notify}; answers {"id": ...};
    receipts are JSON {"ref", "state"} posted to `notify`."""

    settings_type = PigeonSettings
    receives_receipts = True

    def __init__(self, settings: PigeonSettings, receipts: ReceiptRoute | None = None) -> None:
        super().__init__(
            settings,
            base_url=settings.base_url,
            path="/v2/send",
            headers={"X-Pigeon-Key": settings.api_key, "Content-Type": "application/json"},
            receipts=receipts,
        )

    def encode(self, sms: OutgoingSms) -> bytes:
        request: dict[str, Any] = {"to": sms.to, "text": sms.body}
        if self._receipts is not None:
            sent_at = int(time.time())
            tag = self._receipts.tagger.tag(self.name, sms.message_id, sent_at)
            request.update(ref=f"{sms.message_id}.{sent_at}.{tag}", notify=self._receipts.url)
        return orjson.dumps(request)

    def decode(self, answer: Answer) -> str:
        if answer.status != 200:
            raise PermanentProviderError(self.name, f"rejected with HTTP {answer.status}")
        message_id = orjson.loads(answer.body)["id"]
        assert isinstance(message_id, str)
        return message_id

    def takes_receipts(self) -> bool:
        return self._receipts is not None

    async def parse_receipt(self, request: ReceiptRequest) -> Receipt | None:
        assert self._receipts is not None
        data = await request.json_object()
        ref = data.get("ref")
        message_id, _, rest = (ref if isinstance(ref, str) else "").partition(".")
        sent_at, _, tag = rest.partition(".")
        message_id = our_message_id(message_id)
        send = check_tag(self._receipts.tagger, self.name, message_id, sent_at, tag)
        if data.get("state") != "DELIVERED":
            return None
        return Receipt(send, "delivered", short_text(data.get("id")), None)


CONFIG = """
[server]
public_url = "{public}"
receipt_secret = "pigeon-receipt-secret-0123"
drain_timeout_s = 5.0

[otp]
secret = "pigeon-otp-secret-0123456789"

[audit]
path = "{audit}"
spool_dir = "{spool}"

[[providers]]
name = "carrier-pigeon"
kind = "pigeon"
api_key = "env:PIGEON_KEY"
base_url = "{base_url}"
"""


async def test_a_fifth_kind_loads_sends_and_takes_receipts(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    aiohttp_client: Callable[..., Awaitable[Client]],
    tmp_path: Path,
) -> None:
    sent: list[tuple[str, dict[str, Any]]] = []

    async def pigeon_api(request: web.Request) -> web.Response:
        sent.append((request.headers["X-Pigeon-Key"], await request.json()))
        return web.json_response({"id": f"pg-{len(sent)}"})

    api = web.Application()
    api.router.add_post("/v2/send", pigeon_api)
    server = await aiohttp_server(api)
    config = tmp_path / "smsgw.toml"
    config.write_text(
        CONFIG.format(
            public=PUBLIC,
            audit=tmp_path / "audit.sqlite3",
            spool=tmp_path / "spool",
            base_url=server.make_url(""),
        )
    )
    settings = load_settings(config, env={"PIGEON_KEY": "pigeon-key-1"})
    [entry] = settings.providers
    assert isinstance(entry, PigeonSettings)
    assert "pigeon-key-1" not in repr(settings)

    client = await aiohttp_client(create_app(settings))
    response = await client.post("/v1/messages", json={"to": PHONE, "body": "coo"})
    assert response.status == 202
    message_id = (await response.json())["id"]
    deadline = time.monotonic() + 5
    while (trail := await (await client.get(f"/v1/messages/{message_id}")).json())[
        "status"
    ] != "sent":
        assert time.monotonic() < deadline, trail
        await asyncio.sleep(0.02)
    assert trail["provider"] == "carrier-pigeon"
    [(key, request)] = sent
    assert (key, request["to"], request["text"]) == ("pigeon-key-1", PHONE, "coo")
    assert request["notify"] == f"{PUBLIC}/v1/webhooks/carrier-pigeon"

    webhook = "/v1/webhooks/carrier-pigeon"
    forged = {"ref": f"{message_id}.{int(time.time())}.{'0' * 32}", "state": "DELIVERED"}
    refused = await client.post(webhook, json=forged)
    assert refused.status == 403
    assert (await refused.json())["type"] == "urn:smsgw:problem:invalid-receipt-tag"
    assert (await client.post(webhook, json={"ref": "nope"})).status == 400
    assert (
        await client.post(webhook, json={**forged, "ref": request["ref"], "state": "x"})
    ).status == 204
    receipt = {"ref": request["ref"], "state": "DELIVERED", "id": "pg-1"}
    assert (await client.post(webhook, json=receipt)).status == 204
    trail = await (await client.get(f"/v1/messages/{message_id}")).json()
    assert trail["status"] == "delivered"
    assert trail["events"][-1]["provider_message_id"] == "pg-1"


def test_the_kind_is_refused_where_its_settings_are_wrong(tmp_path: Path) -> None:
    from smsgw.errors import ConfigError
    from smsgw.settings import parse_settings

    entry = {"name": "p", "kind": "pigeon", "base_url": "http://x.test"}
    with pytest.raises(ConfigError) as info:
        parse_settings({"providers": [entry]}, env={})
    assert info.value.key == "providers[0].api_key"


async def test_a_receipt_for_a_send_tagged_for_another_provider_is_never_recorded(
    aiohttp_client: Callable[..., Awaitable[Client]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A parser that checked the wrong provider's tag is a bug: the webhook refuses to
    record what it returns (a 500 problem), whatever the parser says."""
    config = tmp_path / "smsgw.toml"
    config.write_text(
        CONFIG.format(
            public=PUBLIC,
            audit=tmp_path / "audit.sqlite3",
            spool=tmp_path / "spool",
            base_url="http://127.0.0.1:9",
        )
    )
    client = await aiohttp_client(create_app(load_settings(config, env={"PIGEON_KEY": "k"})))
    message_id = "msg_" + "ab" * 16
    tagger = client.app[RECEIPT_TAGS]
    sent_at = int(time.time())
    tag = tagger.tag("other", message_id, sent_at)

    async def careless(self: PigeonProvider, request: ReceiptRequest) -> Receipt | None:
        assert self._receipts is not None
        send = check_tag(self._receipts.tagger, "other", message_id, str(sent_at), tag)
        return Receipt(send, "delivered", None, None)

    monkeypatch.setattr(PigeonProvider, "parse_receipt", careless)
    response = await client.post("/v1/webhooks/carrier-pigeon", json={})
    assert response.status == 500
    assert await client.app[RECEIPTS].first_time(message_id, "delivered")
