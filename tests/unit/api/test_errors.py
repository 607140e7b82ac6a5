"""llmopt.api.errors: the one mapping from exceptions to status codes and messages."""

from __future__ import annotations

import importlib
import logging
import pkgutil

import grpc
import pytest

from llmopt import errors
from llmopt.api.errors import STATUS_BY_ERROR, status_for, status_of

# The folders setup.PACKAGE_DIRS maps into llmopt: an editable install keeps them apart, so
# walking llmopt's own path alone would not reach the registry or the kernels.
PACKAGES = ("llmopt", "llmopt.native", "llmopt.registry")


def domain_exceptions() -> set[type[errors.LLMOptError]]:
    """Every class deriving from LLMOptError in any module of the package (all imported)."""
    for top in PACKAGES:
        package = importlib.import_module(top)
        for module in pkgutil.walk_packages(package.__path__, f"{top}."):
            if module.name.endswith(".__main__") or module.name.startswith("llmopt.gen."):
                continue
            importlib.import_module(module.name)
    found: set[type[errors.LLMOptError]] = set()
    todo = [errors.LLMOptError]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith("llmopt.") and sub not in found:
                found.add(sub)
                todo.append(sub)
    return found


def test_every_domain_error_kind_has_a_status():
    kinds = {
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.LLMOptError)
    }
    assert kinds - {errors.LLMOptError} <= set(STATUS_BY_ERROR)


def test_every_domain_exception_in_the_package_maps_to_a_status_on_purpose():
    """Not only llmopt.errors: a domain exception defined anywhere (ModelRunError in
    llmopt.inference.session, ArtifactCorrupted in llmopt.registry.artifacts) reaches its code
    through the table, never through the INTERNAL fallback for what nobody mapped."""
    from llmopt.inference.session import ModelLoadError, ModelRunError
    from llmopt.registry.artifacts import ArtifactCorrupted

    found = domain_exceptions()
    assert {ModelRunError, ModelLoadError, ArtifactCorrupted} <= found  # the walk reaches them
    unmapped = sorted(
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in found
        if not any(base in STATUS_BY_ERROR for base in cls.__mro__)
    )
    assert unmapped == []


@pytest.mark.parametrize(("exc", "code"), list(STATUS_BY_ERROR.items()))
def test_mapping(exc, code):
    assert status_for(exc("x")) is code


def test_refused_credentials_and_scopes_have_their_own_codes() -> None:
    denied = errors.PermissionDenied("principal 'ci-bot' lacks scope 'admin' needed by /s/M")
    assert status_of(errors.Unauthenticated("unknown token"), "/s/M") == (
        grpc.StatusCode.UNAUTHENTICATED,
        "unknown token",
    )
    assert status_of(denied, "/s/M") == (grpc.StatusCode.PERMISSION_DENIED, str(denied))


def test_subclass_inherits_its_parents_status():
    class Expired(errors.FailedPrecondition):
        pass

    assert status_for(Expired("x")) is grpc.StatusCode.FAILED_PRECONDITION


def test_invalid_names_field_value_and_expectation():
    assert str(errors.invalid("a.b", 7, "must be < 5")) == "a.b: 7 is invalid: must be < 5"


def test_a_domain_error_keeps_its_message_and_gets_its_code() -> None:
    code, message = status_of(errors.NotFound("name: 'x' does not exist"), "/s/M")
    assert (code, message) == (grpc.StatusCode.NOT_FOUND, "name: 'x' does not exist")


def test_not_implemented_is_unimplemented() -> None:
    code, message = status_of(NotImplementedError(), "/s/M")
    assert code is grpc.StatusCode.UNIMPLEMENTED
    assert message == "/s/M is declared but not built yet"


def test_anything_else_is_internal_with_a_logged_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="llmopt.rpc"):
        code, message = status_of(RuntimeError("a bug"), "/s/M")
    assert code is grpc.StatusCode.INTERNAL
    assert "a bug" not in message and "/s/M" in message
    request_id = message.split("request id ")[1].split(")")[0]
    assert any(request_id in r.getMessage() and r.exc_info for r in caplog.records)


def test_predict_stream_answers_a_bad_message_through_the_same_mapping() -> None:
    import numpy as np

    from llmopt.api.convert import to_tensor
    from llmopt.api.inference import InferenceServicer
    from llmopt.gen.llmopt.v1 import inference_pb2

    class Failing:
        def __init__(self) -> None:
            self.errors = iter([errors.NotFound("model: 'm' does not exist"), RuntimeError("bug")])

        def predict(self, *args: object, **kwargs: object) -> object:
            raise next(self.errors)

    servicer = InferenceServicer(None, Failing())  # type: ignore[arg-type]
    tensor = to_tensor(np.zeros((1, 2), np.float32), "X")
    requests = [inference_pb2.PredictRequest(id=i, model="m", inputs=[tensor]) for i in "ab"]
    missing, bug = servicer.PredictStream(iter(requests), None)
    assert (missing.id, missing.error.code) == ("a", grpc.StatusCode.NOT_FOUND.value[0])
    assert missing.error.message == "model: 'm' does not exist"
    assert (bug.id, bug.error.code) == ("b", grpc.StatusCode.INTERNAL.value[0])
    assert "PredictStream message 'b'" in bug.error.message and "request id" in bug.error.message
    assert "bug" not in bug.error.message  # internals stay in the log
