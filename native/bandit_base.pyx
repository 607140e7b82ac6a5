# cython: language_level=3
"""Bandit kernels, shared part: the ``Kernel`` base class and the selection helpers.

One ``cdef class`` per policy (``llmopt.native.bandit_free``, ``llmopt.native.bandit_linear``) holds that
policy's learned arrays (bound as memoryviews) and the ``bitgen_t`` of a ``numpy.random.PCG64``;
randomness comes from numpy's C distributions (``random_standard_uniform``,
``random_standard_normal``, ``random_beta``). The per-slot work runs in ``nogil`` C functions with
no Python object touched inside a loop. The Python entry points do not release the GIL around
them: a selection takes a few microseconds, less than re-acquiring a contended GIL costs.

``llmopt.bandits.policies`` documents the maths; ``tests/unit/bandits/reference.py`` is the plain
numpy version that the tests compare these kernels against, draw for draw. The RNG draw order is
part of the contract: changing it changes every seeded run.
"""

cimport numpy as cnp
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_IsValid
from libc.math cimport INFINITY, NAN, isfinite
from numpy.random cimport bitgen_t
from numpy.random.c_distributions cimport random_standard_normal, random_standard_uniform

import numpy as np

cnp.import_array()

cdef const char* _CAPSULE = "BitGenerator"
cdef double PRUNE_SD = 5.0


# ------------------------------------------------------------------------------------------
# Shared nogil helpers
# ------------------------------------------------------------------------------------------

cdef Py_ssize_t _uniform_index(bitgen_t* rng, Py_ssize_t m) noexcept nogil:
    """A uniform index in [0, m) from one standard uniform draw."""
    cdef Py_ssize_t j = <Py_ssize_t>(random_standard_uniform(rng) * m)
    return m - 1 if j >= m else j


cdef Py_ssize_t _argmax_ties(const double* s, const unsigned char* allowed, Py_ssize_t k,
                             bitgen_t* rng, Py_ssize_t* tied, double* propensity) noexcept nogil:
    """Best allowed slot, ties broken uniformly (one uniform draw only when several tie).
    Writes 1 / number tied to ``propensity``; returns -1 when no slot is allowed."""
    cdef Py_ssize_t i, n_tied = 0
    cdef double best = -INFINITY, v
    for i in range(k):
        if not allowed[i]:
            continue
        v = s[i]
        if n_tied == 0 or v > best:
            best = v
            tied[0] = i
            n_tied = 1
        elif v == best:
            tied[n_tied] = i
            n_tied += 1
    if n_tied == 0:
        propensity[0] = NAN
        return -1
    propensity[0] = 1.0 / n_tied
    if n_tied == 1:
        return tied[0]
    return tied[_uniform_index(rng, n_tied)]


cdef Py_ssize_t _first_argmax(const double* s, const unsigned char* allowed,
                              Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t i, best_i = -1
    cdef double best = -INFINITY
    for i in range(k):
        if allowed[i] and (best_i < 0 or s[i] > best):
            best = s[i]
            best_i = i
    return best_i


cdef double _normal_propensity(const double* mean, const double* sd,
                               const unsigned char* allowed, Py_ssize_t k, Py_ssize_t chosen,
                               Py_ssize_t rounds, bitgen_t* rng, double* work) noexcept nogil:
    """Monte-Carlo propensity: ``rounds`` rounds of one N(mean_i, sd_i^2) draw per contending
    slot (slot order), in antithetic pairs (the second round of a pair negates the first's
    standard normals: half the draws, each round still exact); returns
    (1 + rounds the chosen slot wins) / (1 + rounds).

    A slot contends when it is the chosen one or when its ``mean + 5 sd`` reaches the chosen
    slot's ``mean - 5 sd``; the others beat the chosen slot's draw with probability below 6e-7
    and are not drawn (``work`` holds k flags, k draws and k normals)."""
    cdef Py_ssize_t r, i, wins = 0
    cdef double floor = mean[chosen] - PRUNE_SD * sd[chosen]
    cdef unsigned char* contend = <unsigned char*>work
    cdef double* draw = &work[k]
    cdef double* z = &work[2 * k]
    for i in range(k):
        contend[i] = allowed[i] and (i == chosen or mean[i] + PRUNE_SD * sd[i] >= floor)
    for r in range(0, rounds, 2):
        for i in range(k):
            if contend[i]:
                z[i] = random_standard_normal(rng)
                draw[i] = mean[i] + sd[i] * z[i]
        if _first_argmax(draw, contend, k) == chosen:
            wins += 1
        if r + 1 < rounds:  # the antithetic round: the same normals, negated
            for i in range(k):
                if contend[i]:
                    draw[i] = mean[i] - sd[i] * z[i]
            if _first_argmax(draw, contend, k) == chosen:
                wins += 1
    return (1.0 + wins) / (1.0 + rounds)


cdef void _tie_probability(const double* s, const unsigned char* allowed, Py_ssize_t k,
                           double* probability) noexcept nogil:
    """An index policy's choice probabilities: 1 / ties for the allowed slots tied at the
    maximum of ``s``, 0 for every other slot (what ``_argmax_ties`` draws from)."""
    cdef Py_ssize_t i, n_tied = 0
    cdef double best = -INFINITY
    cdef bint any_ = False
    for i in range(k):
        if allowed[i] and (not any_ or s[i] > best):
            best = s[i]
            any_ = True
    for i in range(k):
        if allowed[i] and s[i] == best:
            n_tied += 1
    for i in range(k):
        probability[i] = (1.0 / n_tied) if allowed[i] and s[i] == best else 0.0


EXPLAIN_ROWS = ("exploitation", "exploration", "mean", "posterior_mean", "posterior_sd",
                "probability", "pulls")
"""The per-slot arrays of ``Kernel.explain``, in the order of the ``EX_*`` rows."""


# ------------------------------------------------------------------------------------------
# Base kernel
# ------------------------------------------------------------------------------------------

cdef class Kernel:
    """Slots, masks, scores and the generator; subclasses add their arrays and maths.

    State is a dict of float64 arrays: ``per_arm`` names (first axis = slot, grown by
    ``add_arm`` with the subclass's cold values) and global names, plus the generator state.
    """

    def __init__(self, Py_ssize_t n_arms, Py_ssize_t dim, bit_generator):
        if n_arms < 0 or dim < 1:
            raise ValueError(f"n_arms must be >= 0 and dim >= 1, got {n_arms}, {dim}")
        capsule = bit_generator.capsule
        if not PyCapsule_IsValid(capsule, _CAPSULE):
            raise ValueError("bit_generator must be a numpy BitGenerator")
        self.bit_generator = bit_generator
        self.rng = <bitgen_t*>PyCapsule_GetPointer(capsule, _CAPSULE)
        self.k = n_arms
        self.dim = dim
        arrays = dict(self._globals())
        cold = self._cold(n_arms)
        self.per_arm = tuple(cold)
        arrays.update(cold)
        self._install(arrays)

    # --- to override -----------------------------------------------------------------------

    def _cold(self, Py_ssize_t n):
        """Per-slot arrays for ``n`` cold slots (first axis n)."""
        return {}

    def _globals(self):
        """Arrays that are not per slot (counters, shared matrices)."""
        return {}

    cdef void _bind(self):
        pass

    cdef Py_ssize_t _select(self, const double* x, const unsigned char* allowed, double* scores,
                            double* propensity) noexcept nogil:
        return -1

    cdef void _update(self, Py_ssize_t arm, double reward, const double* x,
                      double propensity) noexcept nogil:
        pass

    cdef void _explain(self, const double* x, const unsigned char* allowed, const double* scores,
                       Py_ssize_t arm, double propensity, double* out,
                       double* theta_x) noexcept nogil:
        """Write the explanation of ``scores`` into ``out`` (``EX_ROWS`` rows of k, row-major,
        NaN on entry) and, for contextual kernels, theta_i x_i into ``theta_x`` (k x dim, NaN on
        entry). Runs right after ``_select`` on the same state; may use ``work``."""
        pass

    def _explain_extras(self, dict explanation):
        """Add policy-wide values to an explanation (epsilon-greedy: the epsilon it drew with)."""
        pass

    def _estimates(self, const unsigned char[::1] allowed):
        """The learned estimates per slot (see ``estimates``); ``allowed`` is a uint8 mask."""
        nan = np.full(self.k, np.nan)
        return {"pulls": nan, "mean": nan.copy(), "sd": nan.copy()}

    # --- shared machinery ------------------------------------------------------------------

    cdef _install(self, dict arrays):
        self.arrays = arrays
        self.tied = np.zeros(max(self.k, 1), dtype=np.intp)
        self.work = np.zeros(self._work_size(), dtype=np.float64)
        self._bind()

    def _work_size(self):
        """Doubles of scratch space the kernels need (per-slot means, sds, flags and draws)."""
        return 5 * max(self.k, 1)

    @property
    def n_arms(self):
        return self.k

    def add_selections(self, Py_ssize_t n):
        """Count ``n`` selections made after the state was saved (their decisions are in the log;
        a restart after kill -9 calls this). Only selection-driven state moves; none by default."""
        pass

    def add_arm(self):
        cold = self._cold(1)
        arrays = dict(self.arrays)
        for name in self.per_arm:
            arrays[name] = np.concatenate([arrays[name], cold[name]])
        self.k += 1
        self._install(arrays)
        return self.k - 1

    def get_state(self):
        state = {name: np.array(a, copy=True) for name, a in self.arrays.items()}
        state["n_arms"] = self.k
        state["dim"] = self.dim
        state["rng"] = self.bit_generator.state
        return state

    def set_state(self, dict state):
        k = int(state["n_arms"])
        if int(state["dim"]) != self.dim:
            raise ValueError(f"dim is {state['dim']}, this policy has {self.dim}")
        cold = self._cold(k)
        arrays = dict(self._globals())
        arrays.update(cold)
        for name, template in arrays.items():
            value = np.array(state[name], dtype=np.float64, copy=True, order="C")
            if value.shape != template.shape:
                raise ValueError(f"{name} has shape {value.shape}, expected {template.shape}")
            arrays[name] = value
        self.bit_generator.state = state["rng"]
        self.k = k
        self._install(arrays)

    cdef const unsigned char* _mask(self, cnp.ndarray allowed) except NULL:
        if (cnp.PyArray_NDIM(allowed) != 1 or cnp.PyArray_DIM(allowed, 0) != self.k
                or cnp.PyArray_ITEMSIZE(allowed) != 1 or not cnp.PyArray_IS_C_CONTIGUOUS(allowed)
                or cnp.PyArray_TYPE(allowed) not in (cnp.NPY_UINT8, cnp.NPY_BOOL)):
            raise ValueError(
                f"allowed: must be a contiguous uint8 mask of length {self.k}")
        return <const unsigned char*>cnp.PyArray_DATA(allowed)

    cdef const double* _context(self, object x) except? NULL:
        return NULL

    def select(self, x, cnp.ndarray allowed not None):
        """(slot, propensity, scores) for this context; slot -1 when nothing is allowed."""
        cdef const unsigned char* mask = self._mask(allowed)
        cdef const double* xp = self._context(x)
        cdef cnp.npy_intp n = self.k
        cdef cnp.ndarray scores = cnp.PyArray_EMPTY(1, &n, cnp.NPY_DOUBLE, 0)
        cdef double* sp = <double*>cnp.PyArray_DATA(scores)
        cdef double propensity = NAN
        cdef Py_ssize_t i, arm
        for i in range(self.k):
            sp[i] = NAN
        arm = self._select(xp, mask, sp, &propensity)
        return arm, propensity, scores

    def explain(self, x, cnp.ndarray allowed not None, cnp.ndarray scores not None,
                Py_ssize_t arm=-1, double propensity=NAN):
        """Why ``select(x, allowed)`` scored what it did: called right after that select, on the
        same state, with its ``scores`` (and its chosen ``arm`` and ``propensity``).

        Returns per-slot float64 arrays (``EXPLAIN_ROWS``): ``exploitation`` and ``exploration``
        (summing to the score of every allowed slot; NaN for the others), ``mean`` (the arm's
        mean estimate, or theta . x), ``posterior_mean`` and ``posterior_sd`` (Thompson
        policies: the score's distribution; NaN otherwise), ``probability`` (of choosing the
        slot for this context and mask: exact, or NaN where only the chosen arm's propensity is
        known; 0 for slots not allowed) and ``pulls``; contextual kernels add ``theta_x``
        (k x dim, theta_i x_i per slot, each row summing to that slot's theta . x). No work is
        added to ``select``: everything is recomputed here."""
        cdef const unsigned char* mask = self._mask(allowed)
        cdef const double* xp = self._context(x)
        cdef Py_ssize_t i, k = self.k
        if (cnp.PyArray_NDIM(scores) != 1 or cnp.PyArray_DIM(scores, 0) != k
                or cnp.PyArray_TYPE(scores) != cnp.NPY_DOUBLE
                or not cnp.PyArray_IS_C_CONTIGUOUS(scores)):
            raise ValueError(f"scores: must be a contiguous float64 vector of length {k}")
        if arm >= k:
            raise ValueError(f"arm: slot {arm} is out of range 0..{k - 1}")
        cdef cnp.npy_intp shape[2]
        shape[0] = EX_ROWS
        shape[1] = k
        cdef cnp.ndarray out = cnp.PyArray_EMPTY(2, shape, cnp.NPY_DOUBLE, 0)
        cdef cnp.ndarray theta_x = None
        cdef double* op = <double*>cnp.PyArray_DATA(out)
        cdef double* tp = NULL
        for i in range(EX_ROWS * k):
            op[i] = NAN
        if xp != NULL:
            shape[0] = k
            shape[1] = self.dim
            theta_x = cnp.PyArray_EMPTY(2, shape, cnp.NPY_DOUBLE, 0)
            tp = <double*>cnp.PyArray_DATA(theta_x)
            for i in range(k * self.dim):
                tp[i] = NAN
        self._explain(xp, mask, <const double*>cnp.PyArray_DATA(scores), arm, propensity, op, tp)
        for i in range(k):
            if not mask[i]:
                op[EX_EXPLOITATION * k + i] = NAN
                op[EX_EXPLORATION * k + i] = NAN
                op[EX_PROBABILITY * k + i] = 0.0
        result = {
            "exploitation": out[EX_EXPLOITATION],
            "exploration": out[EX_EXPLORATION],
            "mean": out[EX_MEAN],
            "posterior_mean": out[EX_POSTERIOR_MEAN],
            "posterior_sd": out[EX_POSTERIOR_SD],
            "probability": out[EX_PROBABILITY],
            "pulls": out[EX_PULLS],
        }
        if theta_x is not None:
            result["theta_x"] = theta_x
        self._explain_extras(result)
        return result

    def estimates(self, allowed=None):
        """What the policy has learned, per slot, as float64 arrays: ``pulls`` (rewards learned
        from; NaN where the policy keeps no count), ``mean`` and ``sd`` (the mean estimate and
        the policy's own uncertainty about it: see each kernel; NaN for linear kernels), and
        for linear kernels ``theta`` and ``theta_sd`` (k x dim); EXP3 and softmax add
        ``probability``, of each slot where ``allowed`` (default: every slot; 0 elsewhere)."""
        if allowed is None:
            mask = np.ones(self.k, dtype=np.uint8)
        else:
            mask = np.ascontiguousarray(allowed, dtype=np.uint8)
            self._mask(mask)
        return self._estimates(mask)

    def update(self, Py_ssize_t arm, double reward, x, double propensity=NAN):
        if arm < 0 or arm >= self.k:
            raise ValueError(f"arm: slot {arm} is out of range 0..{self.k - 1}")
        if not (0.0 <= reward <= 1.0):
            raise ValueError(f"reward: {reward!r} is invalid: must be in [0, 1]")
        cdef const double* xp = self._context(x)
        self._update(arm, reward, xp, propensity)


cdef class ContextKernel(Kernel):
    """A kernel that reads a float64 context vector of length ``dim``."""

    def _work_size(self):
        return 5 * max(self.k, 1) + 4 * self.dim * self.dim + 8 * self.dim

    cdef const double* _context(self, object x) except? NULL:
        cdef cnp.ndarray arr
        if (not isinstance(x, cnp.ndarray) or cnp.PyArray_NDIM(<cnp.ndarray>x) != 1
                or cnp.PyArray_DIM(<cnp.ndarray>x, 0) != self.dim
                or cnp.PyArray_TYPE(<cnp.ndarray>x) != cnp.NPY_DOUBLE
                or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>x)):
            raise ValueError(f"context_vector: must be a contiguous float64 vector of length "
                             f"{self.dim}, got {getattr(x, 'shape', type(x).__name__)}")
        arr = <cnp.ndarray>x
        cdef const double* xp = <const double*>cnp.PyArray_DATA(arr)
        cdef Py_ssize_t i
        for i in range(self.dim):
            if not isfinite(xp[i]):
                raise ValueError(f"context_vector: element {i} is {xp[i]!r}, must be finite")
        return xp
