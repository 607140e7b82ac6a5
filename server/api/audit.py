"""llmopt.v1.Audit servicer: converts the request, queries ``audit.AuditLog``, converts back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmopt.api import convert_audit as conv
from llmopt.api.binding import ServiceBinding, service_name
from llmopt.audit import AuditLog
from llmopt.gen.llmopt.v1 import audit_pb2, audit_pb2_grpc

if TYPE_CHECKING:
    from llmopt.composition import Services


class AuditServicer(audit_pb2_grpc.AuditServicer):
    def __init__(self, log: AuditLog) -> None:
        self._log = log

    def GetAuditLog(self, request: audit_pb2.GetAuditLogRequest, context: Any) -> Any:
        entries, next_token = self._log.query(
            principal=request.principal,
            method=request.method,
            target=request.target,
            since=conv.from_time_bound(request, "since"),
            until=conv.from_time_bound(request, "until"),
            page_size=request.page.page_size,
            page_token=request.page.page_token,
        )
        return audit_pb2.GetAuditLogResponse(
            entries=[conv.to_audit_entry(e) for e in entries], next_page_token=next_token
        )


def bind(services: Services) -> ServiceBinding:
    return ServiceBinding(
        service_name(audit_pb2, "Audit"),
        audit_pb2_grpc.add_AuditServicer_to_server,
        AuditServicer(services.audit),
    )
