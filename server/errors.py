"""Domain exceptions. They know nothing of transports.

Domain code (bandits, features, inference, the registry) raises these; ``llmopt.api.errors`` is
the one place that turns them into gRPC status codes. Messages name the field and the value at
fault, because they reach the caller verbatim.
"""

from __future__ import annotations


class LLMOptError(Exception):
    """Base of every error the server reports to a caller on purpose."""


class InvalidArgument(LLMOptError):
    """The request itself is wrong; retrying it unchanged cannot succeed."""


class NotFound(LLMOptError):
    """A named thing (model, version, bandit, decision, feature set) does not exist."""


class AlreadyExists(LLMOptError):
    """Creating something that exists, or recording something twice."""


class FailedPrecondition(LLMOptError):
    """The system is not in a state that allows the operation (e.g. deleting an aliased version)."""


class ResourceExhausted(LLMOptError):
    """A bounded resource (queue, memory budget, loaded models) is full."""


class Unavailable(LLMOptError):
    """Transient: the server is starting, stopping or overloaded; retry with backoff."""


class DeadlineExceeded(LLMOptError):
    """The operation did not finish in the time it was given."""


class DataLoss(LLMOptError):
    """Stored data is missing or corrupt (e.g. an artifact whose bytes fail their hash)."""


class Unauthenticated(LLMOptError):
    """The caller presented no credential, or one that is unknown, expired or not for us.

    The message says which, and never echoes the credential itself.
    """


class PermissionDenied(LLMOptError):
    """An authenticated caller lacks the scope the RPC needs (the message names both)."""


class NotImplementedYet(LLMOptError):
    """The RPC is declared in the contract but not built yet."""


MAX_SHOWN = 200
"""Characters of a field name or a value that a message shows: it reaches the caller in a status,
whose size gRPC bounds (an answer too long to deliver would hide the error)."""


def _cut(text: str) -> str:
    return text if len(text) <= MAX_SHOWN else f"{text[:MAX_SHOWN]}... ({len(text)} characters)"


def invalid(field: str, value: object, expected: str) -> InvalidArgument:
    """An InvalidArgument whose message names the field, the value and what was expected."""
    return InvalidArgument(f"{_cut(field)}: {_cut(repr(value))} is invalid: {expected}")
