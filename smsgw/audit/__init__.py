"""Audit trail: every message's events, stored in SQLite (embedded) or DynamoDB."""

from smsgw.audit.base import AuditRecorder, AuditStore, RecipientPage, RecipientQuery
from smsgw.audit.events import FINAL_STATUSES, AuditEvent, EventKind, MessageSummary, summarize
from smsgw.audit.factory import open_store
from smsgw.audit.spool import Spool
from smsgw.audit.writer import AuditStats, AuditWriter, default_replica_name

__all__ = [
    "FINAL_STATUSES",
    "AuditEvent",
    "AuditRecorder",
    "AuditStats",
    "AuditStore",
    "AuditWriter",
    "EventKind",
    "MessageSummary",
    "RecipientPage",
    "RecipientQuery",
    "Spool",
    "default_replica_name",
    "open_store",
    "summarize",
]
