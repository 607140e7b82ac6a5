"""The installed package (the editable install ``make`` makes): one top-level name, a version,
and nothing in the user's working directory can shadow it."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import llmopt
from tests.packaging.decoys import check_installed

DISTRIBUTION = "llm-optimizer-ml"


def test_the_distribution_puts_one_package_at_the_top() -> None:
    top_level = metadata.distribution(DISTRIBUTION).read_text("top_level.txt") or ""
    assert top_level.split() == ["llmopt"]


def test_the_version_is_the_distributions() -> None:
    assert llmopt.__version__ == metadata.version(DISTRIBUTION)


def test_a_users_server_native_and_registry_break_nothing(tmp_path: Path) -> None:
    version = check_installed(Path(sys.executable).parent, tmp_path / "work")
    assert version == llmopt.__version__
