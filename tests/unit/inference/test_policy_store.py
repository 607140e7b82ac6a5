"""TrafficPolicyStore: policies with their batching survive a reopen; a database written before
batching existed opens with batching off."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from llmopt import errors
from llmopt.inference import MIGRATIONS, TrafficPolicyStore
from llmopt.inference.batching import BatchingConfig
from llmopt.inference.routing import TrafficMode, TrafficPolicy
from llmopt.storage import Database


def test_a_policy_and_its_batching_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "inference.db"
    policy = TrafficPolicy("m", TrafficMode.SPLIT, 12.5, BatchingConfig(64, 800, (16, 32)))
    db = Database(path, migrations=MIGRATIONS)
    TrafficPolicyStore(db).save(policy)
    db.close()
    db = Database(path, migrations=MIGRATIONS)
    try:
        assert TrafficPolicyStore(db).load("m") == policy
        assert TrafficPolicyStore(db).load("other") is None
    finally:
        db.close()


def test_policies_stored_before_batching_load_with_it_off(tmp_path: Path) -> None:
    path = tmp_path / "inference.db"
    db = Database(path, migrations=MIGRATIONS[:1])  # the schema before batching
    db.write(lambda c: c.execute("INSERT INTO traffic_policy VALUES ('m', 'split', 2500, 1.0)"))
    db.close()
    db = Database(path, migrations=MIGRATIONS)
    try:
        loaded = TrafficPolicyStore(db).load("m")
        assert loaded == TrafficPolicy("m", TrafficMode.SPLIT, 25.0)
        assert not loaded.batching.enabled
    finally:
        db.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 2


def test_a_bad_batching_is_refused_naming_the_field() -> None:
    with pytest.raises(errors.InvalidArgument, match=r"^policy\.batching\.preferred_batch_sizes"):
        TrafficPolicy("m", batching=BatchingConfig(8, 100, (16,)))
