"""The errors the client raises: ``ClientError`` and one subclass per status code callers act on.

Callers catch these without importing grpc: ``except NotFound``, ``except AlreadyExists``. Each
keeps the gRPC status code in ``code`` (for callers that compare codes) and the server's
explanation in ``message``. ``ERRORS`` is the one table from status code to class; codes without a
class of their own (CANCELLED, ABORTED, DATA_LOSS, ...) raise ``ClientError`` itself.
"""

from __future__ import annotations

import grpc

__all__ = [
    "ERRORS",
    "AlreadyExists",
    "ClientError",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "error_from",
]


class ClientError(Exception):
    """A call failed: ``code`` is the gRPC status code, ``message`` the server's explanation.

    >>> try:
    ...     client.get_bandit("doc-no-such-bandit")
    ... except ClientError as exc:
    ...     print(type(exc).__name__, exc.code.name, "bandit" in exc.message)
    NotFound NOT_FOUND True
    """

    def __init__(self, method: str, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{method}: {code.name}: {message}")
        self.method = method
        self.code = code
        self.message = message


class NotFound(ClientError):
    """The bandit, model, version, alias, decision or feature set does not exist."""


class InvalidArgument(ClientError):
    """The request was refused as malformed; ``message`` names the field and its value."""


class AlreadyExists(ClientError):
    """The name is taken, or the decision was already rewarded."""


class FailedPrecondition(ClientError):
    """The request is valid but the state does not allow it (e.g. Promote with no challenger)."""


class Unavailable(ClientError):
    """The server could not be reached or is not serving (after the retries, where any)."""


class PermissionDenied(ClientError):
    """The caller may not make this call."""


class Unauthenticated(ClientError):
    """The call carried no valid credentials."""


class ResourceExhausted(ClientError):
    """A limit was hit: message size, quota, or server capacity."""


class DeadlineExceeded(ClientError):
    """No answer within the call's deadline (or the server was not ready in time)."""


class Unimplemented(ClientError):
    """The server does not implement this call."""


class Internal(ClientError):
    """The server failed on its side; its log has the details."""


ERRORS: dict[grpc.StatusCode, type[ClientError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.INTERNAL: Internal,
}


def error_from(method: str, code: grpc.StatusCode, message: str) -> ClientError:
    """The error of the class ``ERRORS`` gives for ``code`` (``ClientError`` for the others).

    >>> err = error_from("GetModel", grpc.StatusCode.NOT_FOUND, "no model 'm'")
    >>> type(err).__name__, str(err)
    ('NotFound', "GetModel: NOT_FOUND: no model 'm'")
    >>> type(error_from("GetModel", grpc.StatusCode.DATA_LOSS, "")).__name__
    'ClientError'
    """
    return ERRORS.get(code, ClientError)(method, code, message)
