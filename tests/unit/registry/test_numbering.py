"""Finding a version by its bytes' sha256, and uploading under a chosen version number."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmopt import errors
from llmopt.registry import Registry
from tests.unit.registry.onnx_models import linear_model


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Registry]:
    r = Registry(tmp_path / "registry")
    r.create_model("m")
    yield r
    r.close()


def test_find_version_by_sha256(reg: Registry) -> None:
    a, b = linear_model(seed=1), linear_model(seed=2)
    reg.upload_version("m", a)
    second = reg.upload_version("m", b)
    reg.upload_version("m", a)  # the same bytes again: version 3
    found = reg.find_version("m", hashlib.sha256(b).hexdigest())
    assert found is not None and found.version == second.version == 2
    first = reg.find_version("m", hashlib.sha256(a).hexdigest().upper())
    assert first is not None and first.version == 1  # the lowest of the two
    assert reg.find_version("m", hashlib.sha256(b"other").hexdigest()) is None
    with pytest.raises(errors.NotFound):
        reg.find_version("absent", hashlib.sha256(a).hexdigest())


def test_upload_under_a_chosen_number(reg: Registry) -> None:
    assert reg.upload_version("m", linear_model(seed=1), number=3).version == 3
    assert reg.get_model("m").latest_version == 3
    assert reg.upload_version("m", linear_model(seed=2)).version == 4  # next after 3
    for taken in (4, 2):
        with pytest.raises(errors.FailedPrecondition, match="up to 4"):
            reg.upload_version("m", linear_model(seed=3), number=taken)
    with pytest.raises(errors.InvalidArgument, match="number"):
        reg.upload_version("m", linear_model(seed=3), number=0)
    assert [v.version for v in reg.list_versions("m").items] == [4, 3]
