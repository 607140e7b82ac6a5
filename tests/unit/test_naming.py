"""One naming rule (``llmopt.naming``) for every named thing: models, feature sets, their
features and entity keys, and bandits. Arm ids are not names: they keep ``/``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llmopt import errors, naming
from llmopt.bandits import types as bandit_types
from llmopt.bandits.arms import Arm, LLMConfig
from llmopt.bandits.service import BanditService
from llmopt.bandits.types import BanditSpec
from llmopt.features.spec import Feature, FeatureSet, FeatureType, Identity
from llmopt.registry import Registry

GOOD = ["a", "router-v2", "gpt_4o.mini", "7days", "_private", "A" * 128]
BAD = ["", "a/b", "/a", "a b", "-a", ".a", "a\n", "é", "a:b", "a@b", "A" * 129, "a\x00"]


@pytest.mark.parametrize("name", GOOD)
def test_names_the_rule_accepts(name: str) -> None:
    assert naming.check("x.name", name) == name
    assert naming.problem("x.name", name) is None


@pytest.mark.parametrize("name", BAD)
def test_names_the_rule_refuses_name_the_field_the_value_and_the_rule(name: str) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        naming.check("x.name", name)
    message = str(caught.value)
    assert message.startswith("x.name: ") and repr(naming.shown(name)) in message
    assert naming.RULE in message
    assert naming.problem("x.name", name) == message


def feature_set(name: str = "users", entity_key: str = "user_id", feature: str = "f") -> FeatureSet:
    return FeatureSet(name, entity_key, (Feature(feature, FeatureType.FLOAT, Identity()),))


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: feature_set(name="a/b"), "feature_set.name"),
        (lambda: feature_set(entity_key="user/id"), "feature_set.entity_key"),
        (lambda: feature_set(feature="f/x"), "feature_set.features[0].name"),
        (lambda: feature_set(name="users\n"), "feature_set.name"),  # no trailing newline
    ],
)
def test_feature_set_names_follow_the_rule(make, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(errors.InvalidArgument, match=f"^{re.escape(field)}: .*no '/'"):
        make().validate()


def test_feature_set_names_the_rule_accepts_are_accepted() -> None:
    assert feature_set(name="7days", entity_key="_uid", feature="p95.ms").validate()


def test_model_names_follow_the_rule(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "registry")
    try:
        with pytest.raises(errors.InvalidArgument, match=r"^name: 'a/b' is invalid: .*no '/'"):
            reg.create_model("a/b")
        assert reg.create_model("_team.model-1").name == "_team.model-1"
    finally:
        reg.close()


def bandit_spec(name: str, arm_id: str = "openai/gpt-4o") -> BanditSpec:
    return BanditSpec(
        name, arms=(Arm(arm_id, LLMConfig(model="gpt-4o")), Arm("other", LLMConfig(model="m")))
    )


def test_bandit_names_follow_the_rule_and_arm_ids_keep_their_slash(tmp_path: Path) -> None:
    svc = BanditService(tmp_path / "bandits", sweep_interval=0)
    svc.warm_up()
    try:
        with pytest.raises(errors.InvalidArgument, match=r"^bandit.name: 'a/b' is invalid"):
            svc.create_bandit(bandit_spec("a/b"))
        with pytest.raises(errors.InvalidArgument, match=r"^bandit.feature_set: 'f/s'"):
            svc.create_bandit(BanditSpec("ok", arms=bandit_spec("x").arms, feature_set="f/s"))
        info = svc.create_bandit(bandit_spec("router"))
        assert info.spec.arms[0].arm_id == "openai/gpt-4o"  # an id, not a name
    finally:
        svc.close()


def test_a_bandit_stored_under_a_name_the_rule_refuses_still_loads_and_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "bandits"
    with monkeypatch.context() as old_rule:  # as a data dir of an earlier release holds it
        old_rule.setattr(bandit_types.naming, "check", lambda field, value: value)
        svc = BanditService(root, sweep_interval=0)
        svc.warm_up()
        svc.create_bandit(bandit_spec("team/router"))
        svc.close()
    svc = BanditService(root, sweep_interval=0)
    svc.warm_up()
    try:
        assert svc.get_bandit("team/router").spec.name == "team/router"
        for _ in range(5):
            decision = svc.select_arm("team/router")
            svc.record_reward(decision.decision_id, 0.5)
        stats = svc.stats("team/router")
        assert (stats.decisions, stats.rewards) == (5, 5)
        with pytest.raises(errors.InvalidArgument, match=r"^bandit\.name: 'team/other'"):
            svc.create_bandit(bandit_spec("team/other"))  # new ones follow the rule
    finally:
        svc.close()


def test_docstring_examples() -> None:
    import doctest

    failures, tried = doctest.testmod(naming, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0
