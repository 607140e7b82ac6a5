"""llmopt.v1.Features through the real server: sets, writes, point-in-time reads, vectors."""

from __future__ import annotations

import math
import zlib

import grpc
import numpy as np
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from llmopt.gen.llmopt.v1 import common_pb2, features_pb2, features_pb2_grpc

pytestmark = pytest.mark.integration

F = features_pb2
T0 = 1_780_000_000  # seconds; well in the past of the server clock


def ts(seconds: float) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromNanoseconds(int(seconds * 1e9))
    return out


def num(x: float) -> F.FeatureValue:
    return F.FeatureValue(number=x)


def text(s: str) -> F.FeatureValue:
    return F.FeatureValue(text=s)


def users_set(name: str, **kw) -> F.FeatureSet:
    return F.FeatureSet(
        name=name,
        entity_key="user_id",
        features=[
            F.Feature(
                name="age",
                type=F.FEATURE_TYPE_INT,
                transform=F.Transform(standardize=F.Transform.Standardize(mean=30, std=10)),
                default_value=num(30),
            ),
            F.Feature(
                name="spend",
                type=F.FEATURE_TYPE_FLOAT,
                transform=F.Transform(log1p=F.Transform.Log1p()),
            ),
            F.Feature(
                name="tier",
                type=F.FEATURE_TYPE_CATEGORY,
                transform=F.Transform(one_hot=F.Transform.OneHot(vocabulary=["free", "pro"])),
            ),
            F.Feature(
                name="country",
                type=F.FEATURE_TYPE_STRING,
                transform=F.Transform(hash=F.Transform.Hash(buckets=4)),
            ),
            F.Feature(
                name="hour",
                type=F.FEATURE_TYPE_INT,
                source="context.hour_of_day",
                transform=F.Transform(cyclical=F.Transform.Cyclical(period=24)),
            ),
            F.Feature(
                name="tokens",
                type=F.FEATURE_TYPE_INT,
                source="context.input_length",
                transform=F.Transform(clip=F.Transform.Clip(lo=0, hi=1000)),
            ),
            F.Feature(
                name="latency_ms",
                type=F.FEATURE_TYPE_FLOAT,
                transform=F.Transform(minmax=F.Transform.MinMax(lo=0, hi=1000)),
            ),
        ],
        aggregates=["latency_ms"],
        **kw,
    )


def row(entity: str, at: float | None = None, **values) -> F.FeatureRow:
    msg = F.FeatureRow(entity_id=entity)
    for k, v in values.items():
        msg.values[k].CopyFrom(text(v) if isinstance(v, str) else num(v))
    if at is not None:
        msg.event_time.CopyFrom(ts(at))
    return msg


@pytest.fixture(scope="module")
def stub(channel) -> features_pb2_grpc.FeaturesStub:
    return features_pb2_grpc.FeaturesStub(channel)


def test_create_get_list_and_versions(stub):
    created = stub.CreateFeatureSet(F.CreateFeatureSetRequest(feature_set=users_set("it_crud")))
    assert created.version == 1 and created.create_time.seconds > 0
    assert [f.name for f in created.features][:2] == ["age", "spend"]
    again = stub.CreateFeatureSet(F.CreateFeatureSetRequest(feature_set=users_set("it_crud")))
    assert again.version == 1
    ttl = duration_pb2.Duration(seconds=90)
    v2 = stub.CreateFeatureSet(F.CreateFeatureSetRequest(feature_set=users_set("it_crud", ttl=ttl)))
    assert v2.version == 2 and v2.ttl.seconds == 90
    got = stub.GetFeatureSet(F.GetFeatureSetRequest(name="it_crud"))
    assert got.version == 2
    old = stub.GetFeatureSet(F.GetFeatureSetRequest(name="it_crud", version=1))
    assert not old.HasField("ttl")
    assert old.features[0].transform.standardize.std == 10
    assert old.features[4].source == "context.hour_of_day"
    listed = stub.ListFeatureSets(F.ListFeatureSetsRequest())
    names = [s.name for s in listed.feature_sets]
    assert "it_crud" in names and "arm_outcomes" in names
    with pytest.raises(grpc.RpcError) as err:
        stub.GetFeatureSet(F.GetFeatureSetRequest(name="it_crud", version=7))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_invalid_set_lists_every_problem(stub):
    bad = F.FeatureSet(
        name="it bad",
        entity_key="id",
        features=[
            F.Feature(name="a", type=F.FEATURE_TYPE_STRING),
            F.Feature(
                name="b",
                type=F.FEATURE_TYPE_FLOAT,
                transform=F.Transform(hash=F.Transform.Hash(buckets=0)),
            ),
        ],
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateFeatureSet(F.CreateFeatureSetRequest(feature_set=bad))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for needle in ("feature_set.name", "features[0].transform", "features[1].transform"):
        assert needle in err.value.details()


def test_writes_and_point_in_time_reads(stub):
    stub.CreateFeatureSet(F.CreateFeatureSetRequest(feature_set=users_set("it_rw")))
    rows = [
        row("u1", T0 + 100, age=40),
        row("u1", T0 + 10, age=20, tier="pro"),
        row("u1", T0 + 50, age=30),
        row("u2", None, spend=5.0),
    ]
    written = stub.WriteFeatures(F.WriteFeaturesRequest(feature_set="it_rw", rows=rows))
    assert written.rows_written == 4
    latest = stub.GetFeatures(
        F.GetFeaturesRequest(
            feature_set="it_rw", entity_ids=["u1", "u2"], feature_names=["age", "tier", "spend"]
        )
    )
    u1, u2 = latest.entities
    assert u1.entity_id == "u1" and u1.values["age"].value.number == 40
    assert u1.values["age"].event_time.seconds == T0 + 100
    assert u1.values["age"].staleness.seconds > 0
    assert u1.values["tier"].value.text == "pro"
    assert u1.values["spend"].missing
    assert u2.values["spend"].value.number == 5.0 and u2.values["age"].missing
    past = stub.GetFeatures(
        F.GetFeaturesRequest(
            feature_set="it_rw", entity_ids=["u1"], feature_names=["age"], as_of=ts(T0 + 60)
        )
    )
    assert past.entities[0].values["age"].value.number == 30
    assert past.entities[0].values["age"].staleness.seconds == 10
    before = stub.GetFeatures(
        F.GetFeaturesRequest(
            feature_set="it_rw", entity_ids=["u1"], feature_names=["age"], as_of=ts(T0)
        )
    )
    assert before.entities[0].values["age"].missing


def test_streaming_writes_with_typed_maps(stub):
    stub.CreateFeatureSet(F.CreateFeatureSetRequest(feature_set=users_set("it_stream")))
    batches = [
        F.WriteFeaturesRequest(
            feature_set="it_stream",
            rows=[
                F.FeatureRow(entity_id=f"e{i}-{j}", numbers={"age": i}, texts={"tier": "pro"})
                for j in range(5)
            ],
        )
        for i in range(4)
    ]
    assert stub.WriteFeaturesStream(iter(batches)).rows_written == 20
    got = stub.GetFeatures(
        F.GetFeaturesRequest(feature_set="it_stream", entity_ids=["e3-4"], feature_names=[])
    )
    values = got.entities[0].values
    assert values["age"].value.number == 3 and values["tier"].value.text == "pro"
    assert values["spend"].missing
    assert "latency_ms_p99_5m" in values  # every aggregate is listed when no name is given
    bad = F.WriteFeaturesRequest(
        feature_set="it_stream", rows=[F.FeatureRow(entity_id="z", numbers={"tier": 1.0})]
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.WriteFeaturesStream(iter([batches[0], bad]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "rows[0].values['tier']" in err.value.details()


def test_malformed_writes_are_refused_with_every_bad_field_named(stub):
    stub.CreateFeatureSet(F.CreateFeatureSetRequest(feature_set=users_set("it_bad")))
    rows = [
        row("ok", age=1),
        row("", age=2.5, colour="red"),
        row("x", tier=3.0, spend="lots"),
        F.FeatureRow(entity_id="y", values={"age": F.FeatureValue()}),
    ]
    with pytest.raises(grpc.RpcError) as err:
        stub.WriteFeatures(F.WriteFeaturesRequest(feature_set="it_bad", rows=rows))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details()
    for needle in ("rows[3].values['age']",):
        assert needle in details
    rows = rows[:3]
    with pytest.raises(grpc.RpcError) as err:
        stub.WriteFeatures(F.WriteFeaturesRequest(feature_set="it_bad", rows=rows))
    details = err.value.details()
    for needle in (
        "rows[1].entity_id",
        "rows[1].values['age']",
        "rows[1].values['colour']",
        "rows[2].values['tier']",
        "rows[2].values['spend']",
    ):
        assert needle in details, needle
    got = stub.GetFeatures(
        F.GetFeaturesRequest(feature_set="it_bad", entity_ids=["ok"], feature_names=["age"])
    )
    assert got.entities[0].values["age"].missing  # nothing of the refused request was written
    with pytest.raises(grpc.RpcError) as err:
        stub.WriteFeatures(F.WriteFeaturesRequest(feature_set="it_nothing", rows=rows))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_feature_vector_joins_store_and_request(stub):
    stub.CreateFeatureSet(F.CreateFeatureSetRequest(feature_set=users_set("it_vec")))
    stub.WriteFeatures(
        F.WriteFeaturesRequest(
            feature_set="it_vec",
            rows=[row("u9", age=50, spend=9.0, tier="gold", country="FR", latency_ms=250.0)],
        )
    )
    request = F.GetFeatureVectorRequest(
        feature_set="it_vec",
        context=common_pb2.RequestContext(user_id="u9", hour_of_day=6, input_length=5000),
    )
    vec = stub.GetFeatureVector(request)
    assert vec.feature_set == "it_vec" and vec.version == 1
    hashed = [0.0] * 4
    hashed[zlib.crc32(b"FR") % 4] = 1.0
    expected = [
        2.0,
        math.log1p(9.0),
        0.0,
        0.0,
        1.0,
        *hashed,
        1.0,
        math.cos(math.pi / 2),
        1000.0,
        0.25,
    ]
    expected32 = np.asarray(expected, dtype=np.float32)
    assert list(vec.slot_names) == [
        "age",
        "spend",
        "tier=free",
        "tier=pro",
        "tier=<oov>",
        "country#0",
        "country#1",
        "country#2",
        "country#3",
        "hour_sin",
        "hour_cos",
        "tokens",
        "latency_ms",
    ]
    assert np.frombuffer(vec.vector.raw_data, dtype="<f4").tolist() == expected32.tolist()
    assert list(vec.vector.shape) == [13]
    assert vec.values == pytest.approx(expected32.tolist())
    by_id = stub.GetFeatureVector(
        F.GetFeatureVectorRequest(feature_set="it_vec", entity_ids=["u9"])
    )
    assert by_id.values[0] == 2.0  # the stored age, without any request context
    with pytest.raises(grpc.RpcError) as err:
        stub.GetFeatureVector(F.GetFeatureVectorRequest(feature_set="it_none"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_default_vector_still_served(stub):
    request = F.GetFeatureVectorRequest(
        context=common_pb2.RequestContext(
            task_type="summarization", priority=10, hour_of_day=0, day_of_week=0
        )
    )
    vec = stub.GetFeatureVector(request)
    assert vec.feature_set == "context" and list(vec.values) == [
        0.0,
        0.5,
        1.0,
        1.0,
        0.0,
        1.0,
        0.0,
        1.0,
        1.0,
        0.0,
    ]
    assert len(stub.GetFeatureVector(F.GetFeatureVectorRequest()).values) == 10


def test_aggregates_readable_through_get_features(stub):
    stub.CreateFeatureSet(F.CreateFeatureSetRequest(feature_set=users_set("it_agg")))
    rows = [row("m1", latency_ms=float(x)) for x in range(1, 101)]
    stub.WriteFeatures(F.WriteFeaturesRequest(feature_set="it_agg", rows=rows))
    got = stub.GetFeatures(
        F.GetFeaturesRequest(
            feature_set="it_agg",
            entity_ids=["m1"],
            feature_names=["latency_ms_count_1h", "latency_ms_max_1h", "latency_ms_p95_1h"],
        )
    )
    values = got.entities[0].values
    assert values["latency_ms_count_1h"].value.number == 100
    assert values["latency_ms_max_1h"].value.number == 100
    assert abs(values["latency_ms_p95_1h"].value.number - 95) <= 0.95


def test_acknowledged_writes_survive_kill_9(server_factory, tmp_path):
    proc = server_factory(data_dir=tmp_path / "killed")
    with proc.channel() as ch:
        s = features_pb2_grpc.FeaturesStub(ch)
        s.CreateFeatureSet(F.CreateFeatureSetRequest(feature_set=users_set("it_durable")))
        for i in range(20):
            s.WriteFeatures(
                F.WriteFeaturesRequest(
                    feature_set="it_durable", rows=[row(f"d{i}", T0 + i, age=i, tier="pro")]
                )
            )
    proc.kill()
    proc = server_factory(data_dir=tmp_path / "killed")
    with proc.channel() as ch:
        s = features_pb2_grpc.FeaturesStub(ch)
        assert s.GetFeatureSet(F.GetFeatureSetRequest(name="it_durable")).version == 1
        got = s.GetFeatures(
            F.GetFeaturesRequest(
                feature_set="it_durable",
                entity_ids=[f"d{i}" for i in range(20)],
                feature_names=["age", "tier"],
            )
        )
        for i, entity in enumerate(got.entities):
            assert entity.values["age"].value.number == i
            assert entity.values["age"].event_time.seconds == T0 + i
            assert entity.values["tier"].value.text == "pro"


def columns(ids, names, matrix, times=()) -> F.NumericColumns:
    array = np.asarray(matrix, dtype="<f8")
    return F.NumericColumns(
        entity_ids=ids,
        names=names,
        values=common_pb2.Tensor(
            dtype=common_pb2.FLOAT64, shape=array.shape, raw_data=array.tobytes()
        ),
        event_time_us=list(times),
    )


def test_columnar_writes_with_missing_cells_and_event_times(stub):
    stub.CreateFeatureSet(F.CreateFeatureSetRequest(feature_set=users_set("it_cols")))
    batch = columns(
        ["c1", "c2", "c3"],
        ["age", "spend"],
        [[41, 10.5], [52, math.nan], [63, 30.0]],
        [(T0 + 10) * 10**6, (T0 + 20) * 10**6, (T0 + 30) * 10**6],
    )
    request = F.WriteFeaturesRequest(
        feature_set="it_cols",
        rows=[F.FeatureRow(entity_id="r1", numbers={"age": 20}, event_time=ts(T0))],
        columns=batch,
    )
    assert stub.WriteFeatures(request).rows_written == 4
    got = stub.GetFeatures(
        F.GetFeaturesRequest(
            feature_set="it_cols",
            entity_ids=["r1", "c1", "c2", "c3"],
            feature_names=["age", "spend"],
        )
    )
    values = {e.entity_id: e.values for e in got.entities}
    assert values["r1"]["age"].value.number == 20
    assert values["c1"]["spend"].value.number == 10.5
    assert values["c2"]["age"].value.number == 52 and values["c2"]["spend"].missing  # NaN cell
    assert values["c3"]["age"].event_time.seconds == T0 + 30


@pytest.mark.parametrize(
    ("batch", "fragment"),
    [
        (columns(["a", "b"], ["age"], [[1.0]]), "columns.values.shape"),
        (columns(["a"], ["age", "age"], [[1.0, 2.0]]), "columns.names"),
        (columns(["a"], ["age"], [[1.0]], [1, 2]), "columns.event_time_us"),
        (
            F.NumericColumns(
                entity_ids=["a"],
                names=["age"],
                values=common_pb2.Tensor(dtype=common_pb2.INT64, shape=[1, 1], raw_data=bytes(8)),
            ),
            "columns.values.dtype",
        ),
        (columns(["a"], ["nope"], [[1.0]]), "nope"),
    ],
)
def test_bad_columnar_writes_are_refused_and_store_nothing(stub, batch, fragment):
    stub.CreateFeatureSet(F.CreateFeatureSetRequest(feature_set=users_set("it_cols_bad")))
    with pytest.raises(grpc.RpcError) as err:
        stub.WriteFeatures(F.WriteFeaturesRequest(feature_set="it_cols_bad", columns=batch))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in err.value.details()
    got = stub.GetFeatures(
        F.GetFeaturesRequest(feature_set="it_cols_bad", entity_ids=["a"], feature_names=["age"])
    )
    assert got.entities[0].values["age"].missing
