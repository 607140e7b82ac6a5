"""The audit trail: who called which admin RPC, on what, with what outcome, and when.

``AuditLog`` keeps the entries durably (SQLite under the data dir's ``audit/`` folder);
``target_of`` names what a request is about. The server's interceptor records every
``admin``-scope RPC (``llmopt.security.scopes``) through the ``llmopt.ports.AuditSink`` Protocol.
"""

from llmopt.audit.log import MIGRATIONS, AuditEntry, AuditLog
from llmopt.audit.targets import TARGET_FIELDS, target_of

__all__ = ["MIGRATIONS", "TARGET_FIELDS", "AuditEntry", "AuditLog", "target_of"]
