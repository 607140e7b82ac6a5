# cython: language_level=3
"""Context-free bandit kernels: epsilon-greedy, the UCB family, Thompson sampling (Beta and
Gaussian), EXP3 and softmax. See ``llmopt.native.bandit_base`` for the shared machinery."""

cimport numpy as cnp
from libc.math cimport INFINITY, NAN, exp, isnan, log, sqrt
from numpy.random cimport bitgen_t
from numpy.random.c_distributions cimport (
    random_beta,
    random_standard_gamma,
    random_standard_normal,
    random_standard_uniform,
)

from llmopt.native.bandit_base cimport (
    EX_EXPLOITATION,
    EX_EXPLORATION,
    EX_MEAN,
    EX_POSTERIOR_MEAN,
    EX_POSTERIOR_SD,
    EX_PROBABILITY,
    EX_PULLS,
    Kernel,
    _argmax_ties,
    _normal_propensity,
    _tie_probability,
    _uniform_index,
)

import numpy as np

cnp.import_array()


# ------------------------------------------------------------------------------------------
# Context-free: mean-based policies share counts n, sums s and sums of squares ss per slot
# ------------------------------------------------------------------------------------------

cdef class MeanKernel(Kernel):
    """Per slot reward count ``n``, sum ``s`` and sum of squares ``ss``; ``g[0]`` = updates."""

    cdef double[::1] n
    cdef double[::1] s
    cdef double[::1] ss
    cdef double[::1] g

    def _cold(self, Py_ssize_t n):
        return {"n": np.zeros(n), "s": np.zeros(n), "ss": np.zeros(n)}

    def _globals(self):
        return {"g": np.zeros(4)}

    cdef void _bind(self):
        self.n = self.arrays["n"]
        self.s = self.arrays["s"]
        self.ss = self.arrays["ss"]
        self.g = self.arrays["g"]

    cdef void _update(self, Py_ssize_t arm, double reward, const double* x,
                      double propensity) noexcept nogil:
        self.n[arm] += 1.0
        self.s[arm] += reward
        self.ss[arm] += reward * reward
        self.g[0] += 1.0

    cdef void _index(self, const unsigned char* allowed, double* scores) noexcept nogil:
        pass

    cdef Py_ssize_t _select(self, const double* x, const unsigned char* allowed, double* scores,
                            double* propensity) noexcept nogil:
        self._index(allowed, scores)
        return _argmax_ties(scores, allowed, self.k, self.rng, &self.tied[0], propensity)

    # --- explanation of an index policy: mean + bonus, +inf for an untried slot -------------

    cdef double _bonus_context(self) noexcept nogil:
        """What every slot's bonus shares (ln N for most)."""
        return log(self.g[0]) if self.g[0] > 1.0 else 0.0

    cdef bint _tried(self, Py_ssize_t i) noexcept nogil:
        """Whether slot ``i`` has an index (else it scores +inf)."""
        return self.n[i] > 0.0

    cdef double _bonus(self, Py_ssize_t i, double c) noexcept nogil:
        """The exploration bonus of a tried slot, from the index's own formula."""
        return NAN

    cdef void _explain(self, const double* x, const unsigned char* allowed, const double* scores,
                       Py_ssize_t arm, double propensity, double* out,
                       double* theta_x) noexcept nogil:
        cdef Py_ssize_t i, k = self.k
        cdef double c = self._bonus_context()
        for i in range(k):
            out[EX_PULLS * k + i] = self.n[i]
            out[EX_MEAN * k + i] = self.s[i] / self.n[i] if self.n[i] > 0.0 else NAN
            if not allowed[i]:
                continue
            if self._tried(i):
                out[EX_EXPLOITATION * k + i] = self.s[i] / self.n[i]
                out[EX_EXPLORATION * k + i] = self._bonus(i, c)
            else:  # untried: no estimate, the whole (infinite) score is exploration
                out[EX_EXPLOITATION * k + i] = 0.0
                out[EX_EXPLORATION * k + i] = INFINITY
        _tie_probability(scores, allowed, k, &out[EX_PROBABILITY * k])

    def _estimates(self, const unsigned char[::1] allowed):
        """``mean`` = s / n (NaN untried); ``sd`` = the standard error sqrt(var / n) of that
        mean, with var = ss / n - mean^2 the rewards' sample variance (the one UCB-Tuned and
        UCB-V read; the others read none, and this is their mean's error all the same)."""
        n = np.asarray(self.n)
        s = np.asarray(self.s)
        ss = np.asarray(self.ss)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0.0, s / n, np.nan)
            var = np.maximum(ss / n - mean * mean, 0.0)
            sd = np.where(n > 0.0, np.sqrt(var / n), np.nan)
        return {"pulls": n.copy(), "mean": mean, "sd": sd}

    def _bounded_estimates(self):
        """For kernels that keep no sum of squares: ``sd`` = sqrt(mean (1 - mean) / n), the
        largest standard error a mean of n rewards in [0, 1] can have."""
        n = np.asarray(self.n)
        s = np.asarray(self.s)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0.0, s / n, np.nan)
            sd = np.where(n > 0.0, np.sqrt(np.clip(mean * (1.0 - mean), 0.0, None) / n), np.nan)
        return {"pulls": n.copy(), "mean": mean, "sd": sd}


cdef class EpsilonGreedyKernel(MeanKernel):
    """``g[1]`` counts selections (the t of the decay)."""

    cdef double epsilon, decay_rate, min_epsilon
    cdef int decay

    def __init__(self, n_arms, dim, bit_generator, double epsilon, int decay, double decay_rate,
                 double min_epsilon):
        self.epsilon = epsilon
        self.decay = decay
        self.decay_rate = decay_rate
        self.min_epsilon = min_epsilon
        super().__init__(n_arms, dim, bit_generator)

    def add_selections(self, Py_ssize_t n):
        """The decay's t counts selections: one per logged decision."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.g[1] += n

    cdef double current_epsilon(self) noexcept nogil:
        return _decayed(self.epsilon, self.decay, self.decay_rate, self.min_epsilon, self.g[1])

    cdef double _drawn_epsilon(self) noexcept nogil:
        """The epsilon of the latest selection (which counted itself in ``g[1]``)."""
        cdef double t = self.g[1] - 1.0
        return _decayed(self.epsilon, self.decay, self.decay_rate, self.min_epsilon,
                        t if t > 0.0 else 0.0)

    cdef void _explain(self, const double* x, const unsigned char* allowed, const double* scores,
                       Py_ssize_t arm, double propensity, double* out,
                       double* theta_x) noexcept nogil:
        """Score = the mean (+inf untried, all exploration); probability = (1 - eps) / ties for
        the best slots + eps / m, with the epsilon the latest selection drew with."""
        cdef Py_ssize_t i, m = 0, k = self.k
        cdef double eps = self._drawn_epsilon()
        cdef double* prob = &out[EX_PROBABILITY * k]
        for i in range(k):
            out[EX_PULLS * k + i] = self.n[i]
            out[EX_MEAN * k + i] = self.s[i] / self.n[i] if self.n[i] > 0.0 else NAN
            if not allowed[i]:
                continue
            m += 1
            if self.n[i] > 0.0:
                out[EX_EXPLOITATION * k + i] = self.s[i] / self.n[i]
                out[EX_EXPLORATION * k + i] = 0.0
            else:
                out[EX_EXPLOITATION * k + i] = 0.0
                out[EX_EXPLORATION * k + i] = INFINITY
        _tie_probability(scores, allowed, k, prob)
        for i in range(k):
            if allowed[i]:
                prob[i] = (1.0 - eps) * prob[i] + eps / m

    def _explain_extras(self, dict explanation):
        explanation["epsilon"] = self._drawn_epsilon()

    cdef Py_ssize_t _select(self, const double* x, const unsigned char* allowed, double* scores,
                            double* propensity) noexcept nogil:
        cdef Py_ssize_t i, m = 0, arm, j
        cdef double eps = self.current_epsilon(), u, greedy_p
        for i in range(self.k):
            if allowed[i]:
                m += 1
                scores[i] = self.s[i] / self.n[i] if self.n[i] > 0.0 else INFINITY
        if m == 0:
            return -1
        self.g[1] += 1.0
        u = random_standard_uniform(self.rng)
        if u < eps:
            j = _uniform_index(self.rng, m)
            arm = -1
            for i in range(self.k):
                if allowed[i]:
                    if j == 0:
                        arm = i
                        break
                    j -= 1
            # The greedy step would have picked ``arm`` with probability 1/ties if it is tied best.
            greedy_p = 0.0
            j = _count_ties(scores, allowed, self.k, arm)
            if j > 0:
                greedy_p = 1.0 / j
        else:
            arm = _argmax_ties(scores, allowed, self.k, self.rng, &self.tied[0], &greedy_p)
        propensity[0] = (1.0 - eps) * greedy_p + eps / m
        return arm


cdef inline double _decayed(double epsilon, int decay, double rate, double floor,
                            double t) noexcept nogil:
    """Epsilon after ``t`` selections (``EpsilonDecay``), never below ``floor``."""
    cdef double e
    if decay == 0:
        return epsilon
    if decay == 1:
        e = epsilon - rate * t
    elif decay == 2:
        e = epsilon * exp(-rate * t)
    else:
        e = epsilon / (1.0 + rate * log(1.0 + t))
    return e if e > floor else floor


cdef Py_ssize_t _count_ties(const double* s, const unsigned char* allowed, Py_ssize_t k,
                            Py_ssize_t arm) noexcept nogil:
    """Number of allowed slots tied for best if ``arm`` is one of them, else 0."""
    cdef Py_ssize_t i, n = 0
    cdef double best = -INFINITY
    cdef bint any_ = False
    for i in range(k):
        if allowed[i] and (not any_ or s[i] > best):
            best = s[i]
            any_ = True
    if s[arm] != best:
        return 0
    for i in range(k):
        if allowed[i] and s[i] == best:
            n += 1
    return n


cdef class UCB1Kernel(MeanKernel):
    cdef double exploration

    def __init__(self, n_arms, dim, bit_generator, double exploration):
        self.exploration = exploration
        super().__init__(n_arms, dim, bit_generator)

    cdef void _index(self, const unsigned char* allowed, double* scores) noexcept nogil:
        cdef Py_ssize_t i
        cdef double log_n = log(self.g[0]) if self.g[0] > 1.0 else 0.0
        for i in range(self.k):
            if allowed[i]:
                if self.n[i] > 0.0:
                    scores[i] = (self.s[i] / self.n[i]
                                 + self.exploration * sqrt(2.0 * log_n / self.n[i]))
                else:
                    scores[i] = INFINITY

    cdef double _bonus(self, Py_ssize_t i, double log_n) noexcept nogil:
        return self.exploration * sqrt(2.0 * log_n / self.n[i])


cdef class UCBTunedKernel(MeanKernel):
    def __init__(self, n_arms, dim, bit_generator):
        super().__init__(n_arms, dim, bit_generator)

    cdef void _index(self, const unsigned char* allowed, double* scores) noexcept nogil:
        cdef Py_ssize_t i
        cdef double log_n = log(self.g[0]) if self.g[0] > 1.0 else 0.0
        cdef double mean, var, v
        for i in range(self.k):
            if allowed[i]:
                if self.n[i] > 0.0:
                    mean = self.s[i] / self.n[i]
                    var = self.ss[i] / self.n[i] - mean * mean
                    if var < 0.0:
                        var = 0.0
                    v = var + sqrt(2.0 * log_n / self.n[i])
                    if v > 0.25:
                        v = 0.25
                    scores[i] = mean + sqrt(log_n / self.n[i] * v)
                else:
                    scores[i] = INFINITY

    cdef double _bonus(self, Py_ssize_t i, double log_n) noexcept nogil:
        cdef double mean = self.s[i] / self.n[i]
        cdef double var = self.ss[i] / self.n[i] - mean * mean
        cdef double v = (var if var > 0.0 else 0.0) + sqrt(2.0 * log_n / self.n[i])
        return sqrt(log_n / self.n[i] * (v if v < 0.25 else 0.25))


cdef class UCBVKernel(MeanKernel):
    cdef double exploration

    def __init__(self, n_arms, dim, bit_generator, double exploration):
        self.exploration = exploration
        super().__init__(n_arms, dim, bit_generator)

    cdef void _index(self, const unsigned char* allowed, double* scores) noexcept nogil:
        cdef Py_ssize_t i
        cdef double e_log_n = self.exploration * (log(self.g[0]) if self.g[0] > 1.0 else 0.0)
        cdef double mean, var
        for i in range(self.k):
            if allowed[i]:
                if self.n[i] > 0.0:
                    mean = self.s[i] / self.n[i]
                    var = self.ss[i] / self.n[i] - mean * mean
                    if var < 0.0:
                        var = 0.0
                    scores[i] = (mean + sqrt(2.0 * var * e_log_n / self.n[i])
                                 + 3.0 * e_log_n / self.n[i])
                else:
                    scores[i] = INFINITY

    cdef double _bonus_context(self) noexcept nogil:
        return self.exploration * (log(self.g[0]) if self.g[0] > 1.0 else 0.0)

    cdef double _bonus(self, Py_ssize_t i, double e_log_n) noexcept nogil:
        cdef double mean = self.s[i] / self.n[i]
        cdef double var = self.ss[i] / self.n[i] - mean * mean
        if var < 0.0:
            var = 0.0
        return sqrt(2.0 * var * e_log_n / self.n[i]) + 3.0 * e_log_n / self.n[i]


cdef enum:
    KL_ITERS = 30

cdef double KL_EPS = 1e-15


cdef inline double _kl_bernoulli(double p, double q) noexcept nogil:
    if p < KL_EPS:
        p = KL_EPS
    elif p > 1.0 - KL_EPS:
        p = 1.0 - KL_EPS
    if q < KL_EPS:
        q = KL_EPS
    elif q > 1.0 - KL_EPS:
        q = 1.0 - KL_EPS
    return p * log(p / q) + (1.0 - p) * log((1.0 - p) / (1.0 - q))


cdef double kl_ucb_bound(double mean, double n, double budget) noexcept nogil:
    """Largest q in [mean, 1] with n * kl(mean, q) <= budget.

    Newton's method from the right, started at the Pinsker bound mean + sqrt(budget / 2n): the
    constraint is convex and increasing in q, so the iterates decrease monotonically to the root
    (at most KL_ITERS steps; stops when a step is below 1e-12)."""
    cdef double q, fq, slope, nq
    cdef int it
    if budget <= 0.0 or mean >= 1.0:
        return mean
    q = mean + sqrt(budget / (2.0 * n))
    if q >= 1.0:
        q = 1.0 - 1e-12
        if n * _kl_bernoulli(mean, q) <= budget:
            return 1.0
    for it in range(KL_ITERS):
        fq = n * _kl_bernoulli(mean, q) - budget
        if fq <= 0.0:
            break
        slope = n * (q - mean) / (q * (1.0 - q))
        nq = q - fq / slope
        if nq < mean:
            nq = mean
        if q - nq < 1e-12:
            q = nq
            break
        q = nq
    return q


def kl_ucb_index(double mean, double n, double budget):
    """The KL-UCB index of one arm (exposed for the tests)."""
    return kl_ucb_bound(mean, n, budget)


cdef class KLUCBKernel(MeanKernel):
    cdef double c

    def __init__(self, n_arms, dim, bit_generator, double c):
        self.c = c
        super().__init__(n_arms, dim, bit_generator)

    cdef void _index(self, const unsigned char* allowed, double* scores) noexcept nogil:
        cdef Py_ssize_t i
        cdef double log_n = log(self.g[0]) if self.g[0] > 1.0 else 0.0
        cdef double budget = log_n + (self.c * log(log_n) if log_n > 1.0 else 0.0)
        for i in range(self.k):
            if allowed[i]:
                if self.n[i] > 0.0:
                    scores[i] = kl_ucb_bound(self.s[i] / self.n[i], self.n[i], budget)
                else:
                    scores[i] = INFINITY

    cdef double _bonus_context(self) noexcept nogil:
        cdef double log_n = log(self.g[0]) if self.g[0] > 1.0 else 0.0
        return log_n + (self.c * log(log_n) if log_n > 1.0 else 0.0)

    cdef double _bonus(self, Py_ssize_t i, double budget) noexcept nogil:
        """The KL bound's distance above the mean."""
        cdef double mean = self.s[i] / self.n[i]
        return kl_ucb_bound(mean, self.n[i], budget) - mean


cdef class DiscountedUCBKernel(MeanKernel):
    """``n`` and ``s`` are discounted; ``ss`` is unused (kept 0); ``pulls`` counts raw rewards."""

    cdef double gamma, exploration
    cdef double[::1] pulls

    def __init__(self, n_arms, dim, bit_generator, double gamma, double exploration):
        self.gamma = gamma
        self.exploration = exploration
        super().__init__(n_arms, dim, bit_generator)

    def _cold(self, Py_ssize_t n):
        cold = MeanKernel._cold(self, n)
        cold["pulls"] = np.zeros(n)
        return cold

    cdef void _bind(self):
        MeanKernel._bind(self)
        self.pulls = self.arrays["pulls"]

    cdef void _update(self, Py_ssize_t arm, double reward, const double* x,
                      double propensity) noexcept nogil:
        cdef Py_ssize_t i
        cdef double total = 0.0
        for i in range(self.k):
            self.n[i] *= self.gamma
            self.s[i] *= self.gamma
        self.n[arm] += 1.0
        self.s[arm] += reward
        self.pulls[arm] += 1.0
        for i in range(self.k):
            total += self.n[i]
        self.g[0] = total

    cdef void _index(self, const unsigned char* allowed, double* scores) noexcept nogil:
        cdef Py_ssize_t i
        cdef double log_n = log(self.g[0]) if self.g[0] > 1.0 else 0.0
        for i in range(self.k):
            if allowed[i]:
                if self.pulls[i] > 0.0 and self.n[i] > 0.0:
                    scores[i] = (self.s[i] / self.n[i]
                                 + self.exploration * sqrt(2.0 * log_n / self.n[i]))
                else:
                    scores[i] = INFINITY

    cdef bint _tried(self, Py_ssize_t i) noexcept nogil:
        return self.pulls[i] > 0.0 and self.n[i] > 0.0

    cdef double _bonus(self, Py_ssize_t i, double log_n) noexcept nogil:
        return self.exploration * sqrt(2.0 * log_n / self.n[i])

    def _estimates(self, const unsigned char[::1] allowed):
        """``pulls`` and ``mean`` are the discounted ones; ``sd`` is the bound for [0, 1]
        rewards (no sum of squares is kept): see ``MeanKernel._bounded_estimates``."""
        return self._bounded_estimates()


cdef class SlidingWindowUCBKernel(MeanKernel):
    """``n``/``s`` cover the last ``window`` rewards, kept in the ring buffers ``hist_arm`` and
    ``hist_reward``; ``g[0]`` counts all updates ever."""

    cdef Py_ssize_t window
    cdef double exploration
    cdef double[::1] hist_arm
    cdef double[::1] hist_reward

    def __init__(self, n_arms, dim, bit_generator, Py_ssize_t window, double exploration):
        if window < 1:
            raise ValueError(f"window: {window} must be >= 1")
        self.window = window
        self.exploration = exploration
        super().__init__(n_arms, dim, bit_generator)

    def _globals(self):
        g = MeanKernel._globals(self)
        g["hist_arm"] = np.zeros(self.window)
        g["hist_reward"] = np.zeros(self.window)
        return g

    cdef void _bind(self):
        MeanKernel._bind(self)
        self.hist_arm = self.arrays["hist_arm"]
        self.hist_reward = self.arrays["hist_reward"]

    cdef void _update(self, Py_ssize_t arm, double reward, const double* x,
                      double propensity) noexcept nogil:
        cdef Py_ssize_t t = <Py_ssize_t>self.g[0]
        cdef Py_ssize_t pos = t % self.window, old
        if t >= self.window:
            old = <Py_ssize_t>self.hist_arm[pos]
            self.n[old] -= 1.0
            self.s[old] -= self.hist_reward[pos]
            if self.n[old] <= 0.0:
                self.n[old] = 0.0
                self.s[old] = 0.0
        self.hist_arm[pos] = arm
        self.hist_reward[pos] = reward
        self.n[arm] += 1.0
        self.s[arm] += reward
        self.g[0] += 1.0

    cdef void _index(self, const unsigned char* allowed, double* scores) noexcept nogil:
        cdef Py_ssize_t i
        cdef double seen = self.g[0] if self.g[0] < self.window else <double>self.window
        cdef double log_n = log(seen) if seen > 1.0 else 0.0
        for i in range(self.k):
            if allowed[i]:
                if self.n[i] > 0.0:
                    scores[i] = (self.s[i] / self.n[i]
                                 + self.exploration * sqrt(2.0 * log_n / self.n[i]))
                else:
                    scores[i] = INFINITY

    cdef double _bonus_context(self) noexcept nogil:
        cdef double seen = self.g[0] if self.g[0] < self.window else <double>self.window
        return log(seen) if seen > 1.0 else 0.0

    cdef double _bonus(self, Py_ssize_t i, double log_n) noexcept nogil:
        return self.exploration * sqrt(2.0 * log_n / self.n[i])

    def _estimates(self, const unsigned char[::1] allowed):
        """Over the window: ``pulls`` and ``mean`` of the last ``window`` rewards; ``sd`` is the
        bound for [0, 1] rewards (see ``MeanKernel._bounded_estimates``)."""
        return self._bounded_estimates()


cdef class ThompsonBetaKernel(Kernel):
    """Per slot Beta(alpha, beta); a reward r adds r to alpha and 1 - r to beta."""

    cdef double prior_alpha, prior_beta
    cdef Py_ssize_t rounds
    cdef double[::1] alpha
    cdef double[::1] beta

    def __init__(self, n_arms, dim, bit_generator, double prior_alpha, double prior_beta,
                 Py_ssize_t rounds):
        self.prior_alpha = prior_alpha
        self.prior_beta = prior_beta
        self.rounds = rounds
        super().__init__(n_arms, dim, bit_generator)

    def _cold(self, Py_ssize_t n):
        return {"alpha": np.full(n, self.prior_alpha), "beta": np.full(n, self.prior_beta)}

    cdef void _bind(self):
        self.alpha = self.arrays["alpha"]
        self.beta = self.arrays["beta"]

    cdef void _update(self, Py_ssize_t arm, double reward, const double* x,
                      double propensity) noexcept nogil:
        self.alpha[arm] += reward
        self.beta[arm] += 1.0 - reward

    cdef Py_ssize_t _select(self, const double* x, const unsigned char* allowed, double* scores,
                            double* propensity) noexcept nogil:
        cdef Py_ssize_t i, arm, k = self.k
        cdef double a, b, ab
        cdef double* mean = &self.work[0]
        cdef double* sd = &self.work[k]
        cdef double* draws = &self.work[2 * k]
        for i in range(k):
            if allowed[i]:
                scores[i] = random_beta(self.rng, self.alpha[i], self.beta[i])
        arm = _argmax_ties(scores, allowed, k, self.rng, &self.tied[0], propensity)
        if arm < 0 or self.rounds == 0:
            return arm
        for i in range(k):
            a = self.alpha[i]
            b = self.beta[i]
            ab = a + b
            mean[i] = a / ab
            sd[i] = sqrt(a * b / (ab * ab * (ab + 1.0)))
        propensity[0] = _normal_propensity(mean, sd, allowed, k, arm, self.rounds, self.rng,
                                           draws)
        return arm

    cdef void _explain(self, const double* x, const unsigned char* allowed, const double* scores,
                       Py_ssize_t arm, double propensity, double* out,
                       double* theta_x) noexcept nogil:
        """The draw = posterior mean + (draw - posterior mean); the posterior's moments."""
        cdef Py_ssize_t i, k = self.k
        cdef double a, b, ab
        for i in range(k):
            a = self.alpha[i]
            b = self.beta[i]
            ab = a + b
            out[EX_POSTERIOR_MEAN * k + i] = a / ab
            out[EX_POSTERIOR_SD * k + i] = sqrt(a * b / (ab * ab * (ab + 1.0)))
            out[EX_MEAN * k + i] = a / ab
            out[EX_PULLS * k + i] = ab - self.prior_alpha - self.prior_beta
            if allowed[i]:
                out[EX_EXPLOITATION * k + i] = a / ab
                out[EX_EXPLORATION * k + i] = scores[i] - a / ab
        if 0 <= arm < k:
            out[EX_PROBABILITY * k + arm] = propensity

    def _estimates(self, const unsigned char[::1] allowed):
        """``mean`` and ``sd``: the Beta posterior's; ``pulls`` = alpha + beta - the prior's."""
        a = np.asarray(self.alpha)
        b = np.asarray(self.beta)
        ab = a + b
        return {
            "pulls": ab - self.prior_alpha - self.prior_beta,
            "mean": a / ab,
            "sd": np.sqrt(a * b / (ab * ab * (ab + 1.0))),
        }


cdef class ThompsonGaussianKernel(Kernel):
    """Gaussian Thompson sampling in one of two forms, chosen by ``noise_variance``.

    Known noise (``noise_variance`` > 0): per slot reward count ``n`` and sum ``s``; the mean's
    posterior is normal. (The state of this form is unchanged since it was the only one.)

    Learned noise (``noise_variance`` NaN): a Normal-Gamma posterior over (mean, precision tau),
    from the prior ``mean | tau ~ N(prior_mean, 1 / (prior_kappa tau))``, ``tau ~
    Gamma(prior_alpha, rate prior_beta)``. Per slot the reward count ``n``, mean ``mean`` and sum
    of squared deviations ``m2`` (Welford's updates) give ``kappa_n = kappa + n``,
    ``mu_n = (kappa prior_mean + n mean) / kappa_n``, ``alpha_n = alpha + n / 2``,
    ``beta_n = beta + m2 / 2 + kappa n (mean - prior_mean)^2 / (2 kappa_n)``. A score is one
    posterior draw: ``tau = Gamma(alpha_n) / beta_n`` then ``mu_n + N(0, 1) / sqrt(kappa_n tau)``
    (a gamma then a normal per slot, in slot order). The propensity is ``_normal_propensity``'s
    over the normal with the mean's marginal location and sd (a Student t of ``2 alpha_n``
    degrees of freedom, its sd taken at 3 or more where it would be infinite), as the Beta
    kernel does with its posterior's moments."""

    cdef double prior_mean, prior_variance, noise_variance
    cdef double prior_kappa, prior_alpha, prior_beta
    cdef bint learned
    cdef Py_ssize_t rounds
    cdef double[::1] n
    cdef double[::1] s
    cdef double[::1] mean
    cdef double[::1] m2

    def __init__(self, n_arms, dim, bit_generator, double prior_mean, double prior_variance,
                 double noise_variance, double prior_kappa, double prior_alpha,
                 double prior_beta, Py_ssize_t rounds):
        self.prior_mean = prior_mean
        self.prior_variance = prior_variance
        self.noise_variance = noise_variance
        self.learned = isnan(noise_variance)
        self.prior_kappa = prior_kappa
        self.prior_alpha = prior_alpha
        self.prior_beta = prior_beta
        self.rounds = rounds
        super().__init__(n_arms, dim, bit_generator)

    def _cold(self, Py_ssize_t n):
        if self.learned:
            return {"n": np.zeros(n), "mean": np.zeros(n), "m2": np.zeros(n)}
        return {"n": np.zeros(n), "s": np.zeros(n)}

    def _work_size(self):
        return 8 * max(self.k, 1)

    cdef void _bind(self):
        self.n = self.arrays["n"]
        if self.learned:
            self.mean = self.arrays["mean"]
            self.m2 = self.arrays["m2"]
        else:
            self.s = self.arrays["s"]

    cdef void _update(self, Py_ssize_t arm, double reward, const double* x,
                      double propensity) noexcept nogil:
        cdef double delta
        self.n[arm] += 1.0
        if self.learned:
            delta = reward - self.mean[arm]
            self.mean[arm] += delta / self.n[arm]
            self.m2[arm] += delta * (reward - self.mean[arm])
        else:
            self.s[arm] += reward

    cdef Py_ssize_t _select(self, const double* x, const unsigned char* allowed, double* scores,
                            double* propensity) noexcept nogil:
        if self.learned:
            return self._select_learned(allowed, scores, propensity)
        cdef Py_ssize_t i, arm, k = self.k
        cdef double precision
        cdef double* mean = &self.work[0]
        cdef double* sd = &self.work[k]
        cdef double* draws = &self.work[2 * k]
        for i in range(k):
            precision = 1.0 / self.prior_variance + self.n[i] / self.noise_variance
            mean[i] = (self.prior_mean / self.prior_variance
                       + self.s[i] / self.noise_variance) / precision
            sd[i] = 1.0 / sqrt(precision)
        for i in range(k):
            if allowed[i]:
                scores[i] = mean[i] + sd[i] * random_standard_normal(self.rng)
        arm = _argmax_ties(scores, allowed, k, self.rng, &self.tied[0], propensity)
        if arm >= 0 and self.rounds > 0:
            propensity[0] = _normal_propensity(mean, sd, allowed, k, arm, self.rounds,
                                               self.rng, draws)
        return arm

    cdef Py_ssize_t _select_learned(self, const unsigned char* allowed, double* scores,
                                    double* propensity) noexcept nogil:
        cdef Py_ssize_t i, arm, k = self.k
        cdef double n, d, kappa_n, alpha_n, beta_n, dof, spread
        # Per slot: mu_n and the normal's sd for the propensity, then kappa_n, alpha_n, beta_n,
        # then _normal_propensity's 3 k doubles of scratch.
        cdef double* mu = &self.work[0]
        cdef double* sd = &self.work[k]
        cdef double* kap = &self.work[2 * k]
        cdef double* alp = &self.work[3 * k]
        cdef double* bet = &self.work[4 * k]
        cdef double* scratch = &self.work[5 * k]
        for i in range(k):
            n = self.n[i]
            kappa_n = self.prior_kappa + n
            alpha_n = self.prior_alpha + 0.5 * n
            d = self.mean[i] - self.prior_mean
            beta_n = (self.prior_beta + 0.5 * self.m2[i]
                      + 0.5 * self.prior_kappa * n * d * d / kappa_n)
            mu[i] = (self.prior_kappa * self.prior_mean + n * self.mean[i]) / kappa_n
            kap[i] = kappa_n
            alp[i] = alpha_n
            bet[i] = beta_n
            # The mean's marginal is Student's t (2 alpha_n degrees of freedom, scale
            # sqrt(beta_n / (alpha_n kappa_n))); its sd, taken at 3 or more degrees of freedom.
            dof = 2.0 * alpha_n if alpha_n > 1.5 else 3.0
            sd[i] = sqrt(beta_n / (alpha_n * kappa_n) * dof / (dof - 2.0))
        for i in range(k):
            if allowed[i]:  # two statements: the gamma is drawn before the normal
                spread = 1.0 / sqrt(kap[i] * random_standard_gamma(self.rng, alp[i]) / bet[i])
                scores[i] = mu[i] + spread * random_standard_normal(self.rng)
        arm = _argmax_ties(scores, allowed, k, self.rng, &self.tied[0], propensity)
        if arm >= 0 and self.rounds > 0:
            propensity[0] = _normal_propensity(mu, sd, allowed, k, arm, self.rounds, self.rng,
                                               scratch)
        return arm

    cdef void _posterior(self, Py_ssize_t i, double* mean, double* sd) noexcept nogil:
        """The mean's posterior location and sd of slot ``i``, as the propensity reads them
        (learned noise: the Student t marginal's, its sd at 3 or more degrees of freedom)."""
        cdef double precision, n, kappa_n, alpha_n, beta_n, d, dof
        if not self.learned:
            precision = 1.0 / self.prior_variance + self.n[i] / self.noise_variance
            mean[0] = (self.prior_mean / self.prior_variance
                       + self.s[i] / self.noise_variance) / precision
            sd[0] = 1.0 / sqrt(precision)
            return
        n = self.n[i]
        kappa_n = self.prior_kappa + n
        alpha_n = self.prior_alpha + 0.5 * n
        d = self.mean[i] - self.prior_mean
        beta_n = self.prior_beta + 0.5 * self.m2[i] + 0.5 * self.prior_kappa * n * d * d / kappa_n
        mean[0] = (self.prior_kappa * self.prior_mean + n * self.mean[i]) / kappa_n
        dof = 2.0 * alpha_n if alpha_n > 1.5 else 3.0
        sd[0] = sqrt(beta_n / (alpha_n * kappa_n) * dof / (dof - 2.0))

    cdef void _explain(self, const double* x, const unsigned char* allowed, const double* scores,
                       Py_ssize_t arm, double propensity, double* out,
                       double* theta_x) noexcept nogil:
        cdef Py_ssize_t i, k = self.k
        cdef double mean, sd
        for i in range(k):
            self._posterior(i, &mean, &sd)
            out[EX_POSTERIOR_MEAN * k + i] = mean
            out[EX_POSTERIOR_SD * k + i] = sd
            out[EX_MEAN * k + i] = mean
            out[EX_PULLS * k + i] = self.n[i]
            if allowed[i]:
                out[EX_EXPLOITATION * k + i] = mean
                out[EX_EXPLORATION * k + i] = scores[i] - mean
        if 0 <= arm < k:
            out[EX_PROBABILITY * k + arm] = propensity

    def _estimates(self, const unsigned char[::1] allowed):
        """``mean`` and ``sd``: the posterior of the arm's mean (see ``_posterior``)."""
        cdef Py_ssize_t i
        cdef double m, v
        mean = np.empty(self.k)
        sd = np.empty(self.k)
        for i in range(self.k):
            self._posterior(i, &m, &v)
            mean[i] = m
            sd[i] = v
        return {"pulls": np.array(self.n, copy=True), "mean": mean, "sd": sd}


cdef Py_ssize_t _sample_index(const double* p, const unsigned char* allowed, Py_ssize_t k,
                              bitgen_t* rng) noexcept nogil:
    """Slot drawn from probabilities ``p`` (over allowed slots) with one uniform draw."""
    cdef double u = random_standard_uniform(rng), acc = 0.0
    cdef Py_ssize_t i, last = -1
    for i in range(k):
        if allowed[i]:
            acc += p[i]
            last = i
            if u < acc:
                return i
    return last


cdef class EXP3Kernel(Kernel):
    """Per slot ``logw`` (log weight) and ``last_p`` (probability at its latest selection);
    ``g[0]`` = number of slots eligible at the latest selection."""

    cdef double gamma
    cdef double[::1] logw
    cdef double[::1] last_p
    cdef double[::1] g

    def __init__(self, n_arms, dim, bit_generator, double gamma):
        self.gamma = gamma
        super().__init__(n_arms, dim, bit_generator)

    def _cold(self, Py_ssize_t n):
        start = 0.0
        if self.arrays is not None and "logw" in self.arrays and len(self.arrays["logw"]):
            start = float(np.max(self.arrays["logw"]))
        return {"logw": np.full(n, start), "last_p": np.zeros(n)}

    def _globals(self):
        return {"g": np.zeros(2)}

    cdef void _bind(self):
        self.logw = self.arrays["logw"]
        self.last_p = self.arrays["last_p"]
        self.g = self.arrays["g"]

    cdef Py_ssize_t _select(self, const double* x, const unsigned char* allowed, double* scores,
                            double* propensity) noexcept nogil:
        cdef Py_ssize_t i, m = 0, arm
        cdef double top = -INFINITY, total = 0.0
        for i in range(self.k):
            if allowed[i]:
                m += 1
                if self.logw[i] > top:
                    top = self.logw[i]
        if m == 0:
            return -1
        for i in range(self.k):
            if allowed[i]:
                scores[i] = exp(self.logw[i] - top)
                total += scores[i]
        for i in range(self.k):
            if allowed[i]:
                scores[i] = (1.0 - self.gamma) * scores[i] / total + self.gamma / m
        arm = _sample_index(scores, allowed, self.k, self.rng)
        propensity[0] = scores[arm]
        self.last_p[arm] = scores[arm]
        self.g[0] = m
        return arm

    cdef void _update(self, Py_ssize_t arm, double reward, const double* x,
                      double propensity) noexcept nogil:
        cdef double p = propensity
        # K = slots that exist when the reward is learned (not those eligible at the latest
        # selection), so that replaying the logged rewards in order rebuilds the same weights.
        cdef double m = <double>self.k
        if not (p > 0.0 and p <= 1.0):
            p = self.last_p[arm]
        if not (p > 0.0):
            p = 1.0 / m
        self.logw[arm] += self.gamma * (reward / p) / m

    cdef void _explain(self, const double* x, const unsigned char* allowed, const double* scores,
                       Py_ssize_t arm, double propensity, double* out,
                       double* theta_x) noexcept nogil:
        """p_i = (1 - gamma) w_i / sum w (exploitation) + gamma / m (exploration); no mean or
        count is kept."""
        self._probabilities(allowed, &out[EX_EXPLOITATION * self.k],
                            &out[EX_EXPLORATION * self.k], &out[EX_PROBABILITY * self.k])

    cdef void _probabilities(self, const unsigned char* allowed, double* exploit, double* explore,
                             double* prob) noexcept nogil:
        cdef Py_ssize_t i, m = 0
        cdef double top = -INFINITY, total = 0.0
        for i in range(self.k):
            if allowed[i]:
                m += 1
                if self.logw[i] > top:
                    top = self.logw[i]
        if m == 0:
            return
        for i in range(self.k):
            if allowed[i]:
                total += exp(self.logw[i] - top)
        for i in range(self.k):
            if allowed[i]:
                exploit[i] = (1.0 - self.gamma) * exp(self.logw[i] - top) / total
                explore[i] = self.gamma / m
                prob[i] = exploit[i] + explore[i]
            else:
                prob[i] = 0.0

    def _estimates(self, const unsigned char[::1] allowed):
        """No mean, sd or count is kept; ``probability`` of each allowed slot now."""
        cdef Py_ssize_t k = self.k
        block = np.full((3, k), np.nan)
        cdef double[:, ::1] b = block
        if k:
            self._probabilities(&allowed[0], &b[0, 0], &b[1, 0], &b[2, 0])
        nan = np.full(k, np.nan)
        return {"pulls": nan, "mean": nan.copy(), "sd": nan.copy(), "probability": block[2]}


cdef class SoftmaxKernel(MeanKernel):
    cdef double temperature

    def __init__(self, n_arms, dim, bit_generator, double temperature):
        self.temperature = temperature
        super().__init__(n_arms, dim, bit_generator)

    cdef Py_ssize_t _select(self, const double* x, const unsigned char* allowed, double* scores,
                            double* propensity) noexcept nogil:
        cdef Py_ssize_t i, arm = -1
        cdef double top = -INFINITY, total = 0.0, mean
        for i in range(self.k):
            if allowed[i]:
                mean = self.s[i] / self.n[i] if self.n[i] > 0.0 else 1.0
                scores[i] = mean
                if mean > top:
                    top = mean
        for i in range(self.k):
            if allowed[i]:
                scores[i] = exp((scores[i] - top) / self.temperature)
                total += scores[i]
        if total == 0.0:
            return -1
        for i in range(self.k):
            if allowed[i]:
                scores[i] = scores[i] / total
        arm = _sample_index(scores, allowed, self.k, self.rng)
        propensity[0] = scores[arm]
        return arm

    cdef void _probabilities(self, const unsigned char* allowed, double* prob) noexcept nogil:
        """exp((mean_i - top) / temperature) / total over the allowed slots (mean 1 untried)."""
        cdef Py_ssize_t i
        cdef double top = -INFINITY, total = 0.0, mean
        for i in range(self.k):
            if allowed[i]:
                mean = self.s[i] / self.n[i] if self.n[i] > 0.0 else 1.0
                if mean > top:
                    top = mean
        for i in range(self.k):
            if allowed[i]:
                mean = self.s[i] / self.n[i] if self.n[i] > 0.0 else 1.0
                total += exp((mean - top) / self.temperature)
        for i in range(self.k):
            if allowed[i] and total > 0.0:
                mean = self.s[i] / self.n[i] if self.n[i] > 0.0 else 1.0
                prob[i] = exp((mean - top) / self.temperature) / total
            else:
                prob[i] = 0.0

    cdef void _explain(self, const double* x, const unsigned char* allowed, const double* scores,
                       Py_ssize_t arm, double propensity, double* out,
                       double* theta_x) noexcept nogil:
        """The score is the probability: all exploitation; ``mean`` is the one it read."""
        cdef Py_ssize_t i, k = self.k
        self._probabilities(allowed, &out[EX_PROBABILITY * k])
        for i in range(k):
            out[EX_PULLS * k + i] = self.n[i]
            out[EX_MEAN * k + i] = self.s[i] / self.n[i] if self.n[i] > 0.0 else 1.0
            if allowed[i]:
                out[EX_EXPLOITATION * k + i] = out[EX_PROBABILITY * k + i]
                out[EX_EXPLORATION * k + i] = 0.0

    def _estimates(self, const unsigned char[::1] allowed):
        """As ``MeanKernel``'s, with the untried slots' mean read as 1 (as the policy does),
        and ``probability`` of each allowed slot now."""
        est = MeanKernel._estimates(self, allowed)
        est["mean"] = np.where(np.asarray(self.n) > 0.0, est["mean"], 1.0)
        prob = np.zeros(self.k)
        cdef double[::1] p = prob
        if self.k:
            self._probabilities(&allowed[0], &p[0])
        est["probability"] = prob
        return est
