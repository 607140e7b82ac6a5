"""Conversion between llmopt.v1.Audit messages and ``llmopt.audit`` values (``to_x``/``from_x``).

An unset Timestamp (``since``, ``until``) becomes ``None`` here, so the domain never sees it.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from llmopt.api.convert_registry import from_timestamp, to_timestamp
from llmopt.audit import AuditEntry
from llmopt.gen.llmopt.v1 import audit_pb2


def to_audit_entry(entry: AuditEntry) -> audit_pb2.AuditEntry:
    return audit_pb2.AuditEntry(
        principal=entry.principal,
        method=entry.method,
        target=entry.target,
        code=entry.code,
        time=to_timestamp(entry.time),
    )


def from_audit_entry(message: audit_pb2.AuditEntry, id: int = 0) -> AuditEntry:
    return AuditEntry(
        id=id,
        time=from_timestamp(message.time),
        principal=message.principal,
        method=message.method,
        target=message.target,
        code=message.code,
    )


def from_time_bound(request: audit_pb2.GetAuditLogRequest, field: str) -> float | None:
    """``since`` or ``until`` in seconds, None when unset."""
    if not request.HasField(field):
        return None
    ts: Timestamp = getattr(request, field)
    return from_timestamp(ts)
