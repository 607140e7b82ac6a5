# cython: language_level=3
"""Exact path-dependent TreeSHAP over flat arrays of tree ensembles.

The trees of an ensemble are laid out as one set of node arrays (``llmopt.inference.explain.
trees`` builds them from an ONNX TreeEnsemble node): for node ``j``, ``true_child[j]`` and
``false_child[j]`` (-1 at a leaf), ``feature[j]``, ``threshold[j]``, ``mode[j]`` (one of the
``MODE_*`` codes below, ``MODE_LEAF`` at a leaf), ``missing_true[j]`` (1: a NaN goes to the true
child), ``value[j]`` (a leaf's output, already scaled), ``cover[j]`` (background rows reaching
the node). ``roots`` holds each tree's root index.

A row goes to the true child when ``x <mode> threshold`` holds, or when it is NaN and the node's
``missing_true`` is set, as onnxruntime routes it.

``tree_shap`` is the polynomial-time algorithm of Lundberg, Erion and Lee (2018), "Consistent
individualized feature attribution for tree ensembles", Algorithm 2: one recursion per tree that
carries the path of unique features met so far, each with the fraction of background rows that
follow the path when the feature is unknown (``zero``), whether the explained row follows it
(``one``), and the permutation weights of every subset size, grown by ``_extend`` and shrunk by
``_unwind``. The conditional expectation of a tree given a subset S of known features is the
path-dependent one: at a split on a feature in S, the row's branch; otherwise both branches,
weighted by their covers. A node that no background row reached splits its weight evenly.
"""

from libc.math cimport isnan
from libc.stdlib cimport free, malloc
from libc.stdint cimport int32_t, uint8_t

import numpy as np

# Comparison codes (kept in sync with llmopt.inference.explain.trees).
cdef enum:
    MODE_LEQ = 0
    MODE_LT = 1
    MODE_GTE = 2
    MODE_GT = 3
    MODE_EQ = 4
    MODE_NEQ = 5
    MODE_LEAF = 6

MODES = {"BRANCH_LEQ": MODE_LEQ, "BRANCH_LT": MODE_LT, "BRANCH_GTE": MODE_GTE,
         "BRANCH_GT": MODE_GT, "BRANCH_EQ": MODE_EQ, "BRANCH_NEQ": MODE_NEQ, "LEAF": MODE_LEAF}


cdef struct PathElement:
    int feature       # -1 for the dummy element that starts every path
    double zero       # fraction of background rows that follow the path, feature unknown
    double one        # 1 when the explained row follows the path, else 0
    double weight     # permutation weight of subsets of this size


cdef struct Tree:
    const int32_t* true_child
    const int32_t* false_child
    const int32_t* feature
    const double* threshold
    const int32_t* mode
    const uint8_t* missing_true
    const double* value
    const double* cover
    const double* inv     # inv[k] = 1 / k for k in 1..max_depth + 2: multiplies, not divides


cdef inline bint _goes_true(double x, double t, int mode, bint missing_true) noexcept nogil:
    cdef bint hit
    if mode == MODE_LEQ:
        hit = x <= t
    elif mode == MODE_LT:
        hit = x < t
    elif mode == MODE_GTE:
        hit = x >= t
    elif mode == MODE_GT:
        hit = x > t
    elif mode == MODE_EQ:
        hit = x == t
    else:
        hit = x != t
    return hit or (missing_true and isnan(x))


cdef inline int _next(const Tree* tree, int node, const double* row) noexcept nogil:
    if _goes_true(row[tree.feature[node]], tree.threshold[node], tree.mode[node],
                  tree.missing_true[node]):
        return tree.true_child[node]
    return tree.false_child[node]


cdef void _extend(PathElement* path, int depth, double zero, double one, int feature,
                  const double* inv) noexcept nogil:
    """Append (feature, zero, one) as element ``depth`` of a path of ``depth`` elements."""
    cdef int i
    cdef double step = inv[depth + 1]
    path[depth].feature = feature
    path[depth].zero = zero
    path[depth].one = one
    path[depth].weight = 1.0 if depth == 0 else 0.0
    for i in range(depth - 1, -1, -1):
        path[i + 1].weight += one * path[i].weight * (i + 1) * step
        path[i].weight = zero * path[i].weight * (depth - i) * step


cdef void _unwind(PathElement* path, int depth, int index, const double* inv) noexcept nogil:
    """Remove element ``index`` of a path whose last element is ``depth``, undoing its extend."""
    cdef int j
    cdef double one = path[index].one
    cdef double zero = path[index].zero
    cdef double carry = path[depth].weight
    cdef double kept, grow, shrink
    if one != 0.0:
        grow = (depth + 1) / one
        shrink = zero * inv[depth + 1]
        for j in range(depth - 1, -1, -1):
            kept = path[j].weight
            path[j].weight = carry * grow * inv[j + 1]
            carry = kept - path[j].weight * shrink * (depth - j)
    else:
        grow = (depth + 1) / zero
        for j in range(depth - 1, -1, -1):
            path[j].weight = path[j].weight * grow * inv[depth - j]
    for j in range(index, depth):
        path[j].feature = path[j + 1].feature
        path[j].zero = path[j + 1].zero
        path[j].one = path[j + 1].one


cdef double _unwound_sum(const PathElement* path, int depth, int index,
                         const double* inv) noexcept nogil:
    """The sum of the weights the path would have after ``_unwind(path, depth, index)``."""
    cdef int j
    cdef double one = path[index].one
    cdef double zero = path[index].zero
    cdef double carry = path[depth].weight
    cdef double w, grow, shrink, total = 0.0
    if one != 0.0:
        grow = (depth + 1) / one
        shrink = zero * inv[depth + 1]
        for j in range(depth - 1, -1, -1):
            w = carry * grow * inv[j + 1]
            total += w
            carry = path[j].weight - w * shrink * (depth - j)
    else:
        grow = (depth + 1) / zero
        for j in range(depth - 1, -1, -1):
            total += path[j].weight * inv[depth - j]
        total *= grow
    return total


cdef void _recurse(const Tree* tree, int node, const double* row, double* phi,
                   PathElement* parent, int depth, double zero, double one,
                   int feature) noexcept nogil:
    """One node of the recursion: ``parent`` holds the path so far (``depth`` elements);
    this node's path is written right after it, so each level keeps its own copy."""
    cdef PathElement* path = parent + depth
    cdef int i, hot, cold, split, k
    cdef double incoming_zero = 1.0, incoming_one = 1.0, cover, hot_zero, cold_zero
    for i in range(depth):
        path[i] = parent[i]
    _extend(path, depth, zero, one, feature, tree.inv)
    if tree.mode[node] == MODE_LEAF:
        for i in range(1, depth + 1):
            phi[path[i].feature] += (
                _unwound_sum(path, depth, i, tree.inv) * (path[i].one - path[i].zero) * tree.value[node]
            )
        return
    split = tree.feature[node]
    hot = _next(tree, node, row)
    cold = tree.false_child[node] if hot == tree.true_child[node] else tree.true_child[node]
    k = -1
    for i in range(1, depth + 1):
        if path[i].feature == split:
            k = i
            break
    if k >= 0:
        incoming_zero = path[k].zero
        incoming_one = path[k].one
        _unwind(path, depth, k, tree.inv)
        depth -= 1
    cover = tree.cover[node]
    if cover > 0.0:
        hot_zero = tree.cover[hot] / cover
        cold_zero = tree.cover[cold] / cover
    else:
        hot_zero = cold_zero = 0.5
    # A branch that neither the background (zero) nor the row (one) takes adds nothing; its
    # element could not be unwound either.
    if incoming_zero * hot_zero > 0.0 or incoming_one > 0.0:
        _recurse(tree, hot, row, phi, path, depth + 1, incoming_zero * hot_zero, incoming_one,
                 split)
    if incoming_zero * cold_zero > 0.0:
        _recurse(tree, cold, row, phi, path, depth + 1, incoming_zero * cold_zero, 0.0, split)


cdef Tree _routing(const int32_t[::1] true_child, const int32_t[::1] false_child,
                   const int32_t[::1] feature, const double[::1] threshold,
                   const int32_t[::1] mode, const uint8_t[::1] missing_true):
    """A Tree over the (non-empty) node arrays that route a row; value, cover and inv unset."""
    cdef Tree tree
    tree.true_child = &true_child[0]
    tree.false_child = &false_child[0]
    tree.feature = &feature[0]
    tree.threshold = &threshold[0]
    tree.mode = &mode[0]
    tree.missing_true = &missing_true[0]
    tree.value = NULL
    tree.cover = NULL
    tree.inv = NULL
    return tree


def tree_shap(const int32_t[::1] roots, const int32_t[::1] true_child,
              const int32_t[::1] false_child, const int32_t[::1] feature,
              const double[::1] threshold, const int32_t[::1] mode,
              const uint8_t[::1] missing_true, const double[::1] value,
              const double[::1] cover, int max_depth, const double[:, ::1] X,
              double[:, ::1] out):
    """Add each row's exact path-dependent SHAP values, summed over the trees, to ``out``
    (rows x features, zeroed by the caller). ``max_depth``: the most edges from a root to a
    leaf. Features and children must be valid indices (the caller checks the layout)."""
    cdef Tree tree
    cdef Py_ssize_t r, t, n_rows = X.shape[0]
    cdef Py_ssize_t k, size = (max_depth + 2) * (max_depth + 3) // 2
    cdef PathElement* paths
    cdef double* inv
    if X.shape[1] != out.shape[1] or X.shape[0] != out.shape[0]:
        raise ValueError("X and out must have the same shape")
    if true_child.shape[0] == 0:
        return
    tree = _routing(true_child, false_child, feature, threshold, mode, missing_true)
    tree.value = &value[0]
    tree.cover = &cover[0]
    if max_depth < 0:
        raise ValueError("max_depth must not be negative")
    paths = <PathElement*>malloc(size * sizeof(PathElement))
    inv = <double*>malloc((max_depth + 3) * sizeof(double))
    if paths == NULL or inv == NULL:
        free(paths)
        free(inv)
        raise MemoryError()
    inv[0] = 0.0
    for k in range(1, max_depth + 3):
        inv[k] = 1.0 / k
    tree.inv = inv
    try:
        with nogil:
            for r in range(n_rows):
                for t in range(roots.shape[0]):
                    _recurse(&tree, roots[t], &X[r, 0], &out[r, 0], paths, 0, 1.0, 1.0, -1)
    finally:
        free(paths)
        free(inv)


def node_counts(const int32_t[::1] roots, const int32_t[::1] true_child,
                const int32_t[::1] false_child, const int32_t[::1] feature,
                const double[::1] threshold, const int32_t[::1] mode,
                const uint8_t[::1] missing_true, const double[:, ::1] X):
    """How many rows of ``X`` reach each node (float64, one per node)."""
    cdef Tree tree
    cdef Py_ssize_t r, t, n_rows = X.shape[0]
    cdef int node
    counts = np.zeros(true_child.shape[0], dtype=np.float64)
    cdef double[::1] c = counts
    if true_child.shape[0] == 0:
        return counts
    tree = _routing(true_child, false_child, feature, threshold, mode, missing_true)
    with nogil:
        for r in range(n_rows):
            for t in range(roots.shape[0]):
                node = roots[t]
                c[node] += 1.0
                while tree.mode[node] != MODE_LEAF:
                    node = _next(&tree, node, &X[r, 0])
                    c[node] += 1.0
    return counts


def predict(const int32_t[::1] roots, const int32_t[::1] true_child,
            const int32_t[::1] false_child, const int32_t[::1] feature,
            const double[::1] threshold, const int32_t[::1] mode,
            const uint8_t[::1] missing_true, const double[::1] value,
            const double[:, ::1] X):
    """The sum over the trees of each row's leaf value (float64, one per row)."""
    cdef Tree tree
    cdef Py_ssize_t r, t, n_rows = X.shape[0]
    cdef int node
    cdef double acc
    result = np.zeros(n_rows, dtype=np.float64)
    cdef double[::1] res = result
    if true_child.shape[0] == 0:
        return result
    tree = _routing(true_child, false_child, feature, threshold, mode, missing_true)
    with nogil:
        for r in range(n_rows):
            acc = 0.0
            for t in range(roots.shape[0]):
                node = roots[t]
                while tree.mode[node] != MODE_LEAF:
                    node = _next(&tree, node, &X[r, 0])
                acc += value[node]
            res[r] = acc
    return result
