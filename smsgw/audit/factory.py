"""Build the audit store the settings name."""

from __future__ import annotations

from smsgw.audit.base import AuditStore
from smsgw.audit.sqlite import SqliteStore
from smsgw.settings import AuditSettings

__all__ = ["open_store"]


async def open_store(settings: AuditSettings) -> AuditStore:
    if settings.backend == "dynamodb":
        # Imported here: aiobotocore takes a while to import, and the embedded default
        # (SQLite) should start without paying for it.
        from smsgw.audit.dynamodb import DynamoDbStore

        return await DynamoDbStore.open(settings)
    return SqliteStore(settings.path, settings.retention_days)
