"""The one mapping from exceptions to gRPC status codes and messages.

``status_for`` is the table of domain errors; ``status_of`` turns any exception into the
(code, message) a caller sees. The interceptor aborts RPCs with it, and PredictStream answers a
bad message with it, so both say the same thing for the same failure.
"""

from __future__ import annotations

import logging
import uuid

import grpc

from llmopt import errors
from llmopt.inference.session import ModelRunError

log = logging.getLogger("llmopt.rpc")

STATUS_BY_ERROR: dict[type[errors.LLMOptError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.DataLoss: grpc.StatusCode.DATA_LOSS,
    errors.NotImplementedYet: grpc.StatusCode.UNIMPLEMENTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    # onnxruntime failed on inputs that passed every check: the model's fault, not the caller's.
    ModelRunError: grpc.StatusCode.INTERNAL,
}


MAX_DETAILS = 2000
"""Characters of a status message: gRPC carries it in trailing metadata, which a client refuses
past 16 KiB (it would see RESOURCE_EXHAUSTED from its own channel instead of the error)."""


def bounded(message: str) -> str:
    """``message`` cut in the middle to ``MAX_DETAILS`` characters, keeping the field it names
    at the start and what was expected at the end."""
    if len(message) <= MAX_DETAILS:
        return message
    half = MAX_DETAILS // 2
    return f"{message[:half]} ...({len(message) - MAX_DETAILS} characters)... {message[-half:]}"


def status_for(exc: errors.LLMOptError) -> grpc.StatusCode:
    """The status code of a domain error (its nearest mapped base class)."""
    for cls in type(exc).__mro__:
        code = STATUS_BY_ERROR.get(cls)  # type: ignore[arg-type]
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def status_of(exc: BaseException, method: str) -> tuple[grpc.StatusCode, str]:
    """The status code and message for an exception raised while serving ``method``.

    A domain error keeps its message, with the code of the table; a ``NotImplementedError`` (the
    generated base servicer's) is UNIMPLEMENTED; anything else is INTERNAL with a request id, and
    the traceback is logged under that id so the caller's report can be found, while the
    internals stay out of the answer.
    """
    if isinstance(exc, errors.LLMOptError):
        return status_for(exc), bounded(str(exc))
    if isinstance(exc, NotImplementedError):
        return grpc.StatusCode.UNIMPLEMENTED, f"{method} is declared but not built yet"
    request_id = uuid.uuid4().hex
    log.error("unexpected error in %s, request id %s", method, request_id, exc_info=exc)
    return (
        grpc.StatusCode.INTERNAL,
        f"internal error in {method} (request id {request_id}); the server logged the details",
    )
