"""The DynamoDB audit store: one table, one sparse index, written through aiobotocore
(BatchWriteItem, the hot call, through dynamodb_batch.py).

Table (billing PAY_PER_REQUEST, created by `migrate`):

    partition key  id    S  message id
    sort key       sk    S  event key: f"{microseconds:016d}:{replica tag}", time-ordered
    kind S, at N, rep S (replica)                     every event
    cli S, to S, body S, cref S, prio S, exp N        `accepted` only (client, recipient,
                                                      body, client_ref, priority, expires_at)
    prov S, att N, pmid S, rsn S, dup BOOL            when set (provider, attempt,
                                                      provider_message_id, reason,
                                                      possible_duplicate, stored only if true)
    ttl  N  epoch seconds = at + retention_days; DynamoDB TTL deletes the item after that
    rcpt S  f"{client}|{to}"           `accepted` only: keys of the by_recipient index
    rsk  S  f"{sk}|{id}"

Global secondary index `by_recipient` (rcpt, rsk), projection KEYS_ONLY. It is sparse: only
`accepted` items carry rcpt, so it holds one entry per message. The query it serves ("what
did this client send to this number, newest first") needs only message ids, which the keys
already hold; KEYS_ONLY keeps message bodies out of a second copy and makes each accepted
write cheaper.

Numbers are written with repr(float) so they read back as the same float.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

import aiohttp
import structlog
from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
from aiobotocore.session import get_session  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from smsgw._aio import cancel_and_wait, map_in_slices
from smsgw.audit.base import RecipientPage, RecipientQuery
from smsgw.audit.dynamodb_batch import BatchWriter, RetryableBatchError, endpoint_for
from smsgw.audit.events import AuditEvent, recipient_sort_key
from smsgw.audit.sqlite import recipient_key_range
from smsgw.errors import AuditUnavailable, ConfigError
from smsgw.retry import Backoff
from smsgw.settings import AuditSettings

__all__ = ["DynamoDbStore"]

_log = structlog.get_logger("smsgw.audit")

INDEX_NAME = "by_recipient"
_BATCH_LIMIT = 25  # PutRequests per BatchWriteItem, DynamoDB's limit
# Throttling and unprocessed items are retried for this long, then the writer spools.
_RETRY_BUDGET_S = 5.0
# Delays between those retries: up to 0.1 s, 0.2 s, ... 1 s, with full jitter, so replicas
# do not retry in step.
_BACKOFF_BASE_S = 0.1
_BACKOFF_MAX_S = 1.0
_ACTIVE_TIMEOUT_S = 120.0
_RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
    }
)
# Network trouble in any of its forms: botocore's own, aiohttp's, the socket's.
_CONNECTION_ERRORS = (BotoCoreError, aiohttp.ClientError, OSError)
_CURSOR = re.compile(r"(\d{16}:[^|]+)\|(.+)", re.DOTALL)

# (attribute, AuditEvent field, DynamoDB type) for the optional fields.
_OPTIONAL: tuple[tuple[str, str, str], ...] = (
    ("cli", "client", "S"),
    ("to", "to", "S"),
    ("body", "body", "S"),
    ("cref", "client_ref", "S"),
    ("prio", "priority", "S"),
    ("exp", "expires_at", "N"),
    ("seg", "segments", "N"),
    ("enc", "encoding", "S"),
    ("prov", "provider", "S"),
    ("att", "attempt", "N"),
    ("pmid", "provider_message_id", "S"),
    ("rsn", "reason", "S"),
)
_INT_FIELDS = frozenset({"attempt", "segments"})


def encode_item(event: AuditEvent, retention_s: int) -> dict[str, dict[str, Any]]:
    """The low-level DynamoDB item of one event."""
    item: dict[str, dict[str, Any]] = {
        "id": {"S": event.message_id},
        "sk": {"S": event.key},
        "kind": {"S": event.kind},
        "at": {"N": repr(float(event.at))},
        "rep": {"S": event.replica},
        "ttl": {"N": str(int(event.at) + retention_s)},
    }
    for attribute, field, kind in _OPTIONAL:
        value = getattr(event, field)
        if value is not None:
            item[attribute] = {kind: _number(value) if kind == "N" else value}
    if event.possible_duplicate:
        item["dup"] = {"BOOL": True}
    if event.kind == "accepted" and event.client is not None and event.to is not None:
        item["rcpt"] = {"S": f"{event.client}|{event.to}"}
        item["rsk"] = {"S": recipient_sort_key(event)}
    return item


def decode_item(item: dict[str, dict[str, Any]]) -> AuditEvent:
    """The event a stored item holds (attributes it does not know are ignored)."""
    fields: dict[str, Any] = {
        "message_id": item["id"]["S"],
        "key": item["sk"]["S"],
        "kind": item["kind"]["S"],
        "at": float(item["at"]["N"]),
        "replica": item["rep"]["S"],
    }
    for attribute, field, kind in _OPTIONAL:
        if attribute in item:
            raw = item[attribute][kind]
            if kind == "N":
                raw = int(raw) if field in _INT_FIELDS else float(raw)
            fields[field] = raw
    if item.get("dup", {}).get("BOOL"):
        fields["possible_duplicate"] = True
    return AuditEvent(**fields)


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


@contextlib.contextmanager
def _unavailable(operation: str) -> Iterator[None]:
    """Any failure to talk to DynamoDB becomes AuditUnavailable (the writer spools)."""
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise AuditUnavailable(
            f"DynamoDB {operation}: {error.get('Code')}: {error.get('Message')}"
        ) from exc
    except _CONNECTION_ERRORS as exc:
        raise AuditUnavailable(f"DynamoDB {operation}: {exc!r}") from exc


def _error_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class DynamoDbStore:
    """AuditStore on one DynamoDB table; one long-lived client shared by all calls."""

    # aiobotocore ships no type hints: the client is Any.
    def __init__(
        self,
        client: Any,
        settings: AuditSettings,
        stack: contextlib.AsyncExitStack,
        batches: BatchWriter,
    ) -> None:
        self._client = client
        self._batches = batches
        self._stack = stack
        self._table = settings.table
        self._retention_s = settings.retention_days * 86400
        self._in_flight = asyncio.Semaphore(settings.max_in_flight)

    @classmethod
    async def open(cls, settings: AuditSettings) -> DynamoDbStore:
        config = AioConfig(
            connect_timeout=2,
            read_timeout=5,
            # Few attempts inside botocore: write() has its own bounded retry, and past it
            # the writer spools rather than waiting on a sick endpoint.
            retries={"mode": "standard", "max_attempts": 2},
            max_pool_connections=max(10, settings.max_in_flight + 4),
            # botocore checks every request against the API model before sending it: about
            # a quarter of the writer's CPU (bench/RESULTS.md, issue 5). Our requests come
            # from encode_item and fixed shapes the tests run against dynalite, and the
            # server still refuses a malformed one (ValidationException).
            parameter_validation=False,
        )
        options: dict[str, Any] = {"region_name": settings.region, "config": config}
        if settings.endpoint_url is not None:
            options["endpoint_url"] = settings.endpoint_url
        if settings.access_key_id is not None:
            # Otherwise nothing is passed and the standard AWS credential chain applies.
            options["aws_access_key_id"] = settings.access_key_id
            options["aws_secret_access_key"] = settings.secret_access_key
        session = get_session()
        stack = contextlib.AsyncExitStack()
        try:
            client = await stack.enter_async_context(session.create_client("dynamodb", **options))
            if settings.access_key_id is not None:
                credentials = Credentials(settings.access_key_id, settings.secret_access_key)
            else:
                credentials = await session.get_credentials()
            if credentials is None:
                raise AuditUnavailable("DynamoDB: no AWS credentials found (standard chain)")
            batches = BatchWriter(
                endpoint_for(settings.region, settings.endpoint_url),
                settings.region,
                credentials,
                _RETRYABLE_CODES,
                max_connections=settings.max_in_flight,
                connect_timeout_s=2,
                timeout_s=5,
            )
            stack.push_async_callback(batches.close)
        except BaseException:
            await stack.aclose()
            raise
        return cls(client, settings, stack, batches)

    async def close(self) -> None:
        await self._stack.aclose()

    async def migrate(self) -> None:
        with _unavailable("CreateTable"):
            try:
                await self._client.create_table(**self._table_definition())
            except ClientError as exc:
                code = _error_code(exc)
                if code == "ValidationException":
                    # The definition is fixed, so what DynamoDB refuses is the table name.
                    message = exc.response.get("Error", {}).get("Message")
                    raise ConfigError("audit.table", f"DynamoDB refused it: {message}") from exc
                if code != "ResourceInUseException":
                    raise
        table = await self._wait_active()
        self._check_schema(table)
        await self._enable_ttl()

    async def write(self, events: Sequence[AuditEvent]) -> None:
        # One BatchWriteItem must not hold the same key twice; a replayed spool may.
        unique = {(e.message_id, e.key): e for e in events}
        retention_s = self._retention_s
        requests = await map_in_slices(
            lambda event: {"PutRequest": {"Item": encode_item(event, retention_s)}},
            list(unique.values()),
        )
        chunks = [requests[i : i + _BATCH_LIMIT] for i in range(0, len(requests), _BATCH_LIMIT)]
        tasks = [asyncio.create_task(self._write_chunk(chunk)) for chunk in chunks]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            await cancel_and_wait(tasks)
            raise

    async def events(self, message_id: str) -> list[AuditEvent]:
        params: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#id = :id",
            "ExpressionAttributeNames": {"#id": "id"},
            "ExpressionAttributeValues": {":id": {"S": message_id}},
            "ConsistentRead": True,
        }
        found: list[AuditEvent] = []
        while True:
            with _unavailable("Query"):
                page = await self._client.query(**params)
            found.extend(decode_item(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return found
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def recipient_messages(self, query: RecipientQuery) -> RecipientPage:
        limit, cursor = query.limit, query.cursor
        if limit < 1:
            raise ValueError("limit must be at least 1")
        rcpt = query.rcpt
        low, high = recipient_key_range(query.since, query.until)
        low = low or "0"  # key values may not be empty; every rsk starts with a digit
        start: dict[str, dict[str, str]] | None = None
        if cursor is not None:
            match = _CURSOR.fullmatch(cursor)
            if match is None or len(cursor.encode()) > 1024:
                raise ValueError("not a cursor of this listing")
            # A start key outside the range is an error in DynamoDB: a cursor past `until`
            # simply starts at `until`, one before `since` has nothing left after it.
            if cursor < low:
                return RecipientPage([], None)
            if cursor <= high:
                start = {
                    "rcpt": {"S": rcpt},
                    "rsk": {"S": cursor},
                    "id": {"S": match[2]},
                    "sk": {"S": match[1]},
                }
        if low > high:
            return RecipientPage([], None)
        params: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": INDEX_NAME,
            "KeyConditionExpression": "#r = :r AND #s BETWEEN :lo AND :hi",
            "ExpressionAttributeNames": {"#r": "rcpt", "#s": "rsk"},
            "ExpressionAttributeValues": {
                ":r": {"S": rcpt},
                ":lo": {"S": low},
                ":hi": {"S": high},
            },
            "ScanIndexForward": False,
        }
        # One more than asked tells whether another page exists, so the last page has no
        # cursor (DynamoDB alone would hand one out whenever it stopped at Limit).
        found: list[tuple[str, str]] = []
        while True:
            params["Limit"] = limit + 1 - len(found)
            if start is not None:
                params["ExclusiveStartKey"] = start
            with _unavailable("Query"):
                page = await self._client.query(**params)
            found.extend((item["id"]["S"], item["rsk"]["S"]) for item in page.get("Items", []))
            start = page.get("LastEvaluatedKey")
            if len(found) > limit or start is None:
                break
        next_cursor = found[limit - 1][1] if len(found) > limit else None
        return RecipientPage([message_id for message_id, _ in found[:limit]], next_cursor)

    # -- internals --

    async def _write_chunk(self, requests: list[dict[str, Any]]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _RETRY_BUDGET_S
        pending = requests
        backoff = Backoff(_BACKOFF_BASE_S, _BACKOFF_MAX_S, jitter="full")
        while True:
            throttled: RetryableBatchError | None = None
            try:
                async with self._in_flight:
                    pending = await self._batches.write(self._table, pending)
            except RetryableBatchError as exc:
                throttled = exc
            else:
                if not pending:
                    return
            delay = backoff.next()
            if loop.time() + delay > deadline:
                what = "throttled" if throttled is not None else "items left unprocessed"
                raise AuditUnavailable(
                    f"DynamoDB BatchWriteItem: {what} after {backoff.failures} attempts "
                    f"({len(pending)} of {len(requests)} items not stored)"
                ) from throttled
            await asyncio.sleep(delay)

    def _table_definition(self) -> dict[str, Any]:
        return {
            "TableName": self._table,
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [
                {"AttributeName": name, "AttributeType": "S"}
                for name in ("id", "sk", "rcpt", "rsk")
            ],
            "KeySchema": [
                {"AttributeName": "id", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            "GlobalSecondaryIndexes": [
                {
                    "IndexName": INDEX_NAME,
                    "KeySchema": [
                        {"AttributeName": "rcpt", "KeyType": "HASH"},
                        {"AttributeName": "rsk", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "KEYS_ONLY"},
                }
            ],
        }

    async def _wait_active(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _ACTIVE_TIMEOUT_S
        backoff = Backoff(0.05, 2.0, jitter="none")
        while True:
            with _unavailable("DescribeTable"):
                described = await self._client.describe_table(TableName=self._table)
            table: dict[str, Any] = described["Table"]
            indexes = table.get("GlobalSecondaryIndexes", [])
            if table.get("TableStatus") == "ACTIVE" and all(
                index.get("IndexStatus", "ACTIVE") == "ACTIVE" for index in indexes
            ):
                return table
            delay = backoff.next()
            if loop.time() + delay > deadline:
                raise AuditUnavailable(
                    f"DynamoDB table {self._table} not ACTIVE after {_ACTIVE_TIMEOUT_S:.0f}s"
                )
            await asyncio.sleep(delay)

    def _check_schema(self, table: dict[str, Any]) -> None:
        """A table made by something else would fail every write: say so at start-up."""
        keys = {k["AttributeName"]: k["KeyType"] for k in table.get("KeySchema", [])}
        indexes = {i["IndexName"] for i in table.get("GlobalSecondaryIndexes", [])}
        if keys != {"id": "HASH", "sk": "RANGE"} or INDEX_NAME not in indexes:
            raise ConfigError(
                "audit.table",
                f"DynamoDB table {self._table} exists but is not an smsgw audit table "
                f"(keys id/sk and index {INDEX_NAME} expected)",
            )

    async def _enable_ttl(self) -> None:
        with _unavailable("DescribeTimeToLive"):
            described = await self._client.describe_time_to_live(TableName=self._table)
        status = described.get("TimeToLiveDescription", {}).get("TimeToLiveStatus")
        if status in ("ENABLED", "ENABLING"):
            return
        with _unavailable("UpdateTimeToLive"):
            try:
                await self._client.update_time_to_live(
                    TableName=self._table,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"},
                )
            except ClientError as exc:
                # dynalite answers UnknownOperationException; without the permission AWS
                # answers AccessDeniedException. Events are stored either way, only not
                # expired, so the gateway starts.
                error = exc.response.get("Error", {})
                _log.warning(
                    "audit_ttl_not_enabled",
                    table=self._table,
                    error_code=error.get("Code"),
                    detail=error.get("Message"),
                )
