"""The feature service's store: versions, validated writes, point-in-time reads, TTL, restarts."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import pytest

from llmopt import errors
from llmopt.features import ARM_OUTCOMES_SET, FeatureService, RequestContext
from llmopt.features.service import MAX_ENTITY_ID, _row_problems, from_us, state_types, to_us
from llmopt.features.spec import (
    Feature,
    FeatureSet,
    FeatureType,
    Identity,
    OneHot,
    Standardize,
)
from llmopt.native.features import clean_rows

# Kernel tests: CI also runs them against the bounds-checked build (make test-kernels-debug).
pytestmark = pytest.mark.kernels

T0 = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
T0_US = to_us(T0)
SEC = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = T0.timestamp()

    def __call__(self) -> float:
        return self.now


def users(**kw) -> FeatureSet:
    return FeatureSet(
        "users",
        "user_id",
        (
            Feature("age", FeatureType.INT),
            Feature("spend", FeatureType.FLOAT, Standardize(10.0, 5.0)),
            Feature("tier", FeatureType.CATEGORY, OneHot(("free", "pro")), default="free"),
            Feature("vip", FeatureType.BOOL),
        ),
        **kw,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def svc(tmp_path: Path, clock: Clock):
    service = FeatureService(tmp_path / "features", clock=clock)
    yield service
    service.close()


def value(svc, entity, name, as_of=None):
    return svc.read("users", [entity], [name], as_of)[0].values[name]


def test_versions(svc):
    v1 = svc.create_set(users())
    assert v1.version == 1
    assert svc.create_set(users()).version == 1  # same definition: no new version
    v2 = svc.create_set(users(ttl_seconds=60.0))
    assert v2.version == 2
    assert svc.get_set("users").version == 2
    assert svc.get_set("users", 1).ttl_seconds is None
    with pytest.raises(errors.NotFound):
        svc.get_set("users", 3)
    with pytest.raises(errors.NotFound):
        svc.get_set("nobody")
    with pytest.raises(errors.FailedPrecondition):
        svc.create_set(FeatureSet(ARM_OUTCOMES_SET, "arm", (Feature("x"),)))
    names = [s.name for s in svc.list_sets()[0]]
    assert names == [ARM_OUTCOMES_SET, "users"]
    page, token = svc.list_sets(page_size=1)
    assert [s.name for s in page] == [ARM_OUTCOMES_SET] and token == ARM_OUTCOMES_SET
    page, token = svc.list_sets(page_size=1, after=token)
    assert [s.name for s in page] == ["users"] and token == ""


def test_malformed_write_lists_every_bad_field_and_writes_nothing(svc):
    svc.create_set(users())
    rows = [
        ("u1", {"age": 30}, None),
        ("", {"age": 1.5, "nope": 1.0}, None),
        ("u3", {"vip": 1.0, "tier": 7.0, "spend": float("nan")}, -5),
        ("u4", {}, T0_US + 2 * 3600 * SEC),
    ]
    with pytest.raises(errors.InvalidArgument) as info:
        svc.write("users", rows)
    message = str(info.value)
    for needle in (
        "rows[1].entity_id",
        "rows[1].values['age']",
        "rows[1].values['nope']",
        "rows[2].values['vip']",
        "rows[2].values['tier']",
        "rows[2].values['spend']",
        "rows[2].event_time",
        "rows[3].values",
        "rows[3].event_time",
    ):
        assert needle in message, needle
    assert "rows[0]" not in message
    assert value(svc, "u1", "age").missing


def test_point_in_time_reads_with_out_of_order_event_times(svc, clock):
    svc.create_set(users())
    svc.write("users", [("u1", {"age": 30}, T0_US - 100 * SEC)])
    svc.write("users", [("u1", {"age": 10}, T0_US - 300 * SEC)])  # older, arrives later
    svc.write("users", [("u1", {"age": 20, "vip": True}, T0_US - 200 * SEC)])
    latest = value(svc, "u1", "age")
    assert latest.value == 30 and latest.event_us == T0_US - 100 * SEC
    assert latest.staleness_us == 100 * SEC
    assert value(svc, "u1", "age", from_us(T0_US - 250 * SEC)).value == 10
    assert value(svc, "u1", "age", from_us(T0_US - 200 * SEC)).value == 20
    assert value(svc, "u1", "age", from_us(T0_US - 150 * SEC)).staleness_us == 50 * SEC
    assert value(svc, "u1", "age", from_us(T0_US - 301 * SEC)).missing
    assert value(svc, "u1", "vip", from_us(T0_US - 250 * SEC)).missing
    assert value(svc, "u1", "vip").value is True
    # Same event time twice: the later write wins.
    svc.write("users", [("u1", {"age": 31}, T0_US - 100 * SEC)])
    assert value(svc, "u1", "age").value == 31
    assert value(svc, "u1", "age", from_us(T0_US - 100 * SEC)).value == 31


def test_ttl_expiry(svc, clock):
    svc.create_set(users(ttl_seconds=60.0))
    svc.write("users", [("u1", {"age": 30, "tier": "pro"}, T0_US - 30 * SEC)])
    assert value(svc, "u1", "age").value == 30
    ctx = RequestContext(user_id="u1")
    assert svc.vector("users", ctx).values.tolist()[2:5] == [0.0, 1.0, 0.0]
    clock.now += 31
    assert value(svc, "u1", "age").missing
    # The vector reads the default instead of stale data.
    assert svc.vector("users", ctx).values.tolist()[2:5] == [1.0, 0.0, 0.0]
    # A point-in-time read inside the TTL still sees it.
    assert value(svc, "u1", "age", from_us(T0_US)).value == 30


def test_vector_joins_store_and_request(svc):
    svc.create_set(
        FeatureSet(
            "users",
            "user_id",
            (
                Feature("spend", FeatureType.FLOAT, Standardize(10.0, 5.0)),
                Feature("prio", FeatureType.INT, Identity(), source="context.priority"),
            ),
        )
    )
    svc.write("users", [("u1", {"spend": 20.0}, None)])
    by_context = svc.vector("users", RequestContext(user_id="u1", priority=7))
    assert by_context.values.tolist() == [2.0, 7.0]
    assert by_context.slot_names == ("spend", "prio")
    assert by_context.version == 1
    by_id = svc.vector("users", RequestContext(user_id="u2", priority=7), ["u1"])
    assert by_id.values.tolist() == [2.0, 7.0]
    assert svc.vector("users", None, ["nobody"]).values.tolist() == [-2.0, 0.0]
    with pytest.raises(errors.InvalidArgument):
        svc.vector("users", None, ["a", "b"])
    with pytest.raises(errors.NotFound):
        svc.vector("nope", None)
    default = svc.vector("", RequestContext(hour_of_day=0, day_of_week=0))
    assert default.feature_set == "context" and len(default.values) == 10


def test_reopen_keeps_sets_rows_and_aggregates(tmp_path, clock):
    svc = FeatureService(tmp_path / "f", clock=clock)
    svc.create_set(users())
    svc.create_set(users(description="v2"))
    svc.write("users", [("u1", {"age": 30}, T0_US - 10 * SEC), ("u2", {"vip": False}, None)])
    svc.record_arm_outcome("arm-a", 120.0, 0.02, 0.9, False, at=T0)
    svc.record_arm_outcome("arm-a", 80.0, 0.01, None, True, at=T0)
    svc.close()
    svc = FeatureService(tmp_path / "f", clock=clock)
    try:
        assert svc.get_set("users").version == 2
        assert value(svc, "u1", "age").value == 30
        assert value(svc, "u2", "vip").value is False
        svc.write("users", [("u1", {"vip": True}, None)])  # entity known only from disk
        assert value(svc, "u1", "age").value == 30
        arm = svc.read(
            ARM_OUTCOMES_SET,
            ["arm-a"],
            ["latency_ms_count_5m", "error_mean_1h", "quality_count_1h"],
        )
        got = {k: v.value for k, v in arm[0].values.items()}
        assert got == {"latency_ms_count_5m": 2, "error_mean_1h": 0.5, "quality_count_1h": 1}
    finally:
        svc.close()


def test_fit_from_store_creates_a_fitted_version(svc):
    svc.create_set(users())
    svc.write("users", [("a", {"spend": 1.0}, None), ("b", {"spend": 3.0}, None)])
    fitted = svc.create_set(
        FeatureSet("users", "user_id", (Feature("spend", FeatureType.FLOAT, Standardize()),)),
        fit_from_store=True,
    )
    assert fitted.version == 2
    assert fitted.features[0].transform == Standardize(2.0, 1.0)


def test_reading_unknown_features_is_refused(svc):
    svc.create_set(users())
    with pytest.raises(errors.InvalidArgument, match="bogus"):
        svc.read("users", ["u1"], ["age", "bogus"])


def test_arm_outcomes_feed_aggregates_like_brute_force(svc, clock):
    import math
    import random

    rng = random.Random(3)
    clock.now += 100  # 100 s into a 5-minute bucket
    now = T0 + dt.timedelta(seconds=100)
    outcomes = []
    for i in range(400):
        at = now - dt.timedelta(seconds=rng.randrange(0, 3000))
        latency, cost = rng.lognormvariate(5.0, 0.5), rng.random() / 10
        quality = None if i % 5 == 0 else rng.random()
        error = rng.random() < 0.1
        outcomes.append((at, latency, cost, quality, error))
        svc.record_arm_outcome("bandit/arm-1", latency, cost, quality, error, at=at)
    got = svc.read(ARM_OUTCOMES_SET, ["bandit/arm-1"])[0].values
    bucket = to_us(now) // (300 * SEC)
    in_5m = [o for o in outcomes if to_us(o[0]) // (300 * SEC) == bucket]
    latencies = sorted(o[1] for o in outcomes)
    assert got["latency_ms_count_1h"].value == 400
    assert 0 < got["latency_ms_count_5m"].value == len(in_5m)
    assert math.isclose(got["error_mean_1h"].value, sum(o[4] for o in outcomes) / 400)
    assert got["quality_count_1h"].value == sum(o[3] is not None for o in outcomes)
    assert math.isclose(got["cost_sum_1h"].value, math.fsum(o[2] for o in outcomes))
    assert got["latency_ms_max_1h"].value == latencies[-1]
    exact = latencies[math.floor(0.95 * 399)]
    assert abs(got["latency_ms_p95_1h"].value - exact) <= 0.01 * exact
    assert got["latency_ms"].value == max(outcomes, key=lambda o: o[0])[1]


def test_vector_accepts_entity_ids_by_key(svc):
    svc.create_set(FeatureSet("models", "model", (Feature("cost", FeatureType.FLOAT, Identity()),)))
    svc.write("models", [("gpt", {"cost": 0.5}, None)])
    assert svc.vector("models", RequestContext(), {"model": "gpt"}).values.tolist() == [0.5]
    assert svc.vector("models", RequestContext(metadata={"model": "gpt"})).values.tolist() == [0.5]
    assert svc.vector_width("models") == 1 and svc.vector_width("") == 10


def test_new_versions_keep_aggregates_without_double_counting(svc, clock):
    base = users(aggregates=("spend",))
    svc.create_set(base)
    svc.write("users", [("u1", {"spend": float(x)}, None) for x in range(10)])
    svc.create_set(users(aggregates=("spend",), description="v2"))  # same streams
    svc.create_set(users(aggregates=("spend", "age"), description="v3"))  # a new stream
    got = svc.read("users", ["u1"], ["spend_count_5m", "spend_sum_1h"])[0].values
    assert got["spend_count_5m"].value == 10 and got["spend_sum_1h"].value == 45.0


def test_concurrent_writers_keep_the_newest_value(svc):
    import threading

    svc.create_set(users())

    def writer(k: int) -> None:
        for i in range(50):
            svc.write("users", [("shared", {"age": k * 1000 + i}, T0_US - (50 - i) * SEC)])

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    newest = value(svc, "shared", "age")
    assert newest.event_us == T0_US - SEC and newest.value % 1000 == 49


def test_stored_payloads_never_load_classes():
    import pickle

    from llmopt.features.store import decode, encode

    assert decode(encode({"a": 1.5, "b": "x", "c": True, "d": 3})) == {
        "a": 1.5,
        "b": "x",
        "c": True,
        "d": 3,
    }
    with pytest.raises(pickle.UnpicklingError):
        decode(pickle.dumps({"a": dt.datetime(2026, 1, 1)}))


def test_latest_values_cache_is_bounded_and_reads_back_what_it_dropped(tmp_path, clock):
    svc = FeatureService(tmp_path / "bounded", clock=clock, max_entities=16)
    clock.now += 1000  # every write below is in the past
    try:
        svc.create_set(users())
        for k in range(100):
            svc.write("users", [(f"u{k}", {"age": k, "spend": 1.0 * k}, T0_US + k * SEC)])
        state = svc._state("users")
        assert len(state.entities) <= 16
        assert "u0" not in state.entities  # the earliest written were dropped
        assert value(svc, "u0", "age").value == 0  # and are read back from SQLite
        svc.write("users", [("u1", {"age": 99}, T0_US + 500 * SEC)])  # u1: dropped, then written
        assert value(svc, "u1", "age").value == 99  # the newer write wins
        assert value(svc, "u1", "spend").value == 1.0  # the rest comes back from SQLite
        for k in range(100):
            assert value(svc, f"u{k}", "spend").value == (1.0 * k), k
        assert len(state.entities) <= 16
    finally:
        svc.close()


def test_the_native_fast_path_accepts_exactly_the_rows_the_slow_path_accepts():
    """``llmopt.native.features.clean_rows`` (sets without INT features) against the per-field
    checks that name each problem: random rows with random defects; each is accepted by one exactly
    when the other finds nothing wrong with it, and accepted rows come back with their time."""
    fs = FeatureSet(
        "mixed",
        "user_id",
        (
            Feature("spend"),
            Feature("vip", FeatureType.BOOL),
            Feature("tier", FeatureType.CATEGORY, transform=OneHot(("a", "b"))),
        ),
        version=1,
    )
    types = state_types(fs)
    rng = random.Random(5)
    good = {"spend": [0.5, 3, -2.0], "vip": [True, False], "tier": ["a", "zz"]}
    bad = {"spend": [float("nan"), float("inf"), "3", None, True], "vip": [1, "yes", 0.0],
           "tier": [1, 2.5, None], "nope": [1.0]}  # fmt: skip
    now, latest = T0_US, T0_US + 3600 * SEC
    accepted = refused = 0
    for _ in range(3000):
        values = {
            name: rng.choice(bad[name] if rng.random() < 0.08 else good.get(name, bad[name]))
            for name in rng.sample(sorted(bad), rng.randint(0, 3))
        }
        entity = rng.choice(["u1", "", "x" * MAX_ENTITY_ID, "x" * (MAX_ENTITY_ID + 1), "u2"])
        event = rng.choice([None, None, T0_US - SEC, 0, -1, latest, latest + 1, 2**70])
        row = (entity, values, event)
        fast = clean_rows([row], types, now, latest, MAX_ENTITY_ID)
        slow = _row_problems(fs, 0, entity, values, now if event is None else event, latest)
        assert (fast is not None) == (not slow), (row, slow)
        if fast is not None:
            assert fast == [(entity, values, now if event is None else event)]
            accepted += 1
        else:
            refused += 1
    assert accepted > 300 and refused > 300


def test_the_store_files_are_private_whatever_the_umask(tmp_path: Path, clock: Clock) -> None:
    import os
    import stat

    old = os.umask(0)
    try:
        service = FeatureService(tmp_path / "features", clock=clock)
        service.create_set(users())
        service.write("users", [("u1", {"age": 30}, None)])
        found = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "features").iterdir()}
        service.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "features").stat().st_mode) == 0o700
    assert any(name.endswith(".journal") for name in found) and "features.db" in found
    assert set(found.values()) == {0o600}, found
