"""DynamoDbStore against a real dynalite: table design, writes, queries, outages."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
import structlog.testing
from aiobotocore.session import get_session
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

import smsgw.audit.dynamodb as dynamodb_module
from smsgw.audit.base import RecipientQuery
from smsgw.audit.dynamodb import DynamoDbStore, decode_item, encode_item
from smsgw.audit.dynamodb_batch import BatchWriter, RetryableBatchError
from smsgw.audit.events import AuditEvent
from smsgw.errors import AuditUnavailable, ConfigError
from smsgw.settings import AuditSettings
from testkit.services import DynaliteServer, free_port

T0 = 1_700_000_000.0


def key_at(at: float, tag: str = "a1b2c3") -> str:
    return f"{int(at * 1_000_000):016d}:{tag}"  # as AuditWriter makes them


def accepted(
    message_id: str, at: float, *, client: str = "acme", to: str = "+15550100"
) -> AuditEvent:
    return AuditEvent(
        message_id=message_id,
        key=key_at(at),
        kind="accepted",
        at=at,
        replica="r1",
        client=client,
        to=to,
        body="Your code is ******",
        priority="high",
        expires_at=at + 300.0,
    )


def later(message_id: str, at: float, kind: Any = "sent", **details: Any) -> AuditEvent:
    return AuditEvent(
        message_id=message_id, key=key_at(at), kind=kind, at=at, replica="r1", **details
    )


def life_of(message_id: str, at: float) -> list[AuditEvent]:
    return [
        accepted(message_id, at),
        later(message_id, at + 0.000001, "queued"),
        later(message_id, at + 0.25, "sending", provider="twilio", attempt=1),
        later(message_id, at + 0.5, "sent", provider="twilio", provider_message_id="SM1"),
    ]


@pytest.fixture
async def store(dynamodb_settings: AuditSettings) -> AsyncIterator[DynamoDbStore]:
    opened = await DynamoDbStore.open(dynamodb_settings)
    try:
        await opened.migrate()
        yield opened
    finally:
        await opened.close()


@contextlib.asynccontextmanager
async def raw_client(settings: AuditSettings) -> AsyncIterator[Any]:
    """A plain aiobotocore client: looks at the table as any other tool would."""
    async with get_session().create_client(
        "dynamodb",
        region_name=settings.region,
        endpoint_url=settings.endpoint_url,
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
    ) as client:
        yield client


async def test_migrate_twice_creates_the_documented_table(
    dynamodb_settings: AuditSettings,
) -> None:
    store = await DynamoDbStore.open(dynamodb_settings)
    try:
        await store.migrate()
        await store.migrate()
    finally:
        await store.close()

    async with raw_client(dynamodb_settings) as client:
        table = (await client.describe_table(TableName=dynamodb_settings.table))["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [
        {"AttributeName": "id", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    [index] = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "by_recipient"
    assert index["KeySchema"] == [
        {"AttributeName": "rcpt", "KeyType": "HASH"},
        {"AttributeName": "rsk", "KeyType": "RANGE"},
    ]
    assert index["Projection"] == {"ProjectionType": "KEYS_ONLY"}


async def test_migrate_without_ttl_support_warns_and_succeeds(
    dynamodb_settings: AuditSettings,
) -> None:
    store = await DynamoDbStore.open(dynamodb_settings)
    try:
        with structlog.testing.capture_logs() as logs:
            await store.migrate()  # dynalite has no UpdateTimeToLive
        await store.write(life_of("m1", T0))
        assert len(await store.events("m1")) == 4
    finally:
        await store.close()
    [warning] = [log for log in logs if log["event"] == "audit_ttl_not_enabled"]
    assert warning["log_level"] == "warning"
    assert warning["error_code"] == "UnknownOperationException"
    assert warning["table"] == dynamodb_settings.table


async def test_migrate_refuses_a_foreign_table(dynamodb_settings: AuditSettings) -> None:
    async with raw_client(dynamodb_settings) as client:
        await client.create_table(
            TableName=dynamodb_settings.table,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        )
    store = await DynamoDbStore.open(dynamodb_settings)
    try:
        with pytest.raises(ConfigError, match="not an smsgw audit table"):
            await store.migrate()
    finally:
        await store.close()


async def test_events_round_trip_in_key_order(store: DynamoDbStore) -> None:
    events = [
        *life_of("m1", T0 + 0.123456),
        later("m1", T0 + 1.1, "retry", reason="timeout", possible_duplicate=True, attempt=2),
        later("m1", T0 + 2.0000001, "delivered", provider="twilio", client_ref="ref-ü"),
        *life_of("m2", 0.1 + 0.2),  # a float with no short decimal form
    ]
    await store.write(list(reversed(events)))

    m1 = sorted((e for e in events if e.message_id == "m1"), key=lambda e: e.key)
    assert await store.events("m1") == m1
    assert await store.events("m2") == life_of("m2", 0.1 + 0.2)
    assert await store.events("unknown") == []


def test_item_codec_round_trips_every_field() -> None:
    event = AuditEvent(
        message_id="m|1",
        key=key_at(T0 + 1e-6),
        kind="accepted",
        at=T0 + 1e-6,
        replica="replica-1",
        client="acme",
        to="+15550100",
        body="héllo",
        client_ref="r",
        priority="low",
        expires_at=1e-7,
        provider="p",
        attempt=3,
        provider_message_id="x",
        reason="why",
        possible_duplicate=True,
    )
    assert decode_item(encode_item(event, 86400)) == event
    plain = later("m", 12.5)
    assert decode_item(encode_item(plain, 1)) == plain
    assert set(encode_item(plain, 1)) == {"id", "sk", "kind", "at", "rep", "ttl"}


async def test_writing_the_same_events_twice_stores_them_once(store: DynamoDbStore) -> None:
    events = life_of("m1", T0)
    await store.write(events)
    await store.write(events)
    assert await store.events("m1") == events


async def test_duplicates_within_one_write_are_fine(store: DynamoDbStore) -> None:
    events = [e for i in range(10) for e in life_of(f"m{i}", T0 + i)]  # 40: two chunks
    await store.write(events + events[:30] + events[5:7])
    for i in range(10):
        assert await store.events(f"m{i}") == life_of(f"m{i}", T0 + i)


@pytest.mark.parametrize(("max_in_flight", "messages"), [(8, 7), (2, 16), (2, 53)])
async def test_large_writes_arrive_whole(
    dynamodb_settings: AuditSettings, max_in_flight: int, messages: int
) -> None:
    # 28 events: more than one batch; 64 and 212: more than max_in_flight batches at once.
    settings = msgspec.structs.replace(dynamodb_settings, max_in_flight=max_in_flight)
    store = await DynamoDbStore.open(settings)
    try:
        await store.migrate()
        events = [e for i in range(messages) for e in life_of(f"m{i:03d}", T0 + i)]
        await store.write(events)
        for i in range(messages):
            assert await store.events(f"m{i:03d}") == life_of(f"m{i:03d}", T0 + i)
    finally:
        await store.close()


async def test_recipient_messages_page_newest_first(store: DynamoDbStore) -> None:
    events = [e for i in range(10) for e in life_of(f"m{i}", T0 + i)]
    # Same number, other client; same client, other number: never listed below.
    events += [accepted(f"other{i}", T0 + i + 0.5, client="globex") for i in range(10)]
    events += [accepted(f"elsewhere{i}", T0 + i, to="+15550199") for i in range(3)]
    await store.write(events)

    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = await store.recipient_messages(
            RecipientQuery(client="acme", to="+15550100", limit=3, cursor=cursor)
        )
        pages.append(page.message_ids)
        cursor = page.cursor
        if cursor is None:
            break
    assert pages == [["m9", "m8", "m7"], ["m6", "m5", "m4"], ["m3", "m2", "m1"], ["m0"]]

    # A listing that ends exactly at a page boundary hands out no cursor for an empty page.
    first = await store.recipient_messages(
        RecipientQuery(client="acme", to="+15550100", since=T0 + 4, limit=3)
    )
    second = await store.recipient_messages(
        RecipientQuery(client="acme", to="+15550100", since=T0 + 4, limit=3, cursor=first.cursor)
    )
    assert (first.message_ids, second.message_ids) == (["m9", "m8", "m7"], ["m6", "m5", "m4"])
    assert second.cursor is None

    other = await store.recipient_messages(
        RecipientQuery(client="globex", to="+15550100", limit=100)
    )
    assert other.message_ids == [f"other{i}" for i in reversed(range(10))]
    assert other.cursor is None


async def test_recipient_messages_respect_since_and_until(store: DynamoDbStore) -> None:
    await store.write([accepted(f"m{i}", T0 + i) for i in range(10)])

    async def listing(**bounds: Any) -> list[str]:
        page = await store.recipient_messages(
            RecipientQuery(client="acme", to="+15550100", limit=100, **bounds)
        )
        return page.message_ids

    # Both bounds are inclusive, to the microsecond.
    assert await listing(since=T0 + 2, until=T0 + 5) == ["m5", "m4", "m3", "m2"]
    assert await listing(since=T0 + 2.000001, until=T0 + 4.999999) == ["m4", "m3"]
    assert await listing(since=T0 + 8, until=None) == ["m9", "m8"]
    assert await listing(since=None, until=T0 + 1) == ["m1", "m0"]
    assert await listing(since=T0 + 6, until=T0 + 3) == []
    assert await listing(since=None, until=T0 - 1) == []

    # A cursor keeps working when the bounds move: it only ever continues after itself.
    page = await store.recipient_messages(RecipientQuery(client="acme", to="+15550100", limit=2))
    assert page.message_ids == ["m9", "m8"]
    narrower = await store.recipient_messages(
        RecipientQuery(
            client="acme", to="+15550100", since=T0 + 6, until=T0 + 9, limit=5, cursor=page.cursor
        )
    )
    assert narrower.message_ids == ["m7", "m6"]
    past_since = await store.recipient_messages(
        RecipientQuery(client="acme", to="+15550100", since=T0 + 9, limit=5, cursor=page.cursor)
    )
    assert past_since.message_ids == []
    before_until = await store.recipient_messages(
        RecipientQuery(client="acme", to="+15550100", until=T0 + 3, limit=5, cursor=page.cursor)
    )
    assert before_until.message_ids == ["m3", "m2", "m1", "m0"]


async def test_cursor_cannot_reach_another_clients_messages(store: DynamoDbStore) -> None:
    await store.write([accepted("mine", T0), accepted("theirs", T0 - 1, client="globex")])
    page = await store.recipient_messages(RecipientQuery(client="globex", to="+15550100", limit=1))
    assert page.message_ids == ["theirs"]
    # A cursor made for "acme" still lists only acme's messages.
    forged = f"{key_at(T0 + 1)}|x"
    mine = await store.recipient_messages(
        RecipientQuery(client="acme", to="+15550100", limit=5, cursor=forged)
    )
    assert mine.message_ids == ["mine"]


@pytest.mark.parametrize(
    "cursor",
    ["", "garbage", "0001700000000000000:ab", "170000:ab|m1", "|m1", "0001700000000000000:ab|"],
)
async def test_malformed_cursor_is_a_value_error(store: DynamoDbStore, cursor: str) -> None:
    with pytest.raises(ValueError, match="cursor"):
        await store.recipient_messages(
            RecipientQuery(client="acme", to="+15550100", limit=5, cursor=cursor)
        )


async def test_items_carry_the_documented_attributes(
    store: DynamoDbStore, dynamodb_settings: AuditSettings
) -> None:
    first = accepted("m1", T0 + 0.5)
    await store.write([first, later("m1", T0 + 1, "sent", provider="twilio", attempt=1)])

    async with raw_client(dynamodb_settings) as client:
        items = (
            await client.query(
                TableName=dynamodb_settings.table,
                KeyConditionExpression="#id = :id",
                ExpressionAttributeNames={"#id": "id"},
                ExpressionAttributeValues={":id": {"S": "m1"}},
            )
        )["Items"]
        by_recipient = (
            await client.query(
                TableName=dynamodb_settings.table,
                IndexName="by_recipient",
                KeyConditionExpression="rcpt = :r",
                ExpressionAttributeValues={":r": {"S": "acme|+15550100"}},
            )
        )["Items"]

    retention_s = dynamodb_settings.retention_days * 86400
    accepted_item, sent_item = items
    assert accepted_item == {
        "id": {"S": "m1"},
        "sk": {"S": first.key},
        "kind": {"S": "accepted"},
        "at": {"N": "1700000000.5"},
        "rep": {"S": "r1"},
        "cli": {"S": "acme"},
        "to": {"S": "+15550100"},
        "body": {"S": "Your code is ******"},
        "prio": {"S": "high"},
        "exp": {"N": "1700000300.5"},
        "ttl": {"N": str(int(T0) + retention_s)},
        "rcpt": {"S": "acme|+15550100"},
        "rsk": {"S": f"{first.key}|m1"},
    }
    assert sent_item["prov"] == {"S": "twilio"}
    assert sent_item["att"] == {"N": "1"}
    assert sent_item["ttl"] == {"N": str(int(T0) + 1 + retention_s)}
    assert "rcpt" not in sent_item
    assert "rsk" not in sent_item
    # The sparse index holds the accepted event only, and only its keys.
    assert by_recipient == [
        {k: accepted_item[k] for k in ("id", "sk", "rcpt", "rsk")},
    ]


async def test_write_to_a_stopped_server_is_unavailable_then_recovers(
    tmp_path: Path, dynamodb_settings: AuditSettings
) -> None:
    server = DynaliteServer(tmp_path)
    server.start()
    settings = msgspec.structs.replace(dynamodb_settings, endpoint_url=server.url)
    store = await DynamoDbStore.open(settings)
    try:
        await store.migrate()
        await store.write(life_of("before", T0))

        server.stop()
        started = time.monotonic()
        with pytest.raises(AuditUnavailable) as info:
            await store.write(life_of("during", T0 + 1))
        assert time.monotonic() - started < 10
        assert info.value.__cause__ is not None
        with pytest.raises(AuditUnavailable):
            await store.events("before")

        server.start()  # same port, same data
        await store.write(life_of("during", T0 + 1))
        assert await store.events("before") == life_of("before", T0)
        assert await store.events("during") == life_of("during", T0 + 1)
    finally:
        await store.close()
        server.stop()


async def test_write_to_a_closed_port_is_unavailable(dynamodb_settings: AuditSettings) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    store = await DynamoDbStore.open(
        msgspec.structs.replace(dynamodb_settings, endpoint_url=closed)
    )
    try:
        started = time.monotonic()
        with pytest.raises(AuditUnavailable):
            await store.write(life_of("m1", T0))
        with pytest.raises(AuditUnavailable):
            await store.migrate()
        assert time.monotonic() - started < 20
    finally:
        await store.close()


class ScriptedDynamo:
    """A DynamoDB endpoint over real HTTP answering BatchWriteItem from a script: "half"
    (half the items left unprocessed), "throttle" (400 with the throttling error type), "bad"
    (400 ValidationException), then success; each call can take `delay_s`."""

    def __init__(self, table: str, script: list[str], delay_s: float = 0.0) -> None:
        self.table = table
        self.script = script
        self.delay_s = delay_s
        self.calls: list[int] = []
        self.stored: list[dict[str, Any]] = []
        self.authorizations: list[str] = []
        self.in_flight = self.most_in_flight = 0

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        assert request.headers["X-Amz-Target"] == "DynamoDB_20120810.BatchWriteItem"
        authorization = request.headers["Authorization"]
        self.authorizations.append(authorization)
        body = await request.read()
        if authorization.rsplit("Signature=", 1)[-1] != _expected_signature(request, body):
            error = {"__type": "com.amazon.coral.service#InvalidSignatureException"}
            return web.json_response(error, status=400)
        requests = orjson.loads(body)["RequestItems"][self.table]
        self.calls.append(len(requests))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        step = self.script.pop(0) if self.script else "ok"
        if step in ("throttle", "bad"):
            kind = (
                "ProvisionedThroughputExceededException"
                if step == "throttle"
                else ("ValidationException")
            )
            error = {"__type": f"com.amazonaws.dynamodb.v20120810#{kind}", "message": step}
            return web.json_response(error, status=400, content_type="application/x-amz-json-1.0")
        keep = len(requests) // 2 if step == "half" else len(requests)
        self.stored += requests[:keep]
        unprocessed = {self.table: requests[keep:]} if keep < len(requests) else {}
        return web.json_response(
            {"UnprocessedItems": unprocessed}, content_type="application/x-amz-json-1.0"
        )


def _expected_signature(request: web.Request, body: bytes) -> str:
    """The SigV4 signature AWS would expect of this request, recomputed from what arrived
    (the Host header included), with the test's secret."""
    signed = request.headers["Authorization"].split("SignedHeaders=", 1)[1].split(",", 1)[0]
    headers = {name: request.headers[name] for name in signed.split(";")}
    again = AWSRequest(method="POST", url=str(request.url), data=body, headers=headers)
    again.context["timestamp"] = request.headers["X-Amz-Date"]
    signer = SigV4Auth(Credentials("AKIDTEST", "secret-test"), "dynamodb", "us-east-1")
    canonical = signer.canonical_request(again)
    signature: str = signer.signature(signer.string_to_sign(again, canonical), again)
    return signature


@contextlib.asynccontextmanager
async def scripted_store(
    aiohttp_server: Any, fake: ScriptedDynamo, settings: AuditSettings
) -> AsyncIterator[DynamoDbStore]:
    server = await aiohttp_server(fake.make_app())
    batches = BatchWriter(
        str(server.make_url("")),
        "us-east-1",
        Credentials("AKIDTEST", "secret-test"),
        dynamodb_module._RETRYABLE_CODES,
        max_connections=settings.max_in_flight,
        connect_timeout_s=2,
        timeout_s=5,
    )
    stack = contextlib.AsyncExitStack()
    stack.push_async_callback(batches.close)
    store = DynamoDbStore(None, settings, stack, batches)
    try:
        yield store
    finally:
        await store.close()


async def test_unprocessed_items_and_throttling_are_retried(aiohttp_server: Any) -> None:
    settings = AuditSettings(backend="dynamodb", table="audit")
    fake = ScriptedDynamo("audit", ["half", "throttle", "half"])
    events = life_of("m1", T0)
    async with scripted_store(aiohttp_server, fake, settings) as store:
        await store.write(events)
    assert fake.calls == [4, 2, 2, 1]
    assert sorted(item["PutRequest"]["Item"]["sk"]["S"] for item in fake.stored) == [
        e.key for e in events
    ]
    # Signed (SigV4) with the configured key for DynamoDB in the region.
    assert all(
        a.startswith("AWS4-HMAC-SHA256 Credential=AKIDTEST/") and "/us-east-1/dynamodb/" in a
        for a in fake.authorizations
    )


async def test_endless_throttling_is_unavailable_within_the_budget(
    monkeypatch: pytest.MonkeyPatch, aiohttp_server: Any
) -> None:
    monkeypatch.setattr(dynamodb_module, "_RETRY_BUDGET_S", 0.3)
    settings = AuditSettings(backend="dynamodb", table="audit")
    fake = ScriptedDynamo("audit", ["throttle"] * 1000)
    async with scripted_store(aiohttp_server, fake, settings) as store:
        started = asyncio.get_running_loop().time()
        with pytest.raises(AuditUnavailable, match="throttled") as info:
            await store.write(life_of("m1", T0))
    assert asyncio.get_running_loop().time() - started < 1.0
    assert isinstance(info.value.__cause__, RetryableBatchError)
    assert len(fake.calls) > 1


async def test_an_error_that_is_not_throttling_is_unavailable_at_once(
    aiohttp_server: Any,
) -> None:
    settings = AuditSettings(backend="dynamodb", table="audit")
    fake = ScriptedDynamo("audit", ["bad"])
    async with scripted_store(aiohttp_server, fake, settings) as store:
        with pytest.raises(AuditUnavailable, match="ValidationException"):
            await store.write(life_of("m1", T0))
    assert len(fake.calls) == 1


async def test_batches_of_25_and_at_most_max_in_flight_at_once(aiohttp_server: Any) -> None:
    settings = AuditSettings(backend="dynamodb", table="audit", max_in_flight=3)
    fake = ScriptedDynamo("audit", [], delay_s=0.01)
    events = [e for i in range(60) for e in life_of(f"m{i}", T0 + i)]  # 240 events
    async with scripted_store(aiohttp_server, fake, settings) as store:
        await store.write(events)
    assert sum(fake.calls) == 240
    assert max(fake.calls) == 25
    assert fake.most_in_flight == 3
