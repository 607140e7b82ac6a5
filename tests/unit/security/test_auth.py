"""llmopt.security.auth: bearer tokens, mTLS subjects, and what a principal may call."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmopt import errors
from llmopt.security import Authenticator, Principal, hash_token
from llmopt.security.auth import MISSING


@pytest.fixture
def auth(tmp_path: Path) -> Authenticator:
    path = tmp_path / "tokens"
    path.write_text(
        f"{hash_token('ci-secret')} ci-bot read,decide\nsubject:agent build-agent admin\n"
    )
    authenticator = Authenticator.from_files(path, None)
    assert authenticator is not None
    return authenticator


def test_no_files_means_auth_off():
    assert Authenticator.from_files(None, None) is None


def test_a_known_token_is_its_principal(auth: Authenticator):
    principal = auth.authenticate({"authorization": "Bearer ci-secret"}, None)
    assert principal == Principal("ci-bot", frozenset({"read", "decide"}), "token")
    assert auth.authenticate({"authorization": "bearer  ci-secret "}, None) == principal


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({}, MISSING),
        ({"authorization": "Basic Y2k6c2VjcmV0"}, "is not 'Bearer'"),
        ({"authorization": "Bearer"}, "is not 'Bearer'"),
        ({"authorization": "Bearer ci-secreT"}, "unknown token"),
    ],
)
def test_no_or_a_bad_token_is_unauthenticated(auth: Authenticator, metadata, message):
    with pytest.raises(errors.Unauthenticated) as caught:
        auth.authenticate(metadata, None)
    assert message in str(caught.value)
    assert "ci-secre" not in str(caught.value) and "Y2k6" not in str(caught.value)


def test_a_client_certificate_subject_with_an_entry_is_its_principal(auth: Authenticator):
    assert auth.authenticate({}, "agent") == Principal("build-agent", frozenset({"admin"}), "mtls")


def test_a_token_wins_over_the_certificate(auth: Authenticator):
    principal = auth.authenticate({"authorization": "Bearer ci-secret"}, "agent")
    assert principal.name == "ci-bot"


def test_a_subject_without_an_entry_is_unauthenticated(auth: Authenticator):
    with pytest.raises(errors.Unauthenticated, match="subject 'stranger' has no 'subject:'"):
        auth.authenticate({}, "stranger")


def test_authorize_names_principal_scope_and_method(auth: Authenticator):
    bot = Principal("ci-bot", frozenset({"read", "decide"}), "token")
    auth.authorize(bot, "/llmopt.v1.Bandits/SelectArm")
    auth.authorize(bot, "/grpc.health.v1.Health/Check")
    with pytest.raises(errors.PermissionDenied) as caught:
        auth.authorize(bot, "/llmopt.v1.Registry/Promote")
    assert str(caught.value) == (
        "principal 'ci-bot' lacks scope 'admin' needed by /llmopt.v1.Registry/Promote"
    )


def test_admin_does_not_imply_the_other_scopes(auth: Authenticator):
    with pytest.raises(errors.PermissionDenied, match="lacks scope 'read'"):
        ops = Principal("ops", frozenset({"admin"}), "token")
        auth.authorize(ops, "/llmopt.v1.Bandits/GetBandit")


def test_authorize_an_unknown_method_is_a_key_error(auth: Authenticator):
    with pytest.raises(KeyError):
        auth.authorize(Principal("ops", frozenset({"admin"}), "token"), "/x.Y/Z")


def test_current_actor_follows_the_context_variable():
    from llmopt.security import current_actor, current_principal

    assert current_actor() == ""
    token = current_principal.set(Principal("ops", frozenset(), "jwt"))
    try:
        assert current_actor() == "ops"
    finally:
        current_principal.reset(token)
    assert current_actor() == ""
