"""In-process policy latency: ``select`` and ``update`` of every policy, K = 10 arms, d = 10.

Every policy of the policy table (``llmopt.bandits.policies.POLICY_TABLE``) with its default
parameters, and the forms of ``FORMS`` (Gaussian Thompson with a known noise variance): a new
policy gets its rows by being registered.

Each policy is first trained for 2,000 rounds on Bernoulli arms (so that the timed calls see a
learned state, not the cold start), then each call is timed alone. Targets (issue 5): select p99
<= 5 us for every context-free policy; select and update p99 <= 25 us for the contextual ones.
Update of a context-free policy has no target (informational row).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from benchmarks.harness import Context, Result, latency_result, time_calls
from llmopt.bandits import policies as P

ARMS = 10
DIM = 10
FREE_SELECT_P99_US = 5.0
CONTEXTUAL_P99_US = 25.0


FORMS: dict[str, Callable[[], Any]] = {
    "thompson_gaussian.known_noise": lambda: P.ThompsonGaussian(noise_variance=0.25),
}
"""Forms of a policy worth rows of their own beside its default (row label -> config)."""


def policy_configs() -> list[tuple[str, Any]]:
    """(row label, config): the default config of every policy in the policy table
    (``POLICY_TABLE``), in its order, labelled by its oneof name, then ``FORMS``. A policy is
    benchmarked by being registered there."""
    defaults = [(kind.ONEOF, kind()) for kind in P.POLICY_TABLE]  # type: ignore[attr-defined]
    return defaults + [(label, make()) for label, make in FORMS.items()]


CONFIGS: list[tuple[str, Any]] = policy_configs()


def trained(config: Any, contexts: np.ndarray, rounds: int = 2000) -> P.Policy:
    policy = P.make_policy(config, ARMS, DIM, seed=1)
    env = np.random.default_rng(2)
    probs = np.linspace(0.1, 0.6, ARMS)
    allowed = np.ones(ARMS, dtype=np.uint8)
    for t in range(rounds):
        x = contexts[t % len(contexts)] if policy.contextual else None
        arm = policy.select(x, allowed).arm
        policy.update(arm, float(env.random() < probs[arm]), x)
    return policy


def benchmarks(ctx: Context) -> Iterator[Result]:
    iterations = ctx.iterations(full=100_000, quick=2_000)
    rng = np.random.default_rng(0)
    contexts = rng.uniform(-1.0, 1.0, size=(1024, DIM))
    contexts[:, 8] = 1.0
    allowed = np.ones(ARMS, dtype=np.uint8)
    for label, config in CONFIGS:
        name = f"bandits.policy.{label}"
        if not ctx.wants(f"{name}.select") and not ctx.wants(f"{name}.update"):
            continue
        try:
            policy = trained(config, contexts)
            yield from _time_policy(name, policy, contexts, allowed, rng, iterations)
        except Exception as exc:  # one broken policy must not hide the others' rows
            yield Result.failed(name, f"{type(exc).__name__}: {exc}")


def _time_policy(
    name: str,
    policy: P.Policy,
    contexts: np.ndarray,
    allowed: np.ndarray,
    rng: np.random.Generator,
    iterations: int,
) -> Iterator[Result]:
    note = f"K={ARMS}, d={DIM}, in-process"
    xs = [contexts[i] if policy.contextual else None for i in range(len(contexts))]
    next_x = itertools.cycle(xs).__next__
    select = policy.select
    pct = time_calls(lambda: select(next_x(), allowed), iterations=iterations)
    target = CONTEXTUAL_P99_US if policy.contextual else FREE_SELECT_P99_US
    yield latency_result(f"{name}.select", pct, target_us=target, note=note)
    update = policy.update
    next_arm = itertools.cycle(range(ARMS)).__next__
    next_reward = itertools.cycle(rng.random(997).tolist()).__next__
    pct = time_calls(lambda: update(next_arm(), next_reward(), next_x()), iterations=iterations)
    target_update = CONTEXTUAL_P99_US if policy.contextual else None
    yield latency_result(f"{name}.update", pct, target_us=target_update, note=note)
