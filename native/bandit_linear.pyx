# cython: language_level=3
"""Contextual bandit kernels: disjoint and hybrid LinUCB, linear and diagonal Thompson sampling,
with the small dense linear algebra they need (Sherman-Morrison, rank-one Cholesky update,
triangular solves). See ``llmopt.native.bandit_base`` for the shared machinery."""

cimport numpy as cnp
from libc.math cimport INFINITY, NAN, sqrt
from numpy.random.c_distributions cimport random_standard_normal

from llmopt.native.bandit_base cimport (
    EX_EXPLOITATION,
    EX_EXPLORATION,
    EX_MEAN,
    EX_POSTERIOR_MEAN,
    EX_POSTERIOR_SD,
    EX_PROBABILITY,
    EX_PULLS,
    ContextKernel,
    _argmax_ties,
    _normal_propensity,
    _tie_probability,
)

import numpy as np

cnp.import_array()


# ------------------------------------------------------------------------------------------
# Small dense linear algebra (row-major d x d)
# ------------------------------------------------------------------------------------------

cdef inline double _dot(const double* a, const double* b, Py_ssize_t d) noexcept nogil:
    cdef Py_ssize_t i
    cdef double acc = 0.0
    for i in range(d):
        acc += a[i] * b[i]
    return acc


cdef inline void _matvec(const double* m, const double* x, double* out, Py_ssize_t d) noexcept nogil:
    """out = M x for a row-major d x d matrix."""
    cdef Py_ssize_t r
    for r in range(d):
        out[r] = _dot(&m[r * d], x, d)


cdef void _sherman_morrison(double* ainv, const double* x, double* u, Py_ssize_t d) noexcept nogil:
    """A^-1 <- (A + x x^T)^-1 in place (A symmetric positive definite); ``u`` is scratch."""
    cdef Py_ssize_t r, c
    cdef double denom
    _matvec(ainv, x, u, d)
    denom = 1.0 + _dot(x, u, d)
    for r in range(d):
        for c in range(d):
            ainv[r * d + c] -= u[r] * u[c] / denom


cdef void _chol_update(double* l, const double* x, double* w, Py_ssize_t d) noexcept nogil:
    """Lower Cholesky factor L of B <- that of B + x x^T, in place; ``w`` is scratch."""
    cdef Py_ssize_t i, j
    cdef double r, c, s, lkk
    for i in range(d):
        w[i] = x[i]
    for j in range(d):
        lkk = l[j * d + j]
        r = sqrt(lkk * lkk + w[j] * w[j])
        c = r / lkk
        s = w[j] / lkk
        l[j * d + j] = r
        for i in range(j + 1, d):
            l[i * d + j] = (l[i * d + j] + s * w[i]) / c
            w[i] = c * w[i] - s * l[i * d + j]


cdef void _forward(const double* l, const double* b, double* y, Py_ssize_t d) noexcept nogil:
    """Solve L y = b (L lower triangular, row-major)."""
    cdef Py_ssize_t i, j
    cdef double acc
    for i in range(d):
        acc = b[i]
        for j in range(i):
            acc -= l[i * d + j] * y[j]
        y[i] = acc / l[i * d + i]


cdef void _backward_t(const double* l, const double* b, double* y, Py_ssize_t d) noexcept nogil:
    """Solve L^T y = b (L lower triangular, row-major)."""
    cdef Py_ssize_t i, j
    cdef double acc
    for i in range(d - 1, -1, -1):
        acc = b[i]
        for j in range(i + 1, d):
            acc -= l[j * d + i] * y[j]
        y[i] = acc / l[i * d + i]


cdef int _spd_inverse(const double* a, double* out, double* l, double* col,
                      Py_ssize_t d) noexcept nogil:
    """out = A^-1 for symmetric positive definite A by Cholesky; returns -1 if A is not SPD."""
    cdef Py_ssize_t i, j, t
    cdef double acc
    for i in range(d):
        for j in range(i + 1):
            acc = a[i * d + j]
            for t in range(j):
                acc -= l[i * d + t] * l[j * d + t]
            if i == j:
                if acc <= 0.0:
                    return -1
                l[i * d + i] = sqrt(acc)
            else:
                l[i * d + j] = acc / l[j * d + j]
        for j in range(i + 1, d):
            l[i * d + j] = 0.0
    for j in range(d):
        for i in range(d):
            col[i] = 1.0 if i == j else 0.0
        _forward(l, col, col, d)
        _backward_t(l, col, &col[d], d)
        for i in range(d):
            out[i * d + j] = col[d + i]
    return 0


# ------------------------------------------------------------------------------------------
# Contextual
# ------------------------------------------------------------------------------------------

cdef class LinUCBKernel(ContextKernel):
    """Per slot ``ainv`` (d x d), ``b``, ``theta = ainv b`` and ``pulls``."""

    cdef double alpha, lambda_
    cdef double[:, :, ::1] ainv
    cdef double[:, ::1] b
    cdef double[:, ::1] theta
    cdef double[::1] pulls

    def __init__(self, n_arms, dim, bit_generator, double alpha, double lambda_):
        self.alpha = alpha
        self.lambda_ = lambda_
        super().__init__(n_arms, dim, bit_generator)

    def _cold(self, Py_ssize_t n):
        d = self.dim
        return {
            "ainv": np.tile(np.eye(d) / self.lambda_, (n, 1, 1)),
            "b": np.zeros((n, d)),
            "theta": np.zeros((n, d)),
            "pulls": np.zeros(n),
        }

    cdef void _bind(self):
        self.ainv = self.arrays["ainv"]
        self.b = self.arrays["b"]
        self.theta = self.arrays["theta"]
        self.pulls = self.arrays["pulls"]

    cdef Py_ssize_t _select(self, const double* x, const unsigned char* allowed, double* scores,
                            double* propensity) noexcept nogil:
        cdef Py_ssize_t i, d = self.dim
        cdef double* u = &self.work[0]
        cdef double q
        for i in range(self.k):
            if allowed[i]:
                if self.pulls[i] > 0.0:
                    _matvec(&self.ainv[i, 0, 0], x, u, d)
                    q = _dot(x, u, d)
                    scores[i] = _dot(&self.theta[i, 0], x, d) + self.alpha * sqrt(q if q > 0.0 else 0.0)
                else:
                    scores[i] = INFINITY
        return _argmax_ties(scores, allowed, self.k, self.rng, &self.tied[0], propensity)

    cdef void _update(self, Py_ssize_t arm, double reward, const double* x,
                      double propensity) noexcept nogil:
        cdef Py_ssize_t j, d = self.dim
        cdef double* ainv = &self.ainv[arm, 0, 0]
        _sherman_morrison(ainv, x, &self.work[0], d)
        for j in range(d):
            self.b[arm, j] += reward * x[j]
        _matvec(ainv, &self.b[arm, 0], &self.theta[arm, 0], d)
        self.pulls[arm] += 1.0

    cdef void _explain(self, const double* x, const unsigned char* allowed, const double* scores,
                       Py_ssize_t arm, double propensity, double* out,
                       double* theta_x) noexcept nogil:
        """theta . x (split into theta_j x_j) + alpha sqrt(x^T A^-1 x); +inf bonus untried."""
        cdef Py_ssize_t i, j, k = self.k, d = self.dim
        cdef double* u = &self.work[0]
        cdef double q
        for i in range(k):
            for j in range(d):
                theta_x[i * d + j] = self.theta[i, j] * x[j]
            out[EX_MEAN * k + i] = _dot(&self.theta[i, 0], x, d)
            out[EX_PULLS * k + i] = self.pulls[i]
            if not allowed[i]:
                continue
            out[EX_EXPLOITATION * k + i] = out[EX_MEAN * k + i]
            if self.pulls[i] > 0.0:
                _matvec(&self.ainv[i, 0, 0], x, u, d)
                q = _dot(x, u, d)
                out[EX_EXPLORATION * k + i] = self.alpha * sqrt(q if q > 0.0 else 0.0)
            else:
                out[EX_EXPLORATION * k + i] = INFINITY
        _tie_probability(scores, allowed, k, &out[EX_PROBABILITY * k])

    def _estimates(self, const unsigned char[::1] allowed):
        """``theta`` = A^-1 b; ``theta_sd`` = sqrt(diag A^-1) (unit noise scale: the bonus is
        alpha times the sd of theta . x, sqrt(x^T A^-1 x))."""
        ainv = np.asarray(self.ainv)
        nan = np.full(self.k, np.nan)
        return {
            "pulls": np.array(self.pulls, copy=True),
            "mean": nan,
            "sd": nan.copy(),
            "theta": np.array(self.theta, copy=True),
            "theta_sd": np.sqrt(np.maximum(np.diagonal(ainv, axis1=1, axis2=2), 0.0)),
        }


cdef class HybridLinUCBKernel(ContextKernel):
    """Li et al. 2010, algorithm 2, with z = x. Shared ``a0`` (k x k), ``a0inv``, ``b0``,
    ``beta``; per slot ``ainv`` (d x d), ``bmat`` (d x k), ``b`` and ``pulls``."""

    cdef double alpha, lambda_
    cdef double[:, ::1] a0
    cdef double[:, ::1] a0inv
    cdef double[::1] b0
    cdef double[::1] beta
    cdef double[:, :, ::1] ainv
    cdef double[:, :, ::1] bmat
    cdef double[:, ::1] b
    cdef double[::1] pulls

    def __init__(self, n_arms, dim, bit_generator, double alpha, double lambda_):
        self.alpha = alpha
        self.lambda_ = lambda_
        super().__init__(n_arms, dim, bit_generator)

    def _globals(self):
        d = self.dim
        return {
            "a0": np.eye(d) * self.lambda_,
            "a0inv": np.eye(d) / self.lambda_,
            "b0": np.zeros(d),
            "beta": np.zeros(d),
        }

    def _cold(self, Py_ssize_t n):
        d = self.dim
        return {
            "ainv": np.tile(np.eye(d) / self.lambda_, (n, 1, 1)),
            "bmat": np.zeros((n, d, d)),
            "b": np.zeros((n, d)),
            "pulls": np.zeros(n),
        }

    cdef void _bind(self):
        self.a0 = self.arrays["a0"]
        self.a0inv = self.arrays["a0inv"]
        self.b0 = self.arrays["b0"]
        self.beta = self.arrays["beta"]
        self.ainv = self.arrays["ainv"]
        self.bmat = self.arrays["bmat"]
        self.b = self.arrays["b"]
        self.pulls = self.arrays["pulls"]

    cdef Py_ssize_t _select(self, const double* x, const unsigned char* allowed, double* scores,
                            double* propensity) noexcept nogil:
        cdef Py_ssize_t i, r, c, d = self.dim
        cdef double* w = &self.work[0]       # A0^-1 z
        cdef double* u = &self.work[d]       # A_a^-1 x
        cdef double* v = &self.work[2 * d]   # B_a^T A_a^-1 x
        cdef double* t = &self.work[3 * d]   # b_a - B_a beta, then A0^-1 v
        cdef double* th = &self.work[4 * d]  # theta_a
        cdef double zw, base, s, acc
        cdef double* bm
        _matvec(&self.a0inv[0, 0], x, w, d)
        zw = _dot(x, w, d)
        base = _dot(x, &self.beta[0], d)
        for i in range(self.k):
            if not allowed[i]:
                continue
            if self.pulls[i] <= 0.0:
                scores[i] = INFINITY
                continue
            bm = &self.bmat[i, 0, 0]
            _matvec(&self.ainv[i, 0, 0], x, u, d)
            for c in range(d):
                acc = 0.0
                for r in range(d):
                    acc += bm[r * d + c] * u[r]
                v[c] = acc
            for r in range(d):
                t[r] = self.b[i, r] - _dot(&bm[r * d], &self.beta[0], d)
            _matvec(&self.ainv[i, 0, 0], t, th, d)
            _matvec(&self.a0inv[0, 0], v, t, d)
            s = zw - 2.0 * _dot(w, v, d) + _dot(x, u, d) + _dot(v, t, d)
            scores[i] = base + _dot(x, th, d) + self.alpha * sqrt(s if s > 0.0 else 0.0)
        return _argmax_ties(scores, allowed, self.k, self.rng, &self.tied[0], propensity)

    cdef void _shared_term(self, Py_ssize_t arm, double sign) noexcept nogil:
        """A0 += sign * B^T A^-1 B ; b0 += sign * B^T A^-1 b (for slot ``arm``)."""
        cdef Py_ssize_t r, c, j, d = self.dim
        cdef double* bm = &self.bmat[arm, 0, 0]
        cdef double* ainv = &self.ainv[arm, 0, 0]
        cdef double* m = &self.work[0]          # A^-1 B  (d x d)
        cdef double* ab = &self.work[d * d]     # A^-1 b
        cdef double acc
        for r in range(d):
            for c in range(d):
                acc = 0.0
                for j in range(d):
                    acc += ainv[r * d + j] * bm[j * d + c]
                m[r * d + c] = acc
        _matvec(ainv, &self.b[arm, 0], ab, d)
        for r in range(d):
            for c in range(d):
                acc = 0.0
                for j in range(d):
                    acc += bm[j * d + r] * m[j * d + c]
                self.a0[r, c] += sign * acc
            acc = 0.0
            for j in range(d):
                acc += bm[j * d + r] * ab[j]
            self.b0[r] += sign * acc

    cdef void _update(self, Py_ssize_t arm, double reward, const double* x,
                      double propensity) noexcept nogil:
        cdef Py_ssize_t r, c, d = self.dim
        self._shared_term(arm, 1.0)
        _sherman_morrison(&self.ainv[arm, 0, 0], x, &self.work[0], d)
        for r in range(d):
            for c in range(d):
                self.bmat[arm, r, c] += x[r] * x[c]
            self.b[arm, r] += reward * x[r]
        for r in range(d):
            for c in range(d):
                self.a0[r, c] += x[r] * x[c]
            self.b0[r] += reward * x[r]
        self._shared_term(arm, -1.0)
        # The shared matrix changes by more than rank one: re-invert it (k^3, once per update).
        _spd_inverse(&self.a0[0, 0], &self.a0inv[0, 0], &self.work[0], &self.work[d * d], d)
        _matvec(&self.a0inv[0, 0], &self.b0[0], &self.beta[0], d)
        self.pulls[arm] += 1.0

    cdef void _explain(self, const double* x, const unsigned char* allowed, const double* scores,
                       Py_ssize_t arm, double propensity, double* out,
                       double* theta_x) noexcept nogil:
        """x . beta + x . theta_a (split into x_j (beta_j + theta_a,j)) + alpha sqrt(s_a), as
        ``_select`` scores it; +inf bonus untried."""
        cdef Py_ssize_t i, r, c, j, k = self.k, d = self.dim
        cdef double* w = &self.work[0]       # A0^-1 z
        cdef double* u = &self.work[d]       # A_a^-1 x
        cdef double* v = &self.work[2 * d]   # B_a^T A_a^-1 x
        cdef double* t = &self.work[3 * d]   # b_a - B_a beta, then A0^-1 v
        cdef double* th = &self.work[4 * d]  # theta_a
        cdef double zw, base, s, acc
        cdef double* bm
        _matvec(&self.a0inv[0, 0], x, w, d)
        zw = _dot(x, w, d)
        base = _dot(x, &self.beta[0], d)
        for i in range(k):
            bm = &self.bmat[i, 0, 0]
            for r in range(d):
                t[r] = self.b[i, r] - _dot(&bm[r * d], &self.beta[0], d)
            _matvec(&self.ainv[i, 0, 0], t, th, d)
            for j in range(d):
                theta_x[i * d + j] = x[j] * (self.beta[j] + th[j])
            out[EX_MEAN * k + i] = base + _dot(x, th, d)
            out[EX_PULLS * k + i] = self.pulls[i]
            if not allowed[i]:
                continue
            out[EX_EXPLOITATION * k + i] = out[EX_MEAN * k + i]
            if self.pulls[i] <= 0.0:
                out[EX_EXPLORATION * k + i] = INFINITY
                continue
            _matvec(&self.ainv[i, 0, 0], x, u, d)
            for c in range(d):
                acc = 0.0
                for r in range(d):
                    acc += bm[r * d + c] * u[r]
                v[c] = acc
            _matvec(&self.a0inv[0, 0], v, t, d)
            s = zw - 2.0 * _dot(w, v, d) + _dot(x, u, d) + _dot(v, t, d)
            out[EX_EXPLORATION * k + i] = self.alpha * sqrt(s if s > 0.0 else 0.0)
        _tie_probability(scores, allowed, k, &out[EX_PROBABILITY * k])

    def _estimates(self, const unsigned char[::1] allowed):
        """``theta`` = beta + theta_a (shared plus own, theta_a = A_a^-1 (b_a - B_a beta));
        ``theta_sd`` = the sd of each coefficient of that sum: the square root of the diagonal
        of the matrix whose quadratic form is the bonus's s_a (unit noise scale)."""
        a0inv = np.asarray(self.a0inv)
        beta = np.asarray(self.beta)
        ainv = np.asarray(self.ainv)
        bmat = np.asarray(self.bmat)
        own = np.einsum("kij,kj->ki", ainv, np.asarray(self.b) - bmat @ beta)
        # s(x) = x' A0^-1 x - 2 x' A0^-1 B' A^-1 x + x' A^-1 x + x' A^-1 B A0^-1 B' A^-1 x; at
        # x = e_j each term is a diagonal entry (A^-1 is symmetric: B' A^-1 = (A^-1 B)').
        ainv_b = ainv @ bmat
        cross = np.einsum("ij,kji->ki", a0inv, np.swapaxes(ainv_b, 1, 2))
        last = np.einsum("kij,jl,kil->ki", ainv_b, a0inv, ainv_b)
        var = np.diag(a0inv)[None, :] - 2.0 * cross + np.diagonal(ainv, axis1=1, axis2=2) + last
        nan = np.full(self.k, np.nan)
        return {
            "pulls": np.array(self.pulls, copy=True),
            "mean": nan,
            "sd": nan.copy(),
            "theta": beta[None, :] + own,
            "theta_sd": np.sqrt(np.maximum(var, 0.0)),
        }


cdef class LinearThompsonKernel(ContextKernel):
    """Per slot lower Cholesky factor ``chol`` of B = lambda I + sum x x^T, ``f = sum r x`` and
    ``mu = B^-1 f``. Selection draws theta = mu + v L^-T z (z standard normal, d draws per slot)
    and scores x . theta, computed as x . mu + v (L^-1 x) . z."""

    cdef double v, lambda_
    cdef Py_ssize_t rounds
    cdef double[:, :, ::1] chol
    cdef double[:, ::1] f
    cdef double[:, ::1] mu

    def __init__(self, n_arms, dim, bit_generator, double v, double lambda_, Py_ssize_t rounds):
        self.v = v
        self.lambda_ = lambda_
        self.rounds = rounds
        super().__init__(n_arms, dim, bit_generator)

    def _cold(self, Py_ssize_t n):
        d = self.dim
        return {
            "chol": np.tile(np.eye(d) * np.sqrt(self.lambda_), (n, 1, 1)),
            "f": np.zeros((n, d)),
            "mu": np.zeros((n, d)),
        }

    cdef void _bind(self):
        self.chol = self.arrays["chol"]
        self.f = self.arrays["f"]
        self.mu = self.arrays["mu"]

    cdef Py_ssize_t _select(self, const double* x, const unsigned char* allowed, double* scores,
                            double* propensity) noexcept nogil:
        cdef Py_ssize_t i, j, arm, k = self.k, d = self.dim
        cdef double* mean = &self.work[0]
        cdef double* sd = &self.work[k]
        cdef double* draws = &self.work[2 * k]
        cdef double* y = &self.work[3 * k]
        cdef double noise, norm2
        for i in range(k):
            if not allowed[i]:
                continue
            _forward(&self.chol[i, 0, 0], x, y, d)
            mean[i] = _dot(x, &self.mu[i, 0], d)
            noise = 0.0
            norm2 = 0.0
            for j in range(d):
                noise += y[j] * random_standard_normal(self.rng)
                norm2 += y[j] * y[j]
            sd[i] = self.v * sqrt(norm2)
            scores[i] = mean[i] + self.v * noise
        arm = _argmax_ties(scores, allowed, k, self.rng, &self.tied[0], propensity)
        if arm >= 0 and self.rounds > 0:
            propensity[0] = _normal_propensity(mean, sd, allowed, k, arm, self.rounds,
                                               self.rng, draws)
        return arm

    cdef void _update(self, Py_ssize_t arm, double reward, const double* x,
                      double propensity) noexcept nogil:
        cdef Py_ssize_t j, d = self.dim
        cdef double* l = &self.chol[arm, 0, 0]
        cdef double* y = &self.work[0]
        _chol_update(l, x, y, d)
        for j in range(d):
            self.f[arm, j] += reward * x[j]
        _forward(l, &self.f[arm, 0], y, d)
        _backward_t(l, y, &self.mu[arm, 0], d)

    cdef void _explain(self, const double* x, const unsigned char* allowed, const double* scores,
                       Py_ssize_t arm, double propensity, double* out,
                       double* theta_x) noexcept nogil:
        """The draw = x . mu (split into mu_j x_j) + (draw - x . mu); the score's posterior
        sd v ||L^-1 x||. No count of rewards is kept (``pulls`` NaN)."""
        cdef Py_ssize_t i, j, k = self.k, d = self.dim
        cdef double* y = &self.work[0]
        cdef double mean
        for i in range(k):
            _forward(&self.chol[i, 0, 0], x, y, d)
            for j in range(d):
                theta_x[i * d + j] = self.mu[i, j] * x[j]
            mean = _dot(x, &self.mu[i, 0], d)
            out[EX_MEAN * k + i] = mean
            out[EX_POSTERIOR_MEAN * k + i] = mean
            out[EX_POSTERIOR_SD * k + i] = self.v * sqrt(_dot(y, y, d))
            if allowed[i]:
                out[EX_EXPLOITATION * k + i] = mean
                out[EX_EXPLORATION * k + i] = scores[i] - mean
        if 0 <= arm < k:
            out[EX_PROBABILITY * k + arm] = propensity

    def _estimates(self, const unsigned char[::1] allowed):
        """``theta`` = mu = B^-1 f; ``theta_sd`` = v sqrt(diag B^-1) (the posterior's); no
        count of rewards is kept (``pulls`` NaN)."""
        chol = np.asarray(self.chol)
        eye = np.eye(self.dim)
        linv = np.array([np.linalg.solve(l, eye) for l in chol]).reshape(self.k, self.dim, self.dim)
        nan = np.full(self.k, np.nan)
        return {
            "pulls": nan,
            "mean": nan.copy(),
            "sd": nan.copy(),
            "theta": np.array(self.mu, copy=True),
            "theta_sd": self.v * np.sqrt(np.sum(linv * linv, axis=1)),
        }


cdef class DiagonalThompsonKernel(ContextKernel):
    """Per slot and feature precision ``prec`` and ``bvec = sum r x_j / noise_variance``;
    selection draws theta_j = bvec_j / prec_j + z_j / sqrt(prec_j) and scores x . theta."""

    cdef double prior_variance, noise_variance
    cdef Py_ssize_t rounds
    cdef double[:, ::1] prec
    cdef double[:, ::1] bvec

    def __init__(self, n_arms, dim, bit_generator, double prior_variance, double noise_variance,
                 Py_ssize_t rounds):
        self.prior_variance = prior_variance
        self.noise_variance = noise_variance
        self.rounds = rounds
        super().__init__(n_arms, dim, bit_generator)

    def _cold(self, Py_ssize_t n):
        d = self.dim
        return {"prec": np.full((n, d), 1.0 / self.prior_variance), "bvec": np.zeros((n, d))}

    cdef void _bind(self):
        self.prec = self.arrays["prec"]
        self.bvec = self.arrays["bvec"]

    cdef Py_ssize_t _select(self, const double* x, const unsigned char* allowed, double* scores,
                            double* propensity) noexcept nogil:
        cdef Py_ssize_t i, j, arm, k = self.k, d = self.dim
        cdef double* mean = &self.work[0]
        cdef double* sd = &self.work[k]
        cdef double* draws = &self.work[2 * k]
        cdef double m, var, noise, p
        for i in range(k):
            if not allowed[i]:
                continue
            m = 0.0
            var = 0.0
            noise = 0.0
            for j in range(d):
                p = self.prec[i, j]
                m += x[j] * (self.bvec[i, j] / p)
                var += x[j] * x[j] / p
                noise += x[j] * (random_standard_normal(self.rng) / sqrt(p))
            mean[i] = m
            sd[i] = sqrt(var)
            scores[i] = m + noise
        arm = _argmax_ties(scores, allowed, k, self.rng, &self.tied[0], propensity)
        if arm >= 0 and self.rounds > 0:
            propensity[0] = _normal_propensity(mean, sd, allowed, k, arm, self.rounds,
                                               self.rng, draws)
        return arm

    cdef void _update(self, Py_ssize_t arm, double reward, const double* x,
                      double propensity) noexcept nogil:
        cdef Py_ssize_t j
        for j in range(self.dim):
            self.prec[arm, j] += x[j] * x[j] / self.noise_variance
            self.bvec[arm, j] += reward * x[j] / self.noise_variance

    cdef void _explain(self, const double* x, const unsigned char* allowed, const double* scores,
                       Py_ssize_t arm, double propensity, double* out,
                       double* theta_x) noexcept nogil:
        """The draw = sum x_j bvec_j / prec_j (those terms) + (draw - that); the score's
        posterior sd sqrt(sum x_j^2 / prec_j). No count of rewards is kept (``pulls`` NaN)."""
        cdef Py_ssize_t i, j, k = self.k, d = self.dim
        cdef double m, var, p
        for i in range(k):
            m = 0.0
            var = 0.0
            for j in range(d):
                p = self.prec[i, j]
                theta_x[i * d + j] = x[j] * (self.bvec[i, j] / p)
                m += theta_x[i * d + j]
                var += x[j] * x[j] / p
            out[EX_MEAN * k + i] = m
            out[EX_POSTERIOR_MEAN * k + i] = m
            out[EX_POSTERIOR_SD * k + i] = sqrt(var)
            if allowed[i]:
                out[EX_EXPLOITATION * k + i] = m
                out[EX_EXPLORATION * k + i] = scores[i] - m
        if 0 <= arm < k:
            out[EX_PROBABILITY * k + arm] = propensity

    def _estimates(self, const unsigned char[::1] allowed):
        """``theta`` = bvec / prec and ``theta_sd`` = 1 / sqrt(prec), per slot and feature;
        no count of rewards is kept (``pulls`` NaN)."""
        prec = np.asarray(self.prec)
        nan = np.full(self.k, np.nan)
        return {
            "pulls": nan,
            "mean": nan.copy(),
            "sd": nan.copy(),
            "theta": np.asarray(self.bvec) / prec,
            "theta_sd": 1.0 / np.sqrt(prec),
        }
