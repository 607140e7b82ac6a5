"""llmopt.api.convert_audit: entries to messages and back; unset time bounds are None."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from llmopt.api import convert_audit as conv
from llmopt.audit import AuditEntry
from llmopt.gen.llmopt.v1 import audit_pb2


def test_an_entry_converts_both_ways() -> None:
    entry = AuditEntry(7, 1_700_000_000.25, "ci-bot", "/llmopt.v1.Registry/Promote", "qp", "OK")
    message = conv.to_audit_entry(entry)
    assert (message.principal, message.method, message.target, message.code) == (
        "ci-bot",
        "/llmopt.v1.Registry/Promote",
        "qp",
        "OK",
    )
    assert (message.time.seconds, message.time.nanos) == (1_700_000_000, 250_000_000)
    assert conv.from_audit_entry(message, id=7) == entry


def test_time_bounds() -> None:
    request = audit_pb2.GetAuditLogRequest(since=Timestamp(seconds=10, nanos=500_000_000))
    assert conv.from_time_bound(request, "since") == 10.5
    assert conv.from_time_bound(request, "until") is None
    epoch = audit_pb2.GetAuditLogRequest(until=Timestamp(seconds=0))
    assert conv.from_time_bound(epoch, "until") == 0.0
