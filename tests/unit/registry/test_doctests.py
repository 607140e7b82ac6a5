"""The runnable examples in the registry's docstrings."""

from __future__ import annotations

import doctest

import pytest

import llmopt.registry.export
import llmopt.registry.model_registry


@pytest.mark.parametrize(
    "module", [llmopt.registry.model_registry, llmopt.registry.export], ids=lambda m: m.__name__
)
def test_docstring_examples(module: object) -> None:
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert tried > 0 and failures == 0
