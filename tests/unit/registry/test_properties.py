"""Property-based checks of names, tags and metadata: valid input round-trips, invalid input is
refused with InvalidArgument naming the field, and nothing else escapes."""

from __future__ import annotations

import re
import string
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmopt import errors
from llmopt.registry import ModelTask, Registry, VersionMetadata, validation
from tests.unit.registry.onnx_models import linear_model

MODEL_NAMES = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", fullmatch=True)
ALIASES = st.from_regex(r"[a-z][a-z0-9_-]{0,63}", fullmatch=True).filter(lambda a: a != "latest")
KEYS = st.text(
    st.characters(codec="utf-8", categories=["L", "N", "P", "S"], include_characters=" "),
    min_size=1,
    max_size=40,
)
TAGS = st.dictionaries(
    KEYS, st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=50), max_size=8
)
METRICS = st.dictionaries(KEYS, st.floats(allow_nan=False, allow_infinity=False), max_size=8)
DATA = linear_model()

settings.register_profile(
    "registry",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def reg() -> Iterator[Registry]:
    with tempfile.TemporaryDirectory() as root:
        r = Registry(Path(root))
        yield r
        r.close()


@settings(max_examples=100)
@given(MODEL_NAMES)
def test_valid_model_names_are_accepted(name: str) -> None:
    assert validation.model_name(name) == name


@settings(max_examples=100)
@given(st.text(max_size=140))
def test_model_name_check_matches_the_pattern(name: str) -> None:
    ok = re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", name, flags=re.ASCII) is not None
    if ok:
        assert validation.model_name(name) == name
    else:
        with pytest.raises(errors.InvalidArgument, match=r"^model: "):
            validation.model_name(name)


@settings(max_examples=100)
@given(st.text(alphabet=string.ascii_letters + string.digits + "_-.", max_size=70))
def test_alias_check_matches_the_pattern(alias: str) -> None:
    ok = re.fullmatch(r"[a-z][a-z0-9_-]{0,63}", alias) is not None and alias != "latest"
    if ok:
        assert validation.alias_name(alias) == alias
    else:
        with pytest.raises(errors.InvalidArgument, match=r"^alias: "):
            validation.alias_name(alias)


@settings(parent=settings.get_profile("registry"))
@given(
    name=MODEL_NAMES,
    tags=TAGS,
    description=st.text(max_size=200).filter(lambda s: "\x00" not in s),
    task=st.sampled_from(list(ModelTask)),
)
def test_model_metadata_round_trips(
    reg: Registry, name: str, tags: dict[str, str], description: str, task: ModelTask
) -> None:
    try:
        made = reg.create_model(name, description, task, tags)
    except errors.AlreadyExists:
        return
    assert reg.get_model(name) == made
    assert (made.tags, made.description, made.task) == (tags, description, task)


@settings(parent=settings.get_profile("registry"), max_examples=25)
@given(
    tags=TAGS,
    metrics=METRICS,
    semver=st.from_regex(r"(0|[1-9][0-9]{0,3})\.[0-9]\.[0-9]", fullmatch=True),
)
def test_version_metadata_round_trips(
    reg: Registry, tags: dict[str, str], metrics: dict[str, float], semver: str
) -> None:
    if "versions" not in {m.name for m in reg.list_models()}:
        reg.create_model("versions")
    made = reg.upload_version(
        "versions", DATA, VersionMetadata(semver=semver, tags=tags, metrics=metrics)
    )
    got = reg.get_version("versions", made.version)
    assert (got.tags, got.metrics, got.semver) == (tags, metrics, semver)
    assert got == made


@settings(parent=settings.get_profile("registry"))
@given(st.dictionaries(st.text(max_size=200), st.text(max_size=5000), max_size=70))
def test_any_tags_are_stored_or_refused_by_field(reg: Registry, tags: dict[str, str]) -> None:
    try:
        clean = validation.tags(tags)
    except errors.InvalidArgument as exc:
        assert str(exc).startswith("tags")
    else:
        assert clean == tags


@settings(parent=settings.get_profile("registry"))
@given(st.text(max_size=100))
def test_page_tokens_never_crash(reg: Registry, token: str) -> None:
    try:
        reg.list_models_page(page_token=token)
    except errors.InvalidArgument as exc:
        assert str(exc).startswith("page.page_token")


@settings(parent=settings.get_profile("registry"))
@given(st.dictionaries(KEYS, st.one_of(st.floats(), st.integers(), st.booleans()), max_size=4))
def test_metrics_must_be_finite_numbers(reg: Registry, metrics: dict[str, object]) -> None:
    try:
        clean = validation.metrics(metrics)  # type: ignore[arg-type]
    except errors.InvalidArgument as exc:
        assert str(exc).startswith("metrics")
    else:
        assert all(isinstance(v, float) for v in clean.values())
