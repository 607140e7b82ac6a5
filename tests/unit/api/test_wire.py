"""llmopt.api.wire: the native answers are the bytes protobuf would write, and the field tags
they write come from the generated descriptors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FieldDescriptor

from llmopt.api import convert_bandits as cb
from llmopt.api import convert_inference as conv
from llmopt.api import wire
from llmopt.api.convert import from_tensor
from llmopt.bandits.arms import Arm, LLMConfig
from llmopt.bandits.types import MAX_ARMS, Decision, RewardReceipt
from llmopt.gen.llmopt.v1 import bandits_pb2 as pb
from llmopt.gen.llmopt.v1 import common_pb2, inference_pb2
from llmopt.inference import Prediction, Variant

# Kernel tests: CI also runs them against the bounds-checked build (make test-kernels-debug).
pytestmark = pytest.mark.kernels

# The fields each native answer writes (PredictResponse.error: never, it has no outputs then).
WRITTEN = {
    pb.Decision: ["decision_id", "bandit", "arm", "propensity", "scores", "time", "explanation"],
    pb.ArmScore: ["arm_id", "score"],
    pb.RecordRewardResponse: ["decision_id", "arm_id", "reward"],
    inference_pb2.PredictResponse: ["id", "model", "version", "variant", "outputs", "request_id"],
    common_pb2.Tensor: ["name", "dtype", "shape", "raw_data"],
    pb.Explanation: [f.name for f in pb.Explanation.DESCRIPTOR.fields],
    pb.ArmExplanation: [f.name for f in pb.ArmExplanation.DESCRIPTOR.fields],
    pb.FeatureContribution: ["name", "value", "contribution"],
}
F = FieldDescriptor
LENGTH_DELIMITED = {F.TYPE_STRING, F.TYPE_BYTES, F.TYPE_MESSAGE}
FIXED64 = {F.TYPE_DOUBLE, F.TYPE_FIXED64, F.TYPE_SFIXED64}


def expected_tag(field: FieldDescriptor) -> int:
    """The tag protobuf writes ``field`` with: its number, then the wire type of its type."""
    if field.type in LENGTH_DELIMITED or field.is_packed:
        wire_type = 2
    elif field.type in FIXED64:
        wire_type = 1
    else:
        wire_type = 0
    return field.number << 3 | wire_type


def test_the_tag_table_is_the_one_the_descriptors_give() -> None:
    fields = [m.DESCRIPTOR.fields_by_name[name] for m, names in WRITTEN.items() for name in names]
    timestamp = pb.Decision.DESCRIPTOR.fields_by_name["time"].message_type
    fields += [timestamp.fields_by_name["seconds"], timestamp.fields_by_name["nanos"]]
    assert dict(wire.TAGS) == {f.full_name: expected_tag(f) for f in fields}
    assert wire.TAGS["llmopt.v1.Tensor.shape"] & 7 == 2  # packed: length-delimited


def test_a_field_other_than_the_encoder_writes_fails_the_import() -> None:
    decision = pb.Decision.DESCRIPTOR
    assert wire.field_tag(decision, "propensity", F.TYPE_DOUBLE) == 4 << 3 | 1
    with pytest.raises(ImportError, match=r"llmopt\.v1\.Decision\.propensity is not the string"):
        wire.field_tag(decision, "propensity", F.TYPE_STRING)
    with pytest.raises(ImportError, match=r"llmopt\.v1\.Decision\.scores is not the message"):
        wire.field_tag(decision, "scores", F.TYPE_MESSAGE)  # it is repeated
    with pytest.raises(ImportError, match=r"llmopt\.v1\.Decision\.gone, which the descriptors"):
        wire.field_tag(decision, "gone", F.TYPE_STRING)
    # proto2's optional fields have explicit presence: a zero value would have to be written.
    options = descriptor_pb2.FileOptions.DESCRIPTOR
    with pytest.raises(ImportError, match=r"FileOptions\.java_package has explicit presence"):
        wire.field_tag(options, "java_package", F.TYPE_STRING)


def test_a_field_number_that_needs_a_longer_tag_fails_the_import() -> None:
    options = descriptor_pb2.FileOptions.DESCRIPTOR  # uninterpreted_option is field 999
    with pytest.raises(ImportError, match="field number 999 needs a tag of more than one byte"):
        wire.field_tag(options, "uninterpreted_option", F.TYPE_MESSAGE, True)


def test_a_message_written_out_of_number_order_or_in_part_fails_the_import() -> None:
    decision, S = pb.Decision.DESCRIPTOR, F.TYPE_STRING
    with pytest.raises(ImportError, match=r"Decision\.decision_id: field number 1 is not above"):
        wire.message_tags(decision, [("bandit", S), ("decision_id", S)])
    with pytest.raises(ImportError, match=r"does not write llmopt\.v1\.Decision\.arm"):
        wire.message_tags(decision, [("decision_id", S), ("bandit", S)])
    left_out = ("arm", "propensity", "scores", "time", "explanation")
    tags = wire.message_tags(decision, [("decision_id", S), ("bandit", S)], left_out)
    assert tags == {k: wire.TAGS[f"llmopt.v1.Decision.{k}"] for k in ("decision_id", "bandit")}


def _library_decision(d: Decision, arm: common_pb2.Arm) -> pb.Decision:
    """The Decision as protobuf's own runtime builds it: what the native answer must equal."""
    msg = pb.Decision(
        decision_id=d.decision_id,
        bandit=d.bandit,
        arm=arm,
        propensity=d.propensity,
        time=cb.to_timestamp(d.time),
    )
    for arm_id, score in d.scores:
        msg.scores.add(arm_id=arm_id, score=score)
    return msg


ARM = Arm("a1", LLMConfig(model="gpt-x", temperature=0.3, max_tokens=256), {"tier": "b"})


@pytest.mark.parametrize(
    ("ids", "scores", "propensity", "when"),
    [
        (("a1", "a2", "a3"), [0.5, float("nan"), 0.0], 0.25, 1_764_151_200.123456),
        (("a1", "a2", "a3"), [1e300, -1e-300], 1.0, 1_700_000_000.999999999),  # fewer scores
        (("a1",), [-0.0], -0.0, -1.5),  # -0.0 is written, as protobuf writes it
        (("a1", "ünïcode"), [2.0, 3.0], 0.0, 0.0),  # zero propensity and time left out
        (tuple(f"arm-{i}" for i in range(300)), [float(i) for i in range(300)], 0.5, 12.5),
    ],
)
def test_the_native_decision_answer_is_the_bytes_protobuf_would_write(
    ids: tuple[str, ...], scores: list[float], propensity: float, when: float
) -> None:
    d = Decision("dec-1", "router", ARM, propensity, ids, np.array(scores), when)
    arm = cb.to_arm(ARM)
    answer = cb.decision_answer(d, lambda a: cb.to_arm(a).SerializeToString())
    assert answer == _library_decision(d, arm).SerializeToString()
    parsed = pb.Decision.FromString(answer)
    assert [(s.arm_id, s.score) for s in parsed.scores] == list(d.scores)


def test_the_native_decision_answer_takes_scores_of_any_float_layout() -> None:
    ids = ("a1", "a2", "a3")
    expected = Decision("d", "b", ARM, 0.5, ids, np.array([1.0, 2.0, 3.0]), 1.0)
    for scores in (
        np.array([1.0, 2.0, 3.0], dtype=">f8"),
        np.array([1.0, 2.0, 3.0], dtype=np.float32),
        np.arange(1.0, 6.0)[::2][[0, 0, 0]] * [1, 2, 3],
    ):
        d = Decision("d", "b", ARM, 0.5, ids, scores, 1.0)
        assert cb.decision_answer(d, lambda a: b"") == cb.decision_answer(expected, lambda a: b"")


def test_the_native_decision_answer_lists_as_many_arms_as_a_bandit_may_have() -> None:
    ids = tuple(f"a{i}" for i in range(MAX_ARMS))
    d = Decision("d", "b", ARM, 0.5, ids, np.linspace(-1.0, 1.0, MAX_ARMS), 1.0)
    answer = cb.decision_answer(d, lambda a: cb.to_arm(a).SerializeToString())
    assert answer == _library_decision(d, cb.to_arm(ARM)).SerializeToString()


@pytest.mark.parametrize(
    "receipt",
    [
        RewardReceipt("dec-1", "arm-ä", 0.75),
        RewardReceipt("", "", 0.0),  # empty and zero fields are left out
        RewardReceipt("d" * 300, "a", -0.0),  # -0.0 is written, as protobuf writes it
    ],
)
def test_the_native_reward_answer_is_the_bytes_protobuf_would_write(receipt: RewardReceipt) -> None:
    expected = pb.RecordRewardResponse(
        decision_id=receipt.decision_id, arm_id=receipt.arm_id, reward=receipt.reward
    )
    assert cb.reward_answer(receipt) == expected.SerializeToString()


@pytest.mark.parametrize(
    "outputs",
    [
        {
            "label": np.array([1, 0], np.int64),
            "probabilities": np.array([[0.25, 0.75], [0.5, 0.5]], np.float32),
        },
        {"scalar": np.array(2.5, np.float64)},  # no shape: left out
        {"none": np.zeros((0, 3), np.float32)},  # no bytes: left out
        {"big": np.arange(300_000, dtype=np.float32).reshape(1000, 300), "b": np.ones(2, bool)},
        {"x" * 300: np.array([-1], np.int8), "ü": np.array([7], np.uint64)},
        {"strided": np.arange(6.0).reshape(3, 2)[:, 1], "swapped": np.arange(3, dtype=">i8")},
        {},
    ],
)
@pytest.mark.parametrize(
    ("version", "variant", "id"), [(2, Variant.CHALLENGER, "id-9"), (0, Variant.CHAMPION, "")]
)
def test_the_native_predict_answer_is_the_bytes_protobuf_would_write(
    outputs: dict[str, np.ndarray], version: int, variant: Variant, id: str
) -> None:
    pred = Prediction("model-ä", version, variant, outputs, "req-1" if id else "")
    answer = conv.predict_answer(pred, id)
    assert answer == conv.to_predict_response(pred, id).SerializeToString()
    back = {
        t.name: from_tensor(t) for t in inference_pb2.PredictResponse.FromString(answer).outputs
    }
    assert back.keys() == outputs.keys()
    for name, array in outputs.items():
        np.testing.assert_array_equal(back[name], array)


def test_the_native_encoder_refuses_arrays_it_cannot_copy_as_they_are() -> None:
    for array in (np.arange(6.0)[::2], np.arange(3, dtype=">f8")):
        with pytest.raises(ValueError, match="C-contiguous and little-endian"):
            wire.predict_answer("", "m", 1, 1, [("p", common_pb2.FLOAT64, array)], "")


# -- llmopt.v1.Explanation ------------------------------------------------------------------------

from llmopt.bandits import explain as E  # noqa: E402
from llmopt.bandits import policies as P  # noqa: E402

NAN, INF = float("nan"), float("inf")
SPECIAL = [0.0, -0.0, NAN, INF, -INF, 1e-300, -1e300, 0.25]  # zero left out, -0.0 written


def _explained(config: P.PolicyConfig, k: int = 6, dim: int = 5) -> E.Explanation:
    """An explanation of a trained policy, one slot excluded and one removed."""
    policy = P.make_policy(config, k, dim, seed=3)
    rng = np.random.default_rng(4)
    allowed = np.ones(k, dtype=np.uint8)
    for _ in range(60):
        x = rng.uniform(-1, 1, dim) if policy.contextual else None
        arm = policy.select(x, allowed).arm
        policy.update(arm, float(rng.random() < 0.5), x)
    allowed[1] = allowed[4] = 0
    x = rng.uniform(-1, 1, dim) if policy.contextual else None
    sel = policy.select(x, allowed)
    removed = [i == 4 for i in range(k)]
    ids = [f"arm-{i}" for i in range(k - 1)] + ["ünï-ärm"]
    names = [f"slot_{j}" for j in range(dim - 1)] + ["täsk=ü"]
    return E.explain_selection(policy, x, allowed, removed, ids, names, sel)


def _check_native(e: E.Explanation) -> pb.Explanation:
    """The native bytes equal the reference converter's, and parse back to the same values."""
    native = cb.explanation_bytes(e)
    reference = cb.to_explanation(e)
    assert native == reference.SerializeToString()
    parsed = pb.Explanation.FromString(native)
    assert parsed == reference
    assert cb.from_explanation(parsed) == e
    return parsed


@pytest.mark.parametrize("config", [c() for c in P.POLICY_TABLE], ids=lambda c: c.ONEOF)
def test_the_native_explanation_is_the_bytes_protobuf_would_write(config: Any) -> None:
    e = _explained(config)
    parsed = _check_native(e)
    assert [a.status for a in parsed.arms] == [1, 2, 1, 1, 3, 1]
    if e.columns().theta_x is not None:
        assert [c.name for c in parsed.arms[0].contributions][-1] == "täsk=ü"
        assert len(parsed.arms[5].contributions) == 5
    # The same explanation with its arms built one by one (contributions per arm).
    hand = E.Explanation(
        e.policy,
        e.exploration_kind,
        e.chosen_arm_id,
        e.propensity,
        e.reason,
        [E.ArmExplanation(*a[:10], contributions=a.contributions) for a in e.arms],
    )
    assert cb.explanation_bytes(hand) == cb.explanation_bytes(e)


def test_the_native_explanation_writes_special_numbers_and_empty_fields_as_protobuf() -> None:
    def arm(i: int, contributions: Any = ()) -> E.ArmExplanation:
        v = SPECIAL[i % len(SPECIAL) :] + SPECIAL[: i % len(SPECIAL)]
        return E.ArmExplanation("" if i == 2 else f"a{i}", 1 + i % 3, *v, contributions)

    per_arm = [
        (E.FeatureContribution("", 0.0, -0.0), E.FeatureContribution("ñame", NAN, INF)),
        (),  # an arm without contributions beside arms with them
        tuple(E.FeatureContribution(f"f{j}", SPECIAL[j], SPECIAL[-1 - j]) for j in range(8)),
    ]
    cases = [
        E.Explanation("", "", "", 0.0, "", ()),  # no arms, every field empty
        E.Explanation("ucb1", "optimism", "a0", -0.0, "chose a0: ü", [arm(i) for i in range(9)]),
        E.Explanation("lin_ucb", "optimism", "a1", NAN, "r", list(map(arm, range(3), per_arm))),
        E.Explanation("x", "y", "z", 1.0, "z" * 300, [arm(i) for i in range(200)]),  # long sizes
    ]  # fmt: skip
    for e in cases:
        _check_native(e)


def test_the_native_explanation_takes_arrays_of_any_float_layout() -> None:
    e = _explained(P.LinUCB())
    c = e.columns()
    want = cb.explanation_bytes(e)
    head = (e.policy, e.exploration_kind, e.chosen_arm_id, e.propensity, e.reason)
    got = wire.explanation_message(
        *head,
        c.arm_ids,
        c.status,
        c.numbers.astype(">f8"),  # byte-swapped
        c.slot_names,
        c.x.tolist(),  # type: ignore[union-attr]
        np.asfortranarray(c.theta_x),
    )
    assert got == want


def test_the_native_explanation_refuses_sizes_that_disagree() -> None:
    c = _explained(P.LinUCB()).columns()
    head = ("p", "k", "a", 1.0, "r")
    with pytest.raises(ValueError, match="5 statuses and 48 numbers for 6 arms"):
        wire.explanation_message(*head, c.arm_ids, c.status[:5], c.numbers)
    with pytest.raises(ValueError, match="6 statuses and 40 numbers for 6 arms"):
        wire.explanation_message(*head, c.arm_ids, c.status, c.numbers[:, :5])
    with pytest.raises(ValueError, match="5 values and 30 contributions for 6 arms over 4 slots"):
        wire.explanation_message(*head, *c[:3], c.slot_names[:4], c.x, c.theta_x)
    with pytest.raises(ValueError, match="2 rows of contributions for 6 arms"):
        wire.explanation_message(*head, *c[:3], per_arm=((), ()))


def test_an_explained_decision_answer_is_the_bytes_protobuf_would_write() -> None:
    e = _explained(P.LinUCB())
    scores = np.array([a.score for a in e.arms])
    d = Decision("dec-1", "router", ARM, e.propensity, e.columns().arm_ids, scores, 12.5, e)
    answer = cb.decision_answer(d, lambda a: cb.to_arm(a).SerializeToString())
    msg = _library_decision(d, cb.to_arm(ARM))
    msg.explanation.CopyFrom(cb.to_explanation(e))
    assert answer == msg.SerializeToString()
