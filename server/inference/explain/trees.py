"""Exact TreeSHAP for tree-ensemble ONNX graphs, read from their TreeEnsemble nodes.

``TreeExplainer.from_onnx`` accepts an output that is one column of an ai.onnx.ml
TreeEnsembleRegressor (aggregate SUM or AVERAGE), TreeEnsembleClassifier (the scores output) or
TreeEnsemble (opset 5) with post_transform NONE, reached from the graph's one float input
through Identity or Cast, and followed to the graph's output by Identity or Cast. MIN and MAX
aggregation and the LOGISTIC, SOFTMAX and PROBIT transforms are not additive in the output, so
such an output is ``None`` (KernelSHAP explains it), as is any other op on the way.

The trees become flat node arrays (``llmopt.native.treeshap``); each leaf holds its weight for
the chosen column (divided by the number of trees for AVERAGE). Node covers are the background
rows that reach each node, routed as onnxruntime routes them (a float32 input is compared in
float32; a NaN follows ``nodes_missing_value_tracks_true``), so the base value is the expected
output over the background and base + contributions is the prediction. The reading is checked
against onnxruntime on the background before it is used; a graph it disagrees with is ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import onnx

from llmopt import errors
from llmopt.inference.explain.linear import (
    FLOAT_TYPES,
    ML_DOMAIN,
    GraphInput,
    attributes,
    background_rows,
    check_output,
    column_count_problem,
    explained_rows,
    matches_onnxruntime,
    single_float_input,
)
from llmopt.native import treeshap  # type: ignore[attr-defined]  # compiled

MODES: dict[str, int] = treeshap.MODES
LEAF = MODES["LEAF"]
# TreeEnsemble (opset 5) codes: its nodes_modes tensor, aggregate_function, post_transform.
_V5_MODES = {
    0: "BRANCH_LEQ",
    1: "BRANCH_LT",
    2: "BRANCH_GTE",
    3: "BRANCH_GT",
    4: "BRANCH_EQ",
    5: "BRANCH_NEQ",
}
_V5_AGGREGATE = {0: "AVERAGE", 1: "SUM", 2: "MIN", 3: "MAX"}
_V5_POST = {0: "NONE", 1: "SOFTMAX", 2: "LOGISTIC", 3: "SOFTMAX_ZERO", 4: "PROBIT"}
_ENSEMBLES = {"TreeEnsembleRegressor", "TreeEnsembleClassifier", "TreeEnsemble"}


class NotAnEnsemble(Exception):
    """The output is not an additive column of a tree ensemble as this module reads them."""


@dataclass(frozen=True)
class Forest:
    """Every tree as flat node arrays (see ``llmopt.native.treeshap``), for one output column:
    column = sum of the trees' leaf values + ``offset``."""

    roots: np.ndarray  # int32, per tree
    true_child: np.ndarray  # int32, -1 at leaves
    false_child: np.ndarray  # int32
    feature: np.ndarray  # int32
    threshold: np.ndarray  # float64
    mode: np.ndarray  # int32
    missing_true: np.ndarray  # uint8
    value: np.ndarray  # float64, leaves only (0 elsewhere)
    offset: float
    max_depth: int

    @property
    def routing(self) -> tuple[np.ndarray, ...]:
        return (
            self.roots,
            self.true_child,
            self.false_child,
            self.feature,
            self.threshold,
            self.mode,
            self.missing_true,
        )

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return treeshap.predict(*self.routing, self.value, rows) + self.offset


# ------------------------------------------------------------------------------------------
# Reading the graph
# ------------------------------------------------------------------------------------------


def _producers(graph: onnx.GraphProto) -> dict[str, tuple[onnx.NodeProto, int]]:
    return {out: (node, slot) for node in graph.node for slot, out in enumerate(node.output)}


def _is_float_cast(node: onnx.NodeProto) -> bool:
    return node.op_type == "Cast" and attributes(node).get("to") in FLOAT_TYPES


def _ensemble_of(graph: onnx.GraphProto, output_name: str) -> tuple[onnx.NodeProto, int]:
    """The TreeEnsemble node and output slot behind ``output_name`` (through Identity/Cast)."""
    producers = _producers(graph)
    name = output_name
    while name in producers:
        node, slot = producers[name]
        if not node.domain and (node.op_type == "Identity" or _is_float_cast(node)):
            name = node.input[0]
            continue
        if node.domain == ML_DOMAIN and node.op_type in _ENSEMBLES:
            return node, slot
        break
    raise NotAnEnsemble(output_name)


def _input_type(graph: onnx.GraphProto, node: onnx.NodeProto, graph_input: GraphInput) -> type:
    """The numpy type the ensemble compares in: the graph input's, after any Casts between."""
    producers = _producers(graph)
    name, casts = node.input[0], []
    while name != graph_input.name:
        if name not in producers:
            raise NotAnEnsemble("the ensemble's input is not the graph's input")
        prev, _ = producers[name]
        if prev.domain or not (prev.op_type == "Identity" or _is_float_cast(prev)):
            raise NotAnEnsemble(f"{prev.op_type} between the input and the ensemble")
        if prev.op_type == "Cast":
            casts.append(FLOAT_TYPES[attributes(prev)["to"]])
        name = prev.input[0]
    # A float32 input, or a cast to float32 anywhere on the way, has rounded the values.
    if graph_input.dtype == np.float32 or np.float32 in casts:
        return np.float32
    return np.float64


@dataclass
class _Nodes:
    """One ensemble's node attributes in the older (opset 1 to 3) layout."""

    tree_ids: list[int]
    node_ids: list[int]
    features: list[int]
    thresholds: np.ndarray
    modes: list[str]
    true_ids: list[int]
    false_ids: list[int]
    missing_true: list[int]
    # (tree id, node id, column, weight) of each leaf weight
    weights: list[tuple[int, int, int, float]]


def _as_list(value: object) -> list[Any]:
    """An attribute's value (a list, a numpy tensor, or absent) as a flat list."""
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return list(value.reshape(-1).tolist())
    return list(value) if isinstance(value, list | tuple) else [value]


def _classic_nodes(attrs: dict[str, Any], prefix: str) -> _Nodes:
    tree_ids = _as_list(attrs.get("nodes_treeids"))
    count = len(tree_ids)
    thresholds = attrs.get("nodes_values_as_tensor")
    if thresholds is None:
        thresholds = attrs.get("nodes_values")
    weights = attrs.get(f"{prefix}_weights_as_tensor")
    if weights is None:
        weights = attrs.get(f"{prefix}_weights")
    missing = _as_list(attrs.get("nodes_missing_value_tracks_true")) or [0] * count
    nodes = _Nodes(
        tree_ids,
        _as_list(attrs.get("nodes_nodeids")),
        _as_list(attrs.get("nodes_featureids")),
        np.asarray(_as_list(thresholds), dtype=np.float64),
        [
            str(m.decode() if isinstance(m, bytes) else m)
            for m in _as_list(attrs.get("nodes_modes"))
        ],
        _as_list(attrs.get("nodes_truenodeids")),
        _as_list(attrs.get("nodes_falsenodeids")),
        missing,
        list(
            zip(
                _as_list(attrs.get(f"{prefix}_treeids")),
                _as_list(attrs.get(f"{prefix}_nodeids")),
                _as_list(attrs.get(f"{prefix}_ids")),
                _as_list(weights),
                strict=False,
            )
        ),
    )
    lengths = {
        len(nodes.node_ids),
        len(nodes.features),
        len(nodes.thresholds),
        len(nodes.modes),
        len(nodes.true_ids),
        len(nodes.false_ids),
        len(nodes.missing_true),
    }
    if lengths != {count} or count == 0:
        raise NotAnEnsemble("node attributes of different lengths")
    return nodes


def _flatten(nodes: _Nodes, column: int, scale: float, width: int) -> Forest:
    """Flat arrays of the trees, leaf values of ``column`` times ``scale``."""
    index = {(t, n): i for i, (t, n) in enumerate(zip(nodes.tree_ids, nodes.node_ids, strict=True))}
    if len(index) != len(nodes.tree_ids):
        raise NotAnEnsemble("a (tree, node) id repeats")
    size = len(index)
    true_child = np.full(size, -1, np.int32)
    false_child = np.full(size, -1, np.int32)
    mode = np.empty(size, np.int32)
    feature = np.zeros(size, np.int32)
    for i in range(size):
        name = nodes.modes[i]
        if name not in MODES:
            raise NotAnEnsemble(f"mode {name}")
        mode[i] = MODES[name]
        if mode[i] == LEAF:
            continue
        tree = nodes.tree_ids[i]
        try:
            true_child[i] = index[(tree, nodes.true_ids[i])]
            false_child[i] = index[(tree, nodes.false_ids[i])]
        except KeyError:
            raise NotAnEnsemble("a child id that is not a node of the tree") from None
        if not 0 <= nodes.features[i] < width:
            raise NotAnEnsemble("a feature id beyond the input")
        feature[i] = nodes.features[i]
    value = np.zeros(size, np.float64)
    for tree, node, target, weight in nodes.weights:
        leaf = index.get((tree, node))
        if leaf is None or mode[leaf] != LEAF:
            raise NotAnEnsemble("a weight on a node that is not a leaf")
        if target == column:
            value[leaf] += weight * scale
    children = set(true_child[true_child >= 0].tolist()) | set(
        false_child[false_child >= 0].tolist()
    )
    roots, depth = _finish(
        np.array([i for i in range(size) if i not in children], np.int32), true_child, false_child
    )
    return Forest(
        roots,
        true_child,
        false_child,
        feature,
        np.ascontiguousarray(nodes.thresholds),
        mode,
        np.asarray(nodes.missing_true, np.uint8),
        value,
        0.0,
        depth,
    )


def _finish(
    roots: np.ndarray, true_child: np.ndarray, false_child: np.ndarray
) -> tuple[np.ndarray, int]:
    """Splits whose two branches are the same node are skipped (pointers go straight to that
    node, in place); the roots after that and the most edges from a root to a leaf.
    NotAnEnsemble unless every node is reached at most once (a tree, no loops or sharing)."""

    def resolve(node: int) -> int:
        steps = 0
        while true_child[node] >= 0 and true_child[node] == false_child[node]:
            node = int(true_child[node])
            steps += 1
            if steps > len(true_child):
                raise NotAnEnsemble("the nodes loop")
        return node

    for i in range(len(true_child)):
        if true_child[i] >= 0:
            true_child[i] = resolve(int(true_child[i]))
            false_child[i] = resolve(int(false_child[i]))
    roots = np.array([resolve(int(r)) for r in roots], np.int32)
    seen = np.zeros(len(true_child), bool)
    deepest = 0
    stack = [(int(r), 0) for r in roots]
    while stack:
        node, depth = stack.pop()
        if seen[node]:
            raise NotAnEnsemble("a node reached twice")
        seen[node] = True
        deepest = max(deepest, depth)
        if true_child[node] >= 0:
            stack.append((int(true_child[node]), depth + 1))
            stack.append((int(false_child[node]), depth + 1))
    return roots, deepest


def _tree_count(nodes: _Nodes) -> int:
    return len(set(nodes.tree_ids))


def _regressor(attrs: dict[str, Any], column: int, width: int) -> tuple[Forest, int]:
    if attrs.get("post_transform", "NONE") != "NONE":
        raise NotAnEnsemble("post_transform")
    aggregate = attrs.get("aggregate_function", "SUM")
    if aggregate not in ("SUM", "AVERAGE"):
        raise NotAnEnsemble(f"aggregate_function {aggregate}")
    nodes = _classic_nodes(attrs, "target")
    columns = int(attrs.get("n_targets", 1))
    scale = 1.0 / _tree_count(nodes) if aggregate == "AVERAGE" else 1.0
    forest = _flatten(nodes, column, scale, width)
    base = _as_list(attrs.get("base_values_as_tensor")) or _as_list(attrs.get("base_values"))
    offset = float(base[column]) if column < len(base) else 0.0
    return _with_offset(forest, 1.0, offset), columns


def _classifier(attrs: dict[str, Any], column: int, width: int) -> tuple[Forest, int]:
    if attrs.get("post_transform", "NONE") != "NONE":
        raise NotAnEnsemble("post_transform")
    nodes = _classic_nodes(attrs, "class")
    labels = _as_list(attrs.get("classlabels_int64s")) or _as_list(attrs.get("classlabels_strings"))
    classes = len(labels)
    base = _as_list(attrs.get("base_values_as_tensor")) or _as_list(attrs.get("base_values"))
    used = {target for _, _, target, _ in nodes.weights}
    if classes == 2 and used == {0} and len(base) <= 1:
        # One score s for two classes: onnxruntime writes [1 - s, s] when every weight is
        # non-negative, else [-s, s].
        score = _flatten(nodes, 0, 1.0, width)
        s_offset = float(base[0]) if base else 0.0
        if column == 1:
            return _with_offset(score, 1.0, s_offset), classes
        positive = all(w >= 0 for _, _, _, w in nodes.weights)
        return _with_offset(score, -1.0, (1.0 if positive else 0.0) - s_offset), classes
    if classes == 2 and len(base) == 2:
        raise NotAnEnsemble("two classes with two base values")
    forest = _flatten(nodes, column, 1.0, width)
    offset = float(base[column]) if column < len(base) else 0.0
    return _with_offset(forest, 1.0, offset), max(classes, 1)


def _v5(attrs: dict[str, Any], column: int, width: int) -> tuple[Forest, int]:
    """TreeEnsemble (ai.onnx.ml opset 5): leaves are a separate list, children flagged as
    leaves by nodes_trueleafs / nodes_falseleafs."""
    if _V5_POST.get(int(attrs.get("post_transform", 0))) != "NONE":
        raise NotAnEnsemble("post_transform")
    aggregate = _V5_AGGREGATE.get(int(attrs.get("aggregate_function", 1)))
    if aggregate not in ("SUM", "AVERAGE"):
        raise NotAnEnsemble(f"aggregate_function {aggregate}")
    features = _as_list(attrs.get("nodes_featureids"))
    count = len(features)
    modes = _as_list(attrs.get("nodes_modes"))
    splits = np.asarray(_as_list(attrs.get("nodes_splits")), np.float64)
    true_ids = _as_list(attrs.get("nodes_truenodeids"))
    false_ids = _as_list(attrs.get("nodes_falsenodeids"))
    true_leaf = _as_list(attrs.get("nodes_trueleafs"))
    false_leaf = _as_list(attrs.get("nodes_falseleafs"))
    missing = _as_list(attrs.get("nodes_missing_value_tracks_true")) or [0] * count
    roots_in = _as_list(attrs.get("tree_roots"))
    leaf_targets = _as_list(attrs.get("leaf_targetids"))
    leaf_weights = _as_list(attrs.get("leaf_weights"))
    lengths = {
        len(modes),
        len(splits),
        len(true_ids),
        len(false_ids),
        len(true_leaf),
        len(false_leaf),
        len(missing),
    }
    if lengths != {count} or len(leaf_targets) != len(leaf_weights) or not roots_in:
        raise NotAnEnsemble("node attributes of different lengths")
    if any(m not in _V5_MODES for m in modes):
        raise NotAnEnsemble("a mode other than a comparison")
    leaves = len(leaf_weights)
    # Flat layout: the split nodes first, then the leaves. A tree that is one leaf has its
    # root as a split node whose both children are that leaf (as the operator defines it).
    size = count + leaves
    true_child = np.full(size, -1, np.int32)
    false_child = np.full(size, -1, np.int32)
    mode = np.full(size, LEAF, np.int32)
    feature = np.zeros(size, np.int32)
    threshold = np.zeros(size, np.float64)
    missing_true = np.zeros(size, np.uint8)
    for i in range(count):
        if not 0 <= features[i] < width:
            raise NotAnEnsemble("a feature id beyond the input")
        for target, ids, flags in (
            (true_child, true_ids, true_leaf),
            (false_child, false_ids, false_leaf),
        ):
            child = ids[i] + count if flags[i] else ids[i]
            if not 0 <= child < size:
                raise NotAnEnsemble("a child beyond the nodes")
            target[i] = child
        mode[i] = MODES[_V5_MODES[modes[i]]]
        feature[i] = features[i]
        threshold[i] = splits[i]
        missing_true[i] = 1 if missing[i] else 0
    value = np.zeros(size, np.float64)
    scale = 1.0 / len(roots_in) if aggregate == "AVERAGE" else 1.0
    for j in range(leaves):
        if leaf_targets[j] == column:
            value[count + j] = leaf_weights[j] * scale
    roots = np.asarray(roots_in, np.int32)
    if np.any((roots < 0) | (roots >= count)):
        raise NotAnEnsemble("a root beyond the nodes")
    roots, depth = _finish(roots, true_child, false_child)
    forest = Forest(
        roots, true_child, false_child, feature, threshold, mode, missing_true, value, 0.0, depth
    )
    return forest, int(attrs.get("n_targets", 1))


def _with_offset(forest: Forest, sign: float, offset: float) -> Forest:
    """The column ``sign * (trees) + offset``: the sign folded into the leaf values."""
    return replace(forest, value=forest.value * sign, offset=offset)


_READERS = {
    "TreeEnsembleRegressor": _regressor,
    "TreeEnsembleClassifier": _classifier,
    "TreeEnsemble": _v5,
}


def read_forest(
    model: onnx.ModelProto, graph_input: GraphInput, output_name: str, output_index: int
) -> tuple[Forest, type]:
    """The ensemble behind ``output_name`` as a Forest for column ``output_index``, and the
    numpy type it compares in; NotAnEnsemble when the output is not one this module reads."""
    node, slot = _ensemble_of(model.graph, output_name)
    if slot != (1 if node.op_type == "TreeEnsembleClassifier" else 0):
        raise NotAnEnsemble("the label output")
    compare_type = _input_type(model.graph, node, graph_input)
    forest, columns = _READERS[node.op_type](attributes(node), output_index, graph_input.width)
    problem = column_count_problem(output_index, columns)
    if problem is not None:
        raise problem
    return forest, compare_type


# ------------------------------------------------------------------------------------------
# The explainer
# ------------------------------------------------------------------------------------------


class TreeExplainer:
    """Exact path-dependent SHAP values of one output column of a tree ensemble, with node
    covers counted over the background; base + contributions = the prediction."""

    method: str = "tree_shap"

    def __init__(
        self,
        forest: Forest,
        cover: np.ndarray,
        compare_type: type,
        graph_input: GraphInput,
        background_rows: int,
    ) -> None:
        self.forest = forest
        self.cover = cover
        self.compare_type = compare_type
        self.graph_input = graph_input
        self.background_rows = background_rows
        leaves = forest.mode == LEAF
        self.base_value = float(
            np.sum(forest.value[leaves] * cover[leaves]) / background_rows + forest.offset
        )

    @classmethod
    def from_onnx(
        cls, model: onnx.ModelProto, background: np.ndarray, output_name: str, output_index: int
    ) -> TreeExplainer | None:
        """None when ``output_name`` is not a sum or average of TreeEnsemble trees."""
        check_output(model, output_name, output_index)
        graph_input = single_float_input(model, background)
        if graph_input is None:
            return None
        try:
            forest, compare_type = read_forest(model, graph_input, output_name, output_index)
        except NotAnEnsemble:
            return None
        rows = explained_rows(background_rows(background), graph_input.width, compare_type)
        if np.any(np.isinf(rows)):
            raise errors.FailedPrecondition("background: has infinite values")
        if not matches_onnxruntime(
            model,
            graph_input,
            output_name,
            output_index,
            rows,
            lambda x: forest.predict(x.astype(compare_type).astype(np.float64)),
        ):
            return None
        cover = treeshap.node_counts(*forest.routing, rows)
        return cls(forest, cover, compare_type, graph_input, len(rows))

    def explain(self, X: np.ndarray) -> tuple[np.ndarray, float]:
        """(contributions [n, m] float64, base_value) for rows ``X``."""
        rows = explained_rows(X, self.graph_input.width, self.compare_type)
        out = np.zeros_like(rows)
        f = self.forest
        treeshap.tree_shap(*f.routing, f.value, self.cover, f.max_depth, rows, out)
        return out, self.base_value
