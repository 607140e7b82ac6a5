"""Plain numpy reference implementations of every bandit policy.

The same maths as the Cython kernels of ``llmopt.native.bandit_free`` and
``llmopt.native.bandit_linear``, written the obvious way (Python loops over arms, ``numpy.linalg``
for the contextual policies: matrices are kept as sums and inverted or factored when needed, never
updated by Sherman-Morrison), drawing from a ``numpy.random.Generator(PCG64(seed))`` in the same
order as the kernels, so that a kernel and its reference fed the same calls make the same choices.
``state()`` gives the learned statistics under the names of the kernel's ``get_state``.

For the explanations: ``exploitation(x, allowed)`` is each allowed arm's exploitation part of
its score, by the reference's own maths (NaN elsewhere): the tests take the exploration part as
the reference's score minus it; ``estimates()`` is what ``Kernel.estimates`` should report
(means and their sd, theta and its sd, probabilities), computed from the reference's sums.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from llmopt.bandits import policies as P

PRUNE_SD = 5.0


class Reference:
    contextual = False

    def __init__(self, config: Any, n_arms: int, dim: int, seed: int) -> None:
        self.c = config
        self.k = n_arms
        self.dim = dim
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.rounds = P.PROPENSITY_DRAWS
        self.init()
        for _ in range(n_arms):
            self.cold()

    def init(self) -> None:
        pass

    def cold(self) -> None:
        raise NotImplementedError

    def exploitation(self, x: Any, allowed: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def estimates(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def add_arm(self) -> int:
        self.cold()
        self.k += 1
        return self.k - 1

    # --- shared selection rules -------------------------------------------------------------

    def argmax_ties(self, scores: list[float], allowed: np.ndarray) -> tuple[int, float]:
        idx = [i for i in range(self.k) if allowed[i]]
        if not idx:
            return -1, math.nan
        best = max(scores[i] for i in idx)
        tied = [i for i in idx if scores[i] == best]
        if len(tied) == 1:
            return tied[0], 1.0
        return tied[self.uniform_index(len(tied))], 1.0 / len(tied)

    def uniform_index(self, m: int) -> int:
        return min(int(self.rng.random() * m), m - 1)

    def mc_propensity(
        self, mean: list[float], sd: list[float], allowed: np.ndarray, arm: int
    ) -> float:
        idx = [i for i in range(self.k) if allowed[i]]
        floor = mean[arm] - PRUNE_SD * sd[arm]
        contend = [i for i in idx if i == arm or mean[i] + PRUNE_SD * sd[i] >= floor]
        wins = 0
        for r in range(0, self.rounds, 2):
            z = {i: self.rng.standard_normal() for i in contend}
            signs = (1.0, -1.0) if r + 1 < self.rounds else (1.0,)  # antithetic pairs
            for sign in signs:
                draws = {i: mean[i] + sign * sd[i] * z[i] for i in contend}
                winner = max(contend, key=lambda i: (draws[i], -i))
                wins += winner == arm
        return (1.0 + wins) / (1.0 + self.rounds)

    def sample_index(self, p: list[float], allowed: np.ndarray) -> int:
        u = self.rng.random()
        acc = 0.0
        last = -1
        for i in range(self.k):
            if allowed[i]:
                acc += p[i]
                last = i
                if u < acc:
                    return i
        return last


class MeanRef(Reference):
    def init(self) -> None:
        self.n: list[float] = []
        self.s: list[float] = []
        self.ss: list[float] = []
        self.total = 0.0

    def cold(self) -> None:
        self.n.append(0.0)
        self.s.append(0.0)
        self.ss.append(0.0)

    def update(self, arm: int, r: float, x: Any = None, propensity: float | None = None) -> None:
        self.n[arm] += 1.0
        self.s[arm] += r
        self.ss[arm] += r * r
        self.total += 1.0

    def log_n(self) -> float:
        return math.log(self.total) if self.total > 1.0 else 0.0

    def index(self, i: int) -> float:
        raise NotImplementedError

    def select(self, x: Any, allowed: np.ndarray) -> tuple[int, float, np.ndarray]:
        scores = [math.nan] * self.k
        for i in range(self.k):
            if allowed[i]:
                scores[i] = self.index(i) if self.n[i] > 0.0 else math.inf
        arm, p = self.argmax_ties(scores, allowed)
        return arm, p, np.array(scores)

    def state(self) -> dict[str, np.ndarray]:
        return {"n": np.array(self.n), "s": np.array(self.s), "ss": np.array(self.ss)}

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """(n, s) per arm, as the index reads them."""
        return np.array(self.n), np.array(self.s)

    def exploitation(self, x: Any, allowed: np.ndarray) -> np.ndarray:
        """The mean; 0 for an untried arm (its +inf score is all exploration)."""
        n, s = self.stats()
        out = np.full(self.k, math.nan)
        for i in range(self.k):
            if allowed[i]:
                out[i] = s[i] / n[i] if n[i] > 0 else 0.0
        return out

    def estimates(self) -> dict[str, np.ndarray]:
        """The mean and its standard error from the rewards' sample variance."""
        n, s = self.stats()
        mean = np.array([s[i] / n[i] if n[i] > 0 else math.nan for i in range(self.k)])
        sd = np.array(
            [
                math.sqrt(max(self.ss[i] / n[i] - mean[i] ** 2, 0.0) / n[i])
                if n[i] > 0
                else math.nan
                for i in range(self.k)
            ]
        )
        return {"pulls": n, "mean": mean, "sd": sd}

    def bounded_estimates(self) -> dict[str, np.ndarray]:
        """The mean and the largest standard error [0, 1] rewards allow: sqrt(m (1 - m) / n)."""
        n, s = self.stats()
        mean = np.array([s[i] / n[i] if n[i] > 0 else math.nan for i in range(self.k)])
        sd = np.array(
            [
                math.sqrt(max(mean[i] * (1 - mean[i]), 0.0) / n[i]) if n[i] > 0 else math.nan
                for i in range(self.k)
            ]
        )
        return {"pulls": n, "mean": mean, "sd": sd}


class EpsilonGreedyRef(MeanRef):
    def init(self) -> None:
        super().init()
        self.t = 0.0

    def epsilon(self) -> float:
        c = self.c
        if c.decay == P.EpsilonDecay.NONE:
            return float(c.epsilon)
        if c.decay == P.EpsilonDecay.LINEAR:
            e = c.epsilon - c.decay_rate * self.t
        elif c.decay == P.EpsilonDecay.EXPONENTIAL:
            e = c.epsilon * math.exp(-c.decay_rate * self.t)
        else:
            e = c.epsilon / (1.0 + c.decay_rate * math.log(1.0 + self.t))
        return max(e, c.min_epsilon)

    def select(self, x: Any, allowed: np.ndarray) -> tuple[int, float, np.ndarray]:
        eps = self.epsilon()
        scores = [math.nan] * self.k
        idx = [i for i in range(self.k) if allowed[i]]
        for i in idx:
            scores[i] = self.s[i] / self.n[i] if self.n[i] > 0.0 else math.inf
        self.t += 1.0
        best = max(scores[i] for i in idx)
        tied = [i for i in idx if scores[i] == best]
        if self.rng.random() < eps:
            arm = idx[self.uniform_index(len(idx))]
        else:
            arm = tied[self.uniform_index(len(tied))] if len(tied) > 1 else tied[0]
        greedy = 1.0 / len(tied) if arm in tied else 0.0
        return arm, (1.0 - eps) * greedy + eps / len(idx), np.array(scores)


class UCB1Ref(MeanRef):
    def index(self, i: int) -> float:
        return self.s[i] / self.n[i] + self.c.exploration * math.sqrt(
            2.0 * self.log_n() / self.n[i]
        )


class UCBTunedRef(MeanRef):
    def index(self, i: int) -> float:
        mean = self.s[i] / self.n[i]
        var = max(self.ss[i] / self.n[i] - mean * mean, 0.0)
        v = min(var + math.sqrt(2.0 * self.log_n() / self.n[i]), 0.25)
        return mean + math.sqrt(self.log_n() / self.n[i] * v)


class UCBVRef(MeanRef):
    def index(self, i: int) -> float:
        e = self.c.exploration * self.log_n()
        mean = self.s[i] / self.n[i]
        var = max(self.ss[i] / self.n[i] - mean * mean, 0.0)
        return mean + math.sqrt(2.0 * var * e / self.n[i]) + 3.0 * e / self.n[i]


def kl_bernoulli(p: float, q: float) -> float:
    eps = 1e-15
    p = min(max(p, eps), 1.0 - eps)
    q = min(max(q, eps), 1.0 - eps)
    return p * math.log(p / q) + (1.0 - p) * math.log((1.0 - p) / (1.0 - q))


def kl_ucb_bound(mean: float, n: float, budget: float) -> float:
    if budget <= 0.0 or mean >= 1.0:
        return mean
    q = mean + math.sqrt(budget / (2.0 * n))
    if q >= 1.0:
        q = 1.0 - 1e-12
        if n * kl_bernoulli(mean, q) <= budget:
            return 1.0
    for _ in range(30):
        fq = n * kl_bernoulli(mean, q) - budget
        if fq <= 0.0:
            break
        nq = max(q - fq / (n * (q - mean) / (q * (1.0 - q))), mean)
        if q - nq < 1e-12:
            q = nq
            break
        q = nq
    return q


class KLUCBRef(MeanRef):
    def index(self, i: int) -> float:
        log_n = self.log_n()
        budget = log_n + (self.c.c * math.log(log_n) if log_n > 1.0 else 0.0)
        return kl_ucb_bound(self.s[i] / self.n[i], self.n[i], budget)


class DiscountedUCBRef(MeanRef):
    def init(self) -> None:
        super().init()
        self.pulls: list[float] = []

    def cold(self) -> None:
        super().cold()
        self.pulls.append(0.0)

    def update(self, arm: int, r: float, x: Any = None, propensity: float | None = None) -> None:
        g = self.c.gamma
        self.n = [v * g for v in self.n]
        self.s = [v * g for v in self.s]
        self.n[arm] += 1.0
        self.s[arm] += r
        self.pulls[arm] += 1.0
        total = 0.0
        for v in self.n:
            total += v
        self.total = total

    def select(self, x: Any, allowed: np.ndarray) -> tuple[int, float, np.ndarray]:
        scores = [math.nan] * self.k
        for i in range(self.k):
            if allowed[i]:
                if self.pulls[i] > 0.0 and self.n[i] > 0.0:
                    scores[i] = self.s[i] / self.n[i] + self.c.exploration * math.sqrt(
                        2.0 * self.log_n() / self.n[i]
                    )
                else:
                    scores[i] = math.inf
        arm, p = self.argmax_ties(scores, allowed)
        return arm, p, np.array(scores)

    def state(self) -> dict[str, np.ndarray]:
        return {"n": np.array(self.n), "s": np.array(self.s), "pulls": np.array(self.pulls)}

    def exploitation(self, x: Any, allowed: np.ndarray) -> np.ndarray:
        out = super().exploitation(x, allowed)
        out[(np.array(self.pulls) == 0) & (allowed == 1)] = 0.0
        return out

    def estimates(self) -> dict[str, np.ndarray]:
        return self.bounded_estimates()


class SlidingWindowUCBRef(MeanRef):
    def init(self) -> None:
        super().init()
        self.history: list[tuple[int, float]] = []

    def update(self, arm: int, r: float, x: Any = None, propensity: float | None = None) -> None:
        self.history.append((arm, r))
        self.total += 1.0

    def window_stats(self) -> tuple[np.ndarray, np.ndarray]:
        n = np.zeros(self.k)
        s = np.zeros(self.k)
        for arm, r in self.history[-self.c.window :]:
            n[arm] += 1.0
            s[arm] += r
        return n, s

    def select(self, x: Any, allowed: np.ndarray) -> tuple[int, float, np.ndarray]:
        n, s = self.window_stats()
        seen = min(self.total, float(self.c.window))
        log_n = math.log(seen) if seen > 1.0 else 0.0
        scores = [math.nan] * self.k
        for i in range(self.k):
            if allowed[i]:
                scores[i] = (
                    s[i] / n[i] + self.c.exploration * math.sqrt(2.0 * log_n / n[i])
                    if n[i] > 0
                    else math.inf
                )
        arm, p = self.argmax_ties(scores, allowed)
        return arm, p, np.array(scores)

    def state(self) -> dict[str, np.ndarray]:
        n, s = self.window_stats()
        return {"n": n, "s": s}

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        return self.window_stats()

    def estimates(self) -> dict[str, np.ndarray]:
        return self.bounded_estimates()


class ThompsonBetaRef(Reference):
    def init(self) -> None:
        self.alpha: list[float] = []
        self.beta: list[float] = []

    def cold(self) -> None:
        self.alpha.append(self.c.prior_alpha)
        self.beta.append(self.c.prior_beta)

    def update(self, arm: int, r: float, x: Any = None, propensity: float | None = None) -> None:
        self.alpha[arm] += r
        self.beta[arm] += 1.0 - r

    def select(self, x: Any, allowed: np.ndarray) -> tuple[int, float, np.ndarray]:
        scores = [math.nan] * self.k
        for i in range(self.k):
            if allowed[i]:
                scores[i] = self.rng.beta(self.alpha[i], self.beta[i])
        arm, _ = self.argmax_ties(scores, allowed)
        mean, sd = [], []
        for a, b in zip(self.alpha, self.beta, strict=True):
            mean.append(a / (a + b))
            ab = a + b
            sd.append(math.sqrt(a * b / (ab * ab * (ab + 1.0))))
        return arm, self.mc_propensity(mean, sd, allowed, arm), np.array(scores)

    def state(self) -> dict[str, np.ndarray]:
        return {"alpha": np.array(self.alpha), "beta": np.array(self.beta)}

    def estimates(self) -> dict[str, np.ndarray]:
        a, b = np.array(self.alpha), np.array(self.beta)
        return {
            "pulls": a + b - self.c.prior_alpha - self.c.prior_beta,
            "mean": a / (a + b),
            "sd": np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1))),
        }

    def exploitation(self, x: Any, allowed: np.ndarray) -> np.ndarray:
        return np.where(allowed == 1, self.estimates()["mean"], math.nan)


class ThompsonGaussianRef(Reference):
    """Known noise: the normal posterior from counts and sums. Learned noise (``noise_variance``
    None): the Normal-Gamma posterior from the arm's rewards, kept as lists (no running
    statistics), its draws a gamma then a normal per arm."""

    def init(self) -> None:
        self.rewards: list[list[float]] = []

    def cold(self) -> None:
        self.rewards.append([])

    def update(self, arm: int, r: float, x: Any = None, propensity: float | None = None) -> None:
        self.rewards[arm].append(r)

    def select(self, x: Any, allowed: np.ndarray) -> tuple[int, float, np.ndarray]:
        if self.c.noise_variance is None:
            return self.select_learned(allowed)
        c = self.c
        prec = [1.0 / c.prior_variance + len(r) / c.noise_variance for r in self.rewards]
        mean = [
            (c.prior_mean / c.prior_variance + math.fsum(r) / c.noise_variance) / p
            for r, p in zip(self.rewards, prec, strict=True)
        ]
        sd = [1.0 / math.sqrt(p) for p in prec]
        scores = [math.nan] * self.k
        for i in range(self.k):
            if allowed[i]:
                scores[i] = mean[i] + sd[i] * self.rng.standard_normal()
        arm, _ = self.argmax_ties(scores, allowed)
        return arm, self.mc_propensity(mean, sd, allowed, arm), np.array(scores)

    def posterior(self, i: int) -> tuple[float, float, float, float]:
        """(mu_n, kappa_n, alpha_n, beta_n) of arm i, the textbook Normal-Gamma update."""
        c, r = self.c, np.array(self.rewards[i])
        n = len(r)
        xbar = float(r.mean()) if n else 0.0
        ss = float(np.sum((r - xbar) ** 2)) if n else 0.0
        kappa_n = c.prior_kappa + n
        mu_n = (c.prior_kappa * c.prior_mean + n * xbar) / kappa_n
        beta_n = (
            c.prior_beta + ss / 2 + c.prior_kappa * n * (xbar - c.prior_mean) ** 2 / (2 * kappa_n)
        )
        return mu_n, kappa_n, c.prior_alpha + n / 2, beta_n

    def select_learned(self, allowed: np.ndarray) -> tuple[int, float, np.ndarray]:
        post = [self.posterior(i) for i in range(self.k)]
        scores = [math.nan] * self.k
        for i in range(self.k):
            if allowed[i]:
                mu, kappa, alpha, beta = post[i]
                tau = self.rng.gamma(alpha, 1.0 / beta)
                scores[i] = mu + self.rng.standard_normal() / math.sqrt(kappa * tau)
        arm, _ = self.argmax_ties(scores, allowed)
        if arm < 0:
            return arm, math.nan, np.array(scores)
        # The propensity's normal: the Student t marginal's location and sd (at >= 3 dof).
        mean, sd = [], []
        for mu, kappa, alpha, beta in post:
            dof = max(2 * alpha, 3.0)
            mean.append(mu)
            sd.append(math.sqrt(beta / (alpha * kappa) * dof / (dof - 2)))
        return arm, self.mc_propensity(mean, sd, allowed, arm), np.array(scores)

    def state(self) -> dict[str, np.ndarray]:
        n = np.array([float(len(r)) for r in self.rewards])
        if self.c.noise_variance is not None:
            return {"n": n, "s": np.array([math.fsum(r) for r in self.rewards])}
        mean = np.array([float(np.mean(r)) if r else 0.0 for r in self.rewards])
        m2 = np.array(
            [float(np.sum((np.array(r) - m) ** 2)) for r, m in zip(self.rewards, mean, strict=True)]
        )
        return {"n": n, "mean": mean, "m2": m2}

    def estimates(self) -> dict[str, np.ndarray]:
        """The posterior of each arm's mean: normal (known noise), or the Student t marginal's
        location and sd at 3 or more degrees of freedom (learned noise)."""
        c = self.c
        mean, sd = [], []
        for i, r in enumerate(self.rewards):
            if c.noise_variance is not None:
                prec = 1.0 / c.prior_variance + len(r) / c.noise_variance
                mean.append(
                    (c.prior_mean / c.prior_variance + math.fsum(r) / c.noise_variance) / prec
                )
                sd.append(1.0 / math.sqrt(prec))
            else:
                mu, kappa, alpha, beta = self.posterior(i)
                dof = max(2 * alpha, 3.0)
                mean.append(mu)
                sd.append(math.sqrt(beta / (alpha * kappa) * dof / (dof - 2)))
        n = np.array([float(len(r)) for r in self.rewards])
        return {"pulls": n, "mean": np.array(mean), "sd": np.array(sd)}

    def exploitation(self, x: Any, allowed: np.ndarray) -> np.ndarray:
        return np.where(allowed == 1, self.estimates()["mean"], math.nan)


class EXP3Ref(Reference):
    def init(self) -> None:
        self.logw: list[float] = []
        self.last_p: list[float] = []
        self.m = 0.0

    def cold(self) -> None:
        self.logw.append(max(self.logw) if self.logw else 0.0)
        self.last_p.append(0.0)

    def select(self, x: Any, allowed: np.ndarray) -> tuple[int, float, np.ndarray]:
        idx = [i for i in range(self.k) if allowed[i]]
        top = max(self.logw[i] for i in idx)
        w = [math.nan] * self.k
        total = 0.0
        for i in idx:
            w[i] = math.exp(self.logw[i] - top)
            total += w[i]
        g = self.c.gamma
        p = [math.nan] * self.k
        for i in idx:
            p[i] = (1.0 - g) * w[i] / total + g / len(idx)
        arm = self.sample_index(p, allowed)
        self.last_p[arm] = p[arm]
        self.m = float(len(idx))
        return arm, p[arm], np.array(p)

    def update(self, arm: int, r: float, x: Any = None, propensity: float | None = None) -> None:
        m = float(self.k)
        p = propensity if propensity is not None and 0.0 < propensity <= 1.0 else self.last_p[arm]
        if not p > 0.0:
            p = 1.0 / m
        self.logw[arm] += self.c.gamma * (r / p) / m

    def state(self) -> dict[str, np.ndarray]:
        return {"logw": np.array(self.logw), "last_p": np.array(self.last_p)}

    def weight_share(self, allowed: np.ndarray) -> np.ndarray:
        """(1 - gamma) w_i / sum w over the allowed arms (NaN elsewhere)."""
        w = np.where(allowed == 1, np.exp(np.array(self.logw) - max(self.logw)), math.nan)
        return (1.0 - self.c.gamma) * w / np.nansum(w)

    def exploitation(self, x: Any, allowed: np.ndarray) -> np.ndarray:
        return self.weight_share(allowed)

    def estimates(self) -> dict[str, np.ndarray]:
        nan = np.full(self.k, math.nan)
        allowed = np.ones(self.k, dtype=np.uint8)
        p = self.weight_share(allowed) + self.c.gamma / self.k
        return {"pulls": nan, "mean": nan, "sd": nan, "probability": p}


class SoftmaxRef(MeanRef):
    def select(self, x: Any, allowed: np.ndarray) -> tuple[int, float, np.ndarray]:
        idx = [i for i in range(self.k) if allowed[i]]
        means = {i: self.s[i] / self.n[i] if self.n[i] > 0.0 else 1.0 for i in idx}
        top = max(means.values())
        p = [math.nan] * self.k
        total = 0.0
        for i in idx:
            p[i] = math.exp((means[i] - top) / self.c.temperature)
            total += p[i]
        for i in idx:
            p[i] = p[i] / total
        arm = self.sample_index(p, allowed)
        return arm, p[arm], np.array(p)

    def probabilities(self, allowed: np.ndarray) -> np.ndarray:
        means = np.array([s / n if n > 0 else 1.0 for n, s in zip(self.n, self.s, strict=True)])
        e = np.where(allowed == 1, np.exp(means / self.c.temperature), 0.0)
        return e / e.sum()

    def exploitation(self, x: Any, allowed: np.ndarray) -> np.ndarray:
        return np.where(allowed == 1, self.probabilities(allowed), math.nan)

    def estimates(self) -> dict[str, np.ndarray]:
        est = super().estimates()
        est["mean"] = np.where(est["pulls"] > 0, est["mean"], 1.0)
        est["probability"] = self.probabilities(np.ones(self.k, dtype=np.uint8))
        return est


# --- contextual ------------------------------------------------------------------------------


class LinUCBRef(Reference):
    """Keeps A = lambda I + sum x x^T and b per arm; inverts A when scoring."""

    contextual = True

    def init(self) -> None:
        self.a: list[np.ndarray] = []
        self.b: list[np.ndarray] = []
        self.pulls: list[float] = []

    def cold(self) -> None:
        self.a.append(np.eye(self.dim) * self.c.lambda_)
        self.b.append(np.zeros(self.dim))
        self.pulls.append(0.0)

    def update(self, arm: int, r: float, x: Any = None, propensity: float | None = None) -> None:
        self.a[arm] += np.outer(x, x)
        self.b[arm] += r * x
        self.pulls[arm] += 1.0

    def select(self, x: Any, allowed: np.ndarray) -> tuple[int, float, np.ndarray]:
        scores = [math.nan] * self.k
        for i in range(self.k):
            if allowed[i]:
                if self.pulls[i] > 0:
                    ainv = np.linalg.inv(self.a[i])
                    q = float(x @ ainv @ x)
                    scores[i] = float((ainv @ self.b[i]) @ x) + self.c.alpha * math.sqrt(
                        max(q, 0.0)
                    )
                else:
                    scores[i] = math.inf
        arm, p = self.argmax_ties(scores, allowed)
        return arm, p, np.array(scores)

    def state(self) -> dict[str, np.ndarray]:
        ainv = np.array([np.linalg.inv(a) for a in self.a])
        return {
            "ainv": ainv,
            "b": np.array(self.b),
            "theta": np.einsum("kij,kj->ki", ainv, np.array(self.b)),
            "pulls": np.array(self.pulls),
        }

    def estimates(self) -> dict[str, np.ndarray]:
        nan = np.full(self.k, math.nan)
        theta = np.array([np.linalg.solve(a, b) for a, b in zip(self.a, self.b, strict=True)])
        sd = np.array([np.sqrt(np.diag(np.linalg.inv(a))) for a in self.a])
        return {
            "pulls": np.array(self.pulls),
            "mean": nan,
            "sd": nan,
            "theta": theta,
            "theta_sd": sd,
        }

    def exploitation(self, x: Any, allowed: np.ndarray) -> np.ndarray:
        return np.where(allowed == 1, self.estimates()["theta"] @ x, math.nan)


class HybridLinUCBRef(Reference):
    """Li et al. 2010 algorithm 2 as printed, with z = x and explicit inverses."""

    contextual = True

    def init(self) -> None:
        d = self.dim
        self.a0 = np.eye(d) * self.c.lambda_
        self.b0 = np.zeros(d)
        self.a: list[np.ndarray] = []
        self.bm: list[np.ndarray] = []
        self.b: list[np.ndarray] = []
        self.pulls: list[float] = []

    def cold(self) -> None:
        d = self.dim
        self.a.append(np.eye(d) * self.c.lambda_)
        self.bm.append(np.zeros((d, d)))
        self.b.append(np.zeros(d))
        self.pulls.append(0.0)

    def select(self, x: Any, allowed: np.ndarray) -> tuple[int, float, np.ndarray]:
        z = x
        a0inv = np.linalg.inv(self.a0)
        beta = a0inv @ self.b0
        scores = [math.nan] * self.k
        for i in range(self.k):
            if not allowed[i]:
                continue
            if self.pulls[i] <= 0:
                scores[i] = math.inf
                continue
            ainv = np.linalg.inv(self.a[i])
            bm = self.bm[i]
            theta = ainv @ (self.b[i] - bm @ beta)
            s = (
                z @ a0inv @ z
                - 2.0 * z @ a0inv @ bm.T @ ainv @ x
                + x @ ainv @ x
                + x @ ainv @ bm @ a0inv @ bm.T @ ainv @ x
            )
            scores[i] = float(z @ beta + x @ theta + self.c.alpha * math.sqrt(max(s, 0.0)))
        arm, p = self.argmax_ties(scores, allowed)
        return arm, p, np.array(scores)

    def coefficients(self, i: int) -> np.ndarray:
        """beta + theta_i: the shared coefficients plus the arm's own."""
        beta = np.linalg.solve(self.a0, self.b0)
        return beta + np.linalg.solve(self.a[i], self.b[i] - self.bm[i] @ beta)

    def score_variance(self, i: int, x: np.ndarray) -> float:
        """s of Li et al.'s algorithm 2 for arm i at context x (z = x)."""
        a0inv, ainv, bm, z = np.linalg.inv(self.a0), np.linalg.inv(self.a[i]), self.bm[i], x
        return float(
            z @ a0inv @ z
            - 2.0 * z @ a0inv @ bm.T @ ainv @ x
            + x @ ainv @ x
            + x @ ainv @ bm @ a0inv @ bm.T @ ainv @ x
        )

    def estimates(self) -> dict[str, np.ndarray]:
        """theta_sd_j: the sd of coefficient j, s at the unit context e_j."""
        nan = np.full(self.k, math.nan)
        eye = np.eye(self.dim)
        theta = np.array([self.coefficients(i) for i in range(self.k)])
        sd = np.array(
            [[math.sqrt(max(self.score_variance(i, e), 0.0)) for e in eye] for i in range(self.k)]
        )
        return {
            "pulls": np.array(self.pulls),
            "mean": nan,
            "sd": nan,
            "theta": theta,
            "theta_sd": sd,
        }

    def exploitation(self, x: Any, allowed: np.ndarray) -> np.ndarray:
        return np.where(allowed == 1, self.estimates()["theta"] @ x, math.nan)

    def update(self, arm: int, r: float, x: Any = None, propensity: float | None = None) -> None:
        z = x
        ainv = np.linalg.inv(self.a[arm])
        bm = self.bm[arm]
        self.a0 += bm.T @ ainv @ bm
        self.b0 += bm.T @ ainv @ self.b[arm]
        self.a[arm] += np.outer(x, x)
        self.bm[arm] += np.outer(x, z)
        self.b[arm] += r * x
        ainv = np.linalg.inv(self.a[arm])
        bm = self.bm[arm]
        self.a0 += np.outer(z, z) - bm.T @ ainv @ bm
        self.b0 += r * z - bm.T @ ainv @ self.b[arm]
        self.pulls[arm] += 1.0

    def state(self) -> dict[str, np.ndarray]:
        a0inv = np.linalg.inv(self.a0)
        return {
            "a0": self.a0.copy(),
            "a0inv": a0inv,
            "b0": self.b0.copy(),
            "beta": a0inv @ self.b0,
            "ainv": np.array([np.linalg.inv(a) for a in self.a]),
            "bmat": np.array(self.bm),
            "b": np.array(self.b),
            "pulls": np.array(self.pulls),
        }


class LinearThompsonRef(Reference):
    """Keeps B and f per arm; samples theta = mu + v L^-T z with L = cholesky(B)."""

    contextual = True

    def init(self) -> None:
        self.bmat: list[np.ndarray] = []
        self.f: list[np.ndarray] = []

    def cold(self) -> None:
        self.bmat.append(np.eye(self.dim) * self.c.lambda_)
        self.f.append(np.zeros(self.dim))

    def update(self, arm: int, r: float, x: Any = None, propensity: float | None = None) -> None:
        self.bmat[arm] += np.outer(x, x)
        self.f[arm] += r * x

    def select(self, x: Any, allowed: np.ndarray) -> tuple[int, float, np.ndarray]:
        v = self.c.v
        scores = [math.nan] * self.k
        mean = [0.0] * self.k
        sd = [0.0] * self.k
        for i in range(self.k):
            if not allowed[i]:
                continue
            chol = np.linalg.cholesky(self.bmat[i])
            mu = np.linalg.solve(self.bmat[i], self.f[i])
            z = self.rng.standard_normal(self.dim)
            theta = mu + v * np.linalg.solve(chol.T, z)
            scores[i] = float(x @ theta)
            mean[i] = float(x @ mu)
            sd[i] = v * math.sqrt(float(x @ np.linalg.solve(self.bmat[i], x)))
        arm, _ = self.argmax_ties(scores, allowed)
        return arm, self.mc_propensity(mean, sd, allowed, arm), np.array(scores)

    def state(self) -> dict[str, np.ndarray]:
        return {
            "chol": np.array([np.linalg.cholesky(b) for b in self.bmat]),
            "f": np.array(self.f),
            "mu": np.array([np.linalg.solve(b, f) for b, f in zip(self.bmat, self.f, strict=True)]),
        }

    def estimates(self) -> dict[str, np.ndarray]:
        nan = np.full(self.k, math.nan)
        theta = self.state()["mu"]
        sd = np.array([self.c.v * np.sqrt(np.diag(np.linalg.inv(b))) for b in self.bmat])
        return {"pulls": nan, "mean": nan, "sd": nan, "theta": theta, "theta_sd": sd}

    def exploitation(self, x: Any, allowed: np.ndarray) -> np.ndarray:
        return np.where(allowed == 1, self.estimates()["theta"] @ x, math.nan)

    def score_sd(self, x: np.ndarray) -> np.ndarray:
        """The sd of each arm's draw x . theta: v sqrt(x^T B^-1 x)."""
        return np.array([self.c.v * math.sqrt(x @ np.linalg.solve(b, x)) for b in self.bmat])


class DiagonalThompsonRef(Reference):
    contextual = True

    def init(self) -> None:
        self.prec: list[np.ndarray] = []
        self.bvec: list[np.ndarray] = []

    def cold(self) -> None:
        self.prec.append(np.full(self.dim, 1.0 / self.c.prior_variance))
        self.bvec.append(np.zeros(self.dim))

    def update(self, arm: int, r: float, x: Any = None, propensity: float | None = None) -> None:
        self.prec[arm] += x * x / self.c.noise_variance
        self.bvec[arm] += r * x / self.c.noise_variance

    def select(self, x: Any, allowed: np.ndarray) -> tuple[int, float, np.ndarray]:
        scores = [math.nan] * self.k
        mean = [0.0] * self.k
        sd = [0.0] * self.k
        for i in range(self.k):
            if not allowed[i]:
                continue
            mu = self.bvec[i] / self.prec[i]
            theta = mu + self.rng.standard_normal(self.dim) / np.sqrt(self.prec[i])
            scores[i] = float(x @ theta)
            mean[i] = float(x @ mu)
            sd[i] = math.sqrt(float(np.sum(x * x / self.prec[i])))
        arm, _ = self.argmax_ties(scores, allowed)
        return arm, self.mc_propensity(mean, sd, allowed, arm), np.array(scores)

    def state(self) -> dict[str, np.ndarray]:
        return {"prec": np.array(self.prec), "bvec": np.array(self.bvec)}

    def estimates(self) -> dict[str, np.ndarray]:
        nan = np.full(self.k, math.nan)
        prec, bvec = np.array(self.prec), np.array(self.bvec)
        return {"pulls": nan, "mean": nan, "sd": nan, "theta": bvec / prec, "theta_sd": prec**-0.5}

    def exploitation(self, x: Any, allowed: np.ndarray) -> np.ndarray:
        return np.where(allowed == 1, self.estimates()["theta"] @ x, math.nan)

    def score_sd(self, x: np.ndarray) -> np.ndarray:
        return np.sqrt(np.array(self.prec) ** -1.0 @ (x * x))


REFERENCES: dict[type, type[Reference]] = {
    P.EpsilonGreedy: EpsilonGreedyRef,
    P.UCB1: UCB1Ref,
    P.UCBTuned: UCBTunedRef,
    P.UCBV: UCBVRef,
    P.KLUCB: KLUCBRef,
    P.DiscountedUCB: DiscountedUCBRef,
    P.SlidingWindowUCB: SlidingWindowUCBRef,
    P.ThompsonBeta: ThompsonBetaRef,
    P.ThompsonGaussian: ThompsonGaussianRef,
    P.EXP3: EXP3Ref,
    P.Softmax: SoftmaxRef,
    P.LinUCB: LinUCBRef,
    P.HybridLinUCB: HybridLinUCBRef,
    P.LinearThompson: LinearThompsonRef,
    P.DiagonalThompson: DiagonalThompsonRef,
}


def make_reference(config: Any, n_arms: int, dim: int, seed: int) -> Reference:
    return REFERENCES[type(config)](config, n_arms, dim, seed)
