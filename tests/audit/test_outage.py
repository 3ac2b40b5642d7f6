"""DynamoDB (dynalite) taken away for 10 s while 2000 messages flow through the real app:
afterwards every event of every message is in the table, in order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiobotocore.session import get_session

from smsgw.app_keys import AUDIT
from smsgw.audit import open_store
from smsgw.settings import AuditSettings
from testkit.services import DynaliteServer
from tests.helpers import app_client, wait_sms

LIFECYCLE = ["accepted", "queued", "sending", "sent"]
MESSAGES = 2000
OUTAGE_S = 10.0


async def count_items(settings: AuditSettings) -> int:
    """Items in the table, counted with plain aiobotocore (not through smsgw's store)."""
    async with get_session().create_client(
        "dynamodb",
        region_name=settings.region,
        endpoint_url=settings.endpoint_url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    ) as dynamodb:
        total = 0
        kwargs: dict[str, Any] = {"TableName": settings.table, "Select": "COUNT"}
        while True:
            page = await dynamodb.scan(**kwargs)
            total += page["Count"]
            if "LastEvaluatedKey" not in page:
                return total
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


@pytest.mark.timeout(120)
async def test_dynamodb_down_for_10_s_loses_no_event(
    aiohttp_client: Callable[..., Any], sms_path: Path, tmp_path: Path
) -> None:
    dynalite = DynaliteServer(tmp_path / "dynalite")
    (tmp_path / "dynalite").mkdir()
    dynalite.start()
    try:
        settings = AuditSettings(
            backend="dynamodb",
            endpoint_url=dynalite.url,
            access_key_id="test",
            secret_access_key="test",
            table="audit-outage",
            spool_dir=str(tmp_path / "spool"),
        )
        store = await open_store(settings)
        await store.migrate()
        await store.close()
        client = await app_client(
            aiohttp_client,
            sms_path,
            audit=msgspec.structs.asdict(settings),
            queue={"max_size": 5000},
        )
        writer = client.app[AUDIT]

        dynalite.stop()
        went_down = time.monotonic()
        ids: list[str] = []
        for batch in range(MESSAGES // 500):
            messages = [
                {"to": f"+1415555{n:04d}", "body": f"outage {batch}.{n}"} for n in range(500)
            ]
            response = await client.post("/v1/messages/batch", json={"messages": messages})
            assert response.status == 202
            ids += (await response.json())["ids"]
            await asyncio.sleep(1.0)
        assert len(await wait_sms(sms_path, MESSAGES, timeout=20)) == MESSAGES
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - went_down)))
        assert writer.stats.spooled > 0
        assert writer.stats.stored == 0
        dynalite.start()

        deadline = time.monotonic() + 40
        while writer.stats.replayed < writer.stats.spooled or writer.backlog:
            assert time.monotonic() < deadline, writer.stats.as_dict()
            await asyncio.sleep(0.1)
        assert writer.stats.store_failures >= 1
        assert await count_items(settings) == MESSAGES * len(LIFECYCLE)
        for message_id in ids[:: MESSAGES // 50]:  # a sample through the store's own query
            events = await writer.store.events(message_id)
            assert [e.kind for e in events] == LIFECYCLE, message_id
        await client.close()
    finally:
        dynalite.stop()
