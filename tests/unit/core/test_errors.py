import grpc
import pytest
from llmopt import errors
from llmopt.api.errors import STATUS_BY_ERROR, status_for


def test_every_domain_error_kind_has_a_status():
    kinds = {
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.LLMOptError)
    }
    assert kinds - {errors.LLMOptError} == set(STATUS_BY_ERROR)


@pytest.mark.parametrize(("exc", "code"), list(STATUS_BY_ERROR.items()))
def test_mapping(exc, code):
    assert status_for(exc("x")) is code


def test_subclass_inherits_its_parents_status():
    class Expired(errors.FailedPrecondition):
        pass

    assert status_for(Expired("x")) is grpc.StatusCode.FAILED_PRECONDITION


def test_invalid_names_field_value_and_expectation():
    assert str(errors.invalid("a.b", 7, "must be < 5")) == "a.b: 7 is invalid: must be < 5"
