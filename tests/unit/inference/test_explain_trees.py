"""Exact TreeSHAP of ONNX tree ensembles: against shap (a dev-only oracle) on scikit-learn models,
against a brute-force Shapley computation on hand-built ensembles, and against onnxruntime's
predictions (base + contributions = prediction)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.tree import DecisionTreeRegressor

from llmopt import errors
from llmopt.inference.explain.trees import TreeExplainer
from llmopt.native import treeshap

pytestmark = pytest.mark.kernels

FEATURES = 6


def _data(seed: int, rows: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    y = np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2] + 0.5 * X[:, 3] + 0.1 * rng.normal(size=rows)
    return X, y


def _run(model: onnx.ModelProto, X: np.ndarray, output: str) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.asarray(session.run([output], {name: X})[0], dtype=np.float64)


def _shap() -> Any:
    return pytest.importorskip("shap")


def _assert_sums_to_prediction(
    explainer: TreeExplainer, model: onnx.ModelProto, X: np.ndarray, output: str, column: int
) -> np.ndarray:
    contributions, base = explainer.explain(X)
    predicted = _run(model, X, output).reshape(len(X), -1)[:, column]
    scale = max(1.0, float(np.max(np.abs(predicted))))
    assert np.max(np.abs(base + contributions.sum(axis=1) - predicted)) <= 1e-6 * scale
    return contributions


@dataclass(frozen=True)
class Fitted:
    estimator: Any
    model: onnx.ModelProto
    X: np.ndarray


@pytest.fixture(scope="module")
def gbr() -> Fitted:
    X, y = _data(0)
    est = GradientBoostingRegressor(n_estimators=100, max_depth=6, random_state=0).fit(X, y)
    return Fitted(est, to_onnx(est, X[:1], target_opset=17), X)


@pytest.fixture(scope="module")
def forest() -> Fitted:
    X, y = _data(1)
    est = RandomForestRegressor(
        n_estimators=10, max_depth=5, bootstrap=False, max_features=0.5, random_state=1
    ).fit(X, y)
    return Fitted(est, to_onnx(est, X[:1], target_opset=17), X)


# ------------------------------------------------------------------------------------------
# scikit-learn models against shap, background = the training set
# ------------------------------------------------------------------------------------------


def _against_shap_on_training_set(fitted: Fitted, output: str, column: int | None) -> None:
    shap = _shap()
    X = fitted.X
    explainer = TreeExplainer.from_onnx(fitted.model, X, output, column or 0)
    assert explainer is not None and explainer.method == "tree_shap"
    rows = X[:40]
    ours = _assert_sums_to_prediction(explainer, fitted.model, rows, output, column or 0)
    oracle = shap.TreeExplainer(fitted.estimator, feature_perturbation="tree_path_dependent")
    expected = np.asarray(oracle.shap_values(rows.astype(np.float64)))
    expected_base = np.ravel(oracle.expected_value)
    if column is not None and expected.ndim == 3:
        expected, expected_base = expected[:, :, column], expected_base[column : column + 1]
    assert ours.shape == expected.shape == (len(rows), FEATURES)
    assert np.max(np.abs(ours - expected)) <= 1e-6
    assert explainer.explain(rows)[1] == pytest.approx(float(expected_base[0]), abs=1e-6)


def test_gradient_boosting_100_trees_depth_6_matches_shap(gbr: Fitted) -> None:
    _against_shap_on_training_set(gbr, "variable", None)


def test_random_forest_without_bootstrap_matches_shap(forest: Fitted) -> None:
    _against_shap_on_training_set(forest, "variable", None)


def test_decision_tree_matches_shap() -> None:
    X, y = _data(2)
    est = DecisionTreeRegressor(max_depth=7, random_state=0).fit(X, y)
    _against_shap_on_training_set(
        Fitted(est, to_onnx(est, X[:1], target_opset=17), X), "variable", None
    )


@pytest.mark.parametrize("classes", [2, 3])
def test_random_forest_classifier_probability_matches_shap(classes: int) -> None:
    X, y = _data(3)
    labels = np.digitize(y, np.quantile(y, np.linspace(0, 1, classes + 1)[1:-1]))
    est = RandomForestClassifier(
        n_estimators=8, max_depth=5, bootstrap=False, max_features=0.5, random_state=0
    ).fit(X, labels)
    model = to_onnx(est, X[:1], target_opset=17, options={"zipmap": False})
    for column in range(classes):
        _against_shap_on_training_set(Fitted(est, model, X), "probabilities", column)


# ------------------------------------------------------------------------------------------
# A background that is not the training set, against shap given the trees and covers
# ------------------------------------------------------------------------------------------


def _shap_tree(tree: Any, background: np.ndarray, scale: float, est: Any) -> dict[str, Any]:
    """A shap tree dict of one scikit-learn tree with node covers counted on ``background``
    (through scikit-learn's own decision_path), leaf values times ``scale``."""
    counts = np.asarray(est.decision_path(background).sum(axis=0), dtype=np.float64).ravel()
    values = tree.value[:, 0, :1] * scale
    values = values.astype(np.float64).copy()
    # Internal values: the cover-weighted mean of their children (shap reads the root's).
    for node in range(tree.node_count - 1, -1, -1):
        left, right = tree.children_left[node], tree.children_right[node]
        if left >= 0 and counts[node] > 0:
            values[node] = (values[left] * counts[left] + values[right] * counts[right]) / counts[
                node
            ]
    return {
        "children_left": tree.children_left.astype(np.int32),
        "children_right": tree.children_right.astype(np.int32),
        "children_default": tree.children_left.astype(np.int32),
        "features": tree.feature.astype(np.int32),
        # onnx keeps float32 thresholds; the rows are float32 too, so this is the same split.
        "thresholds": tree.threshold.astype(np.float32).astype(np.float64),
        "values": values,
        "node_sample_weight": counts,
    }


@pytest.fixture(scope="module")
def shallow() -> tuple[Fitted, Fitted]:
    """A forest and a boosted ensemble with leaves of 25 rows or more, so that a background
    drawn from another distribution still reaches every leaf (shap needs that)."""
    X, y = _data(6)
    rf = RandomForestRegressor(
        n_estimators=8,
        max_depth=4,
        min_samples_leaf=25,
        bootstrap=False,
        max_features=0.5,
        random_state=0,
    ).fit(X, y)
    gb = GradientBoostingRegressor(
        n_estimators=30, max_depth=3, min_samples_leaf=25, random_state=0
    ).fit(X, y)
    return (
        Fitted(rf, to_onnx(rf, X[:1], target_opset=17), X),
        Fitted(gb, to_onnx(gb, X[:1], target_opset=17), X),
    )


def _other_background() -> np.ndarray:
    rng = np.random.default_rng(9)
    return rng.normal(0.3, 1.3, size=(3000, FEATURES)).astype(np.float32)


def test_forest_with_another_background_matches_shap_given_the_same_covers(
    shallow: tuple[Fitted, Fitted],
) -> None:
    shap = _shap()
    fitted, background = shallow[0], _other_background()
    explainer = TreeExplainer.from_onnx(fitted.model, background, "variable", 0)
    assert explainer is not None
    est = fitted.estimator
    trees = [
        _shap_tree(t.tree_, background, 1.0 / len(est.estimators_), t) for t in est.estimators_
    ]
    # The covers are this background's, not the training set's.
    assert not np.allclose(
        trees[0]["node_sample_weight"] / len(background),
        est.estimators_[0].tree_.n_node_samples / len(fitted.X),
    )
    oracle = shap.TreeExplainer({"trees": trees}, feature_perturbation="tree_path_dependent")
    rows = fitted.X[:40]
    ours, base = explainer.explain(rows)
    expected = np.asarray(oracle.shap_values(rows.astype(np.float64)))
    assert np.max(np.abs(ours - expected)) <= 1e-6
    assert base == pytest.approx(float(np.ravel(oracle.expected_value)[0]), abs=1e-6)
    # The base is the mean prediction over this background.
    mean = float(np.mean(_run(fitted.model, background, "variable")))
    assert base == pytest.approx(mean, abs=1e-5)
    _assert_sums_to_prediction(explainer, fitted.model, rows, "variable", 0)


def test_boosting_with_another_background_matches_shap_given_the_same_covers(
    shallow: tuple[Fitted, Fitted],
) -> None:
    shap = _shap()
    fitted, background = shallow[1], _other_background()
    explainer = TreeExplainer.from_onnx(fitted.model, background, "variable", 0)
    assert explainer is not None
    est = fitted.estimator
    trees = [_shap_tree(t.tree_, background, est.learning_rate, t) for t in est.estimators_[:, 0]]
    oracle = shap.TreeExplainer(
        {"trees": trees, "base_offset": float(est.init_.constant_[0][0])},
        feature_perturbation="tree_path_dependent",
    )
    rows = fitted.X[:30]
    ours, base = explainer.explain(rows)
    assert np.max(np.abs(ours - np.asarray(oracle.shap_values(rows.astype(np.float64))))) <= 1e-6
    assert base == pytest.approx(float(np.ravel(oracle.expected_value)[0]), abs=1e-6)
    _assert_sums_to_prediction(explainer, fitted.model, rows, "variable", 0)


# ------------------------------------------------------------------------------------------
# Hand-built ensembles: every comparison mode, NaN routing, an unreached node
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    node_id: int
    mode: str = "LEAF"
    feature: int = 0
    threshold: float = 0.0
    true: int = 0
    false: int = 0
    missing_true: int = 0
    weight: float = 0.0


@dataclass
class Ensemble:
    trees: list[list[Node]]
    aggregate: str = "SUM"
    base: float = 0.0
    by_id: list[dict[int, Node]] = field(init=False)

    def __post_init__(self) -> None:
        self.by_id = [{n.node_id: n for n in tree} for tree in self.trees]

    def scale(self) -> float:
        return 1.0 / len(self.trees) if self.aggregate == "AVERAGE" else 1.0


def _goes_true(node: Node, x: float) -> bool:
    t = np.float32(node.threshold)
    if math.isnan(x):
        return bool(node.missing_true) or node.mode == "BRANCH_NEQ"
    return {
        "BRANCH_LEQ": x <= t,
        "BRANCH_LT": x < t,
        "BRANCH_GTE": x >= t,
        "BRANCH_GT": x > t,
        "BRANCH_EQ": x == t,
        "BRANCH_NEQ": x != t,
    }[node.mode]


def _counts(ens: Ensemble, background: np.ndarray) -> list[dict[int, float]]:
    counts: list[dict[int, float]] = [dict.fromkeys(t, 0.0) for t in ens.by_id]
    for tree, tree_counts in zip(ens.by_id, counts, strict=True):
        for row in background:
            node = tree[0]
            tree_counts[0] += 1
            while node.mode != "LEAF":
                node = tree[node.true if _goes_true(node, row[node.feature]) else node.false]
                tree_counts[node.node_id] += 1
    return counts


def _expectation(
    tree: dict[int, Node], cover: dict[int, float], node_id: int, x: np.ndarray, known: set[int]
) -> float:
    """E[tree | x_known], path-dependent: the row's branch on known features, else both weighted
    by their covers (halves at a node no background row reached)."""
    node = tree[node_id]
    if node.mode == "LEAF":
        return node.weight
    if node.feature in known:
        child = node.true if _goes_true(node, x[node.feature]) else node.false
        return _expectation(tree, cover, child, x, known)
    c = cover[node_id]
    wt, wf = (cover[node.true] / c, cover[node.false] / c) if c > 0 else (0.5, 0.5)
    return wt * _expectation(tree, cover, node.true, x, known) + wf * _expectation(
        tree, cover, node.false, x, known
    )


def _brute_force(ens: Ensemble, background: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, float]:
    counts = _counts(ens, background)
    m = len(x)

    def v(known: set[int]) -> float:
        total = sum(
            _expectation(tree, cover, 0, x, known)
            for tree, cover in zip(ens.by_id, counts, strict=True)
        )
        return total * ens.scale() + ens.base

    phi = np.zeros(m)
    for i in range(m):
        others = [j for j in range(m) if j != i]
        for size in range(m):
            weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
            for subset in itertools.combinations(others, size):
                phi[i] += weight * (v({*subset, i}) - v(set(subset)))
    return phi, v(set())


def _classic_model(ens: Ensemble, width: int) -> onnx.ModelProto:
    nodes = [(t, n) for t, tree in enumerate(ens.trees) for n in tree]
    leaves = [(t, n) for t, n in nodes if n.mode == "LEAF"]
    node = helper.make_node(
        "TreeEnsembleRegressor",
        ["X"],
        ["Y"],
        domain="ai.onnx.ml",
        n_targets=1,
        aggregate_function=ens.aggregate,
        base_values=[ens.base],
        post_transform="NONE",
        nodes_treeids=[t for t, _ in nodes],
        nodes_nodeids=[n.node_id for _, n in nodes],
        nodes_featureids=[n.feature for _, n in nodes],
        nodes_values=[n.threshold for _, n in nodes],
        nodes_modes=[n.mode for _, n in nodes],
        nodes_truenodeids=[n.true for _, n in nodes],
        nodes_falsenodeids=[n.false for _, n in nodes],
        nodes_missing_value_tracks_true=[n.missing_true for _, n in nodes],
        target_treeids=[t for t, _ in leaves],
        target_nodeids=[n.node_id for _, n in leaves],
        target_ids=[0] * len(leaves),
        target_weights=[n.weight for _, n in leaves],
    )
    return _model(node, width, ml_opset=3, opset=17)


def _v5_model(ens: Ensemble, width: int) -> onnx.ModelProto:
    """The same ensemble as the opset 5 TreeEnsemble: split nodes and leaves listed apart."""
    splits: list[Node] = []
    split_index: dict[tuple[int, int], int] = {}
    leaf_index: dict[tuple[int, int], int] = {}
    leaves: list[Node] = []
    for t, tree in enumerate(ens.trees):
        if len(tree) == 1:  # one leaf: a split whose two branches are that leaf (the op's rule)
            tree = [Node(0, "BRANCH_LEQ", 0, 0.0, -1, -1), Node(-1, weight=tree[0].weight)]
        for n in tree:
            if n.mode == "LEAF":
                leaf_index[(t, n.node_id)] = len(leaves)
                leaves.append(n)
            else:
                split_index[(t, n.node_id)] = len(splits)
                splits.append(n)
    owner = [t for t, _ in sorted(split_index, key=split_index.__getitem__)]
    codes = {
        "BRANCH_LEQ": 0,
        "BRANCH_LT": 1,
        "BRANCH_GTE": 2,
        "BRANCH_GT": 3,
        "BRANCH_EQ": 4,
        "BRANCH_NEQ": 5,
    }

    def child(t: int, node_id: int) -> tuple[int, int]:
        key = (t, node_id)
        return (leaf_index[key], 1) if key in leaf_index else (split_index[key], 0)

    trues = [child(t, n.true) for t, n in zip(owner, splits, strict=True)]
    falses = [child(t, n.false) for t, n in zip(owner, splits, strict=True)]
    node = helper.make_node(
        "TreeEnsemble",
        ["X"],
        ["Y"],
        domain="ai.onnx.ml",
        n_targets=1,
        aggregate_function=0 if ens.aggregate == "AVERAGE" else 1,
        post_transform=0,
        tree_roots=[split_index[(t, 0)] for t in range(len(ens.trees))],
        nodes_featureids=[n.feature for n in splits],
        nodes_splits=numpy_helper.from_array(np.array([n.threshold for n in splits], np.float32)),
        nodes_modes=numpy_helper.from_array(np.array([codes[n.mode] for n in splits], np.uint8)),
        nodes_truenodeids=[c for c, _ in trues],
        nodes_trueleafs=[f for _, f in trues],
        nodes_falsenodeids=[c for c, _ in falses],
        nodes_falseleafs=[f for _, f in falses],
        nodes_missing_value_tracks_true=[n.missing_true for n in splits],
        leaf_targetids=[0] * len(leaves),
        leaf_weights=numpy_helper.from_array(np.array([n.weight for n in leaves], np.float32)),
    )
    return _model(node, width, ml_opset=5, opset=21)


def _model(node: onnx.NodeProto, width: int, ml_opset: int, opset: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        [node],
        "trees",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("ai.onnx.ml", ml_opset)],
    )
    model.ir_version = 10 if ml_opset >= 5 else 8
    return model


def _hand_built(aggregate: str = "SUM", base: float = 0.0) -> Ensemble:
    leaf = Node
    return Ensemble(
        [
            [  # LT on a value the data sits on; NaN goes true at the root
                Node(0, "BRANCH_LT", 0, 1.0, 1, 2, missing_true=1),
                Node(1, "BRANCH_GTE", 1, 0.5, 3, 4),
                Node(2, "BRANCH_EQ", 2, 1.0, 5, 6),
                leaf(3, weight=1.5),
                leaf(4, weight=-2.0),
                Node(5, "BRANCH_GT", 3, 1.5, 7, 8, missing_true=1),
                leaf(6, weight=0.25),
                leaf(7, weight=4.0),
                leaf(8, weight=-1.0),
            ],
            [  # NEQ (NaN goes true), and a branch no background row reaches (x4 > 5)
                Node(0, "BRANCH_NEQ", 4, 1.0, 1, 2),
                Node(1, "BRANCH_GT", 2, 5.0, 3, 4),
                leaf(2, weight=3.0),
                Node(3, "BRANCH_LEQ", 0, 0.5, 5, 6),
                Node(4, "BRANCH_LEQ", 1, 1.0, 7, 8, missing_true=1),
                leaf(5, weight=-3.0),
                leaf(6, weight=6.0),
                leaf(7, weight=0.5),
                leaf(8, weight=2.0),
            ],
            [  # the same feature twice on one path; NaN goes false (missing_true 0)
                Node(0, "BRANCH_LEQ", 1, 1.0, 1, 2),
                Node(1, "BRANCH_GT", 1, 0.0, 3, 4),
                leaf(2, weight=-0.5),
                Node(3, "BRANCH_LT", 3, 1.0, 5, 6),
                leaf(4, weight=1.0),
                leaf(5, weight=2.5),
                leaf(6, weight=-4.0),
            ],
            [[leaf(0, weight=0.75)]][0],  # a tree that is one leaf
        ],
        aggregate,
        base,
    )


def _discrete_rows(seed: int, rows: int, width: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.choice(np.array([0.0, 0.5, 1.0, 1.5, 2.0], np.float32), size=(rows, width))
    X[rng.random(size=X.shape) < 0.15] = np.nan
    return X.astype(np.float32)


@pytest.mark.parametrize(
    ("layout", "aggregate", "base"),
    # The opset 5 TreeEnsemble has no base values.
    [
        ("classic", "SUM", 0.0),
        ("classic", "AVERAGE", 0.25),
        ("v5", "SUM", 0.0),
        ("v5", "AVERAGE", 0.0),
    ],
)
def test_hand_built_ensemble_matches_brute_force_shapley(
    layout: str, aggregate: str, base: float
) -> None:
    ens = _hand_built(aggregate, base)
    model = _v5_model(ens, 5) if layout == "v5" else _classic_model(ens, 5)
    background = _discrete_rows(0, 60)
    explainer = TreeExplainer.from_onnx(model, background, "Y", 0)
    assert explainer is not None
    rows = np.vstack([_discrete_rows(1, 25), [[np.nan, np.nan, 6.0, 1.5, 0.0]]]).astype(np.float32)
    ours, got_base = explainer.explain(rows)
    for row, phi in zip(rows, ours, strict=True):
        expected, expected_base = _brute_force(ens, background, row)
        assert np.max(np.abs(phi - expected)) <= 1e-12
        assert got_base == pytest.approx(expected_base, abs=1e-12)
    _assert_sums_to_prediction(explainer, model, rows, "Y", 0)


def test_a_feature_no_split_uses_gets_nothing() -> None:
    ens = _hand_built()
    model = _classic_model(ens, 7)  # columns 5 and 6 exist but no tree reads them
    rows = np.hstack([_discrete_rows(2, 10), np.ones((10, 2), np.float32)])
    explainer = TreeExplainer.from_onnx(
        model, np.hstack([_discrete_rows(3, 40), np.zeros((40, 2), np.float32)]), "Y", 0
    )
    assert explainer is not None
    contributions, _ = explainer.explain(rows)
    assert np.all(contributions[:, 5:] == 0.0)
    assert np.any(contributions[:, :5] != 0.0)


# ------------------------------------------------------------------------------------------
# What is not an additive tree ensemble, and bad input
# ------------------------------------------------------------------------------------------


def test_logistic_post_transform_and_labels_are_not_explained_exactly() -> None:
    X, y = _data(5)
    est = GradientBoostingClassifier(n_estimators=5, max_depth=2).fit(X, y > 0)
    model = to_onnx(est, X[:1], target_opset=17, options={"zipmap": False})
    assert TreeExplainer.from_onnx(model, X, "probabilities", 1) is None
    assert TreeExplainer.from_onnx(model, X, "label", 0) is None


def test_min_aggregation_and_non_tree_graphs_are_none(forest: Fitted) -> None:
    model = _classic_model(_hand_built(), 5)
    for attr in model.graph.node[0].attribute:
        if attr.name == "aggregate_function":
            attr.s = b"MIN"
    assert TreeExplainer.from_onnx(model, _discrete_rows(0, 20), "Y", 0) is None
    weights = numpy_helper.from_array(np.ones((FEATURES, 1), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "linear",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, FEATURES])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])],
        [weights],
    )
    linear = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    linear.ir_version = 8
    assert TreeExplainer.from_onnx(linear, forest.X, "Y", 0) is None


def test_a_double_input_cast_to_float_is_compared_in_float32(forest: Fitted) -> None:
    """A double input cast to float before the trees: rows are rounded to float32 first, as
    onnxruntime rounds them, so a value just under a float32 threshold routes the same way."""
    model = onnx.ModelProto()
    model.CopyFrom(forest.model)
    tree = model.graph.node[0]
    cast = helper.make_node("Cast", [tree.input[0]], ["as_float"], to=TensorProto.FLOAT)
    tree.input[0] = "as_float"
    model.graph.node.insert(0, cast)
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    explainer = TreeExplainer.from_onnx(model, forest.X, "variable", 0)
    plain = TreeExplainer.from_onnx(forest.model, forest.X, "variable", 0)
    assert explainer is not None and plain is not None
    # Rows that sit within float32 rounding of the thresholds the trees split on.
    f = explainer.forest
    splits = f.mode != treeshap.MODES["LEAF"]
    rows = np.tile(forest.X[:1].astype(np.float64), (40, 1))
    for i, node in enumerate(np.flatnonzero(splits)[:40]):
        t = f.threshold[node]
        rows[i, f.feature[node]] = t + (1 if i % 2 else -1) * abs(t) * 2e-8
    ours, base = explainer.explain(rows)
    np.testing.assert_array_equal(ours, plain.explain(rows.astype(np.float32))[0])
    predicted = _run(model, rows, "variable")[:, 0]
    assert np.max(np.abs(base + ours.sum(axis=1) - predicted)) <= 1e-6 * max(
        1.0, float(np.max(np.abs(predicted)))
    )


def test_bad_rows_background_and_output_raise(forest: Fitted) -> None:
    explainer = TreeExplainer.from_onnx(forest.model, forest.X, "variable", 0)
    assert explainer is not None
    with pytest.raises(errors.InvalidArgument, match="inputs"):
        explainer.explain(forest.X[:, :3])
    with pytest.raises(errors.InvalidArgument, match="inputs"):
        explainer.explain(np.array(["a"] * FEATURES).reshape(1, -1))
    with pytest.raises(errors.FailedPrecondition, match="background"):
        TreeExplainer.from_onnx(forest.model, np.zeros((0, FEATURES)), "variable", 0)
    with pytest.raises(errors.FailedPrecondition, match="background"):
        TreeExplainer.from_onnx(forest.model, np.zeros((5, 2)), "variable", 0)
    with pytest.raises(errors.InvalidArgument, match="output_name"):
        TreeExplainer.from_onnx(forest.model, forest.X, "nope", 0)
    with pytest.raises(errors.InvalidArgument, match="output_index"):
        TreeExplainer.from_onnx(forest.model, forest.X, "variable", 1)


def test_kernel_counts_and_predicts_like_onnxruntime(forest: Fitted) -> None:
    explainer = TreeExplainer.from_onnx(forest.model, forest.X, "variable", 0)
    assert explainer is not None
    f = explainer.forest
    rows = forest.X.astype(np.float64)
    counts = treeshap.node_counts(*f.routing, rows)
    assert np.all(counts[f.roots] == len(rows))
    leaves = f.mode == treeshap.MODES["LEAF"]
    assert counts[leaves].sum() == len(rows) * len(f.roots)
    np.testing.assert_allclose(
        f.predict(rows), _run(forest.model, forest.X, "variable")[:, 0], rtol=1e-5, atol=1e-5
    )
