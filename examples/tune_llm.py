"""Tune an LLM's temperature and max_tokens for quality under a cost budget, with llmopt-server.

Run it against a server of its own (the default) or a running one (``--address``)::

    python examples/tune_llm.py                         # 3 seeds of 40 evaluations, a table
    python examples/tune_llm.py --evaluations 30 --plot tune_llm.png

Each evaluation of a configuration sends a batch of ``--batch`` simulated requests through it and
measures their mean quality and mean cost per request. A study on the server
(``llmopt.v1.Tuning``: a Gaussian process, log expected improvement, the cost budget as a
constraint through the probability of feasibility) suggests each next configuration; random
search over the same space with the same number of evaluations is the baseline. Both meet the
same simulator, so the table compares only how they choose.

The simulator (seeded; plausible numbers, not a benchmark of any model):

- A request needs ``L`` output tokens, log-normal around 350 (sigma 0.6).
- Quality at temperature ``t``: ``0.92 - 0.35 * (t - 0.55)**2``; an answer cut at max_tokens
  below ``L`` keeps ``0.5 + 0.5 * max_tokens / L`` of it; the measured quality adds N(0, 0.05),
  clipped to [0, 1].
- Cost: $0.0003 for the prompt plus $1.2e-6 per output token produced, ``min(L, max_tokens)``.
- The budget (``--budget``, $0.0007 per request by default) makes the best configuration a
  trade-off: longer answers are better and cost more.

Reported: for each method, after 10, 20, ... evaluations, the median over seeds of what its pick
is worth: the expected (noise-free) quality of the configuration with the best measured quality
within the budget; and the optimum of the expected quality within the budget (a dense grid over
the noise-free simulator) for scale.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmopt.client import Client, Constraint, FloatParameter, IntParameter

TEMPERATURE = (0.0, 1.5)
MAX_TOKENS = (32, 2048)
PARAMETERS = (
    FloatParameter("temperature", *TEMPERATURE),
    IntParameter("max_tokens", *MAX_TOKENS, log=True),
)
PROMPT_COST, TOKEN_COST = 0.0003, 1.2e-6
# Output lengths of many requests, for the expected (noise-free) value of a configuration.
REFERENCE_LENGTHS = np.exp(np.random.default_rng(12345).normal(math.log(350), 0.6, 20_000))


@dataclass(frozen=True)
class Measured:
    temperature: float
    max_tokens: int
    quality: float
    cost: float


class Simulator:
    """The simulated LLM of the module docstring; ``evaluate`` is one trial's batch."""

    def __init__(self, seed: int, batch: int) -> None:
        self.seed = seed
        self.batch = batch

    def lengths(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.exp(rng.normal(math.log(350), 0.6, n))

    @staticmethod
    def per_request(
        temperature: float, max_tokens: float, lengths: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each request's expected quality and its cost."""
        base = 0.92 - 0.35 * (temperature - 0.55) ** 2
        kept = np.where(max_tokens < lengths, 0.5 + 0.5 * max_tokens / lengths, 1.0)
        return base * kept, PROMPT_COST + TOKEN_COST * np.minimum(lengths, max_tokens)

    def evaluate(self, temperature: float, max_tokens: int, index: int) -> Measured:
        """One trial: ``batch`` requests with their own noise (seeded by the trial's index)."""
        rng = np.random.default_rng([self.seed, index])
        quality, cost = self.per_request(temperature, max_tokens, self.lengths(rng, self.batch))
        measured = np.clip(quality + rng.normal(0, 0.05, self.batch), 0.0, 1.0)
        return Measured(temperature, max_tokens, float(measured.mean()), float(cost.mean()))

    def truth(self, temperature: float, max_tokens: float) -> tuple[float, float]:
        """The expected quality and cost of a configuration, over many requests."""
        quality, cost = self.per_request(temperature, max_tokens, REFERENCE_LENGTHS)
        return float(quality.mean()), float(cost.mean())

    def optimum(self, budget: float) -> float:
        """The best expected quality within ``budget`` (a dense grid)."""
        best = 0.0
        for t in np.linspace(*TEMPERATURE, 61):
            for m in np.unique(np.geomspace(*MAX_TOKENS, 200).round()):
                quality, cost = self.truth(float(t), float(m))
                if cost <= budget:
                    best = max(best, quality)
        return best


def incumbents(
    sim: Simulator, results: Sequence[Measured], budget: float
) -> tuple[np.ndarray, float]:
    """After each evaluation, the expected quality (noise-free, ``Simulator.truth``) of the
    configuration a user would pick then: the best measured one within the budget (NaN until
    one is measured within it); and the expected cost of the last pick. Measured bests are
    optimistic (the maximum of noisy means, and a cost measured under the budget may be over it
    on average: a study's picks sit at the budget's edge, where a trial's measured cost is under
    it about as often as over it); this is what the pick is worth."""
    out, best = [], None
    for r in results:
        if r.cost <= budget and (best is None or r.quality > best.quality):
            best = r
        out.append(math.nan if best is None else sim.truth(best.temperature, best.max_tokens)[0])
    cost = math.nan if best is None else sim.truth(best.temperature, best.max_tokens)[1]
    return np.array(out), cost


def run_study(client: Client, sim: Simulator, n: int, budget: float, name: str) -> list[Measured]:
    """Ask the server's study for each configuration, tell it the measured quality and cost."""
    client.create_study(
        name,
        PARAMETERS,
        constraints=[Constraint("cost_usd", max=budget)],
        seed=sim.seed,
        max_trials=n,
        description="examples/tune_llm.py",
    )
    results = []
    try:
        for _ in range(n):
            [trial] = client.suggest(name)
            m = sim.evaluate(trial.params["temperature"], trial.params["max_tokens"], trial.number)
            client.report(name, trial.number, m.quality, metrics={"cost_usd": m.cost})
            results.append(m)
    finally:
        client.delete_study(name)
    return results


def run_random(sim: Simulator, n: int) -> list[Measured]:
    """Random search over the same space (max_tokens log-uniform), seeded."""
    rng = np.random.default_rng([sim.seed, 999])
    results = []
    for i in range(n):
        t = float(rng.uniform(*TEMPERATURE))
        m = round(math.exp(rng.uniform(math.log(MAX_TOKENS[0]), math.log(MAX_TOKENS[1]))))
        results.append(sim.evaluate(t, m, i + 1))
    return results


@dataclass(frozen=True)
class Comparison:
    optimum: float
    study: np.ndarray  # (seeds, evaluations): the expected quality of the pick so far
    random: np.ndarray
    study_costs: list[float]  # per seed: the expected cost of the final pick
    random_costs: list[float]
    seconds: float  # wall time of the studies

    def median(self, curves: np.ndarray, after: int) -> float:
        """The median over seeds after ``after`` evaluations (a seed with no pick yet counts
        as 0)."""
        return float(np.median(np.nan_to_num(curves[:, after - 1])))


def compare(client: Client, seeds: Sequence[int], n: int, batch: int, budget: float) -> Comparison:
    study, random, started = [], [], time.monotonic()
    for seed in seeds:
        sim = Simulator(seed, batch)
        name = f"tune-llm-{seed}-{int(time.time() * 1000) % 10**9}"
        study.append(incumbents(sim, run_study(client, sim, n, budget, name), budget))
    seconds = time.monotonic() - started
    for seed in seeds:
        sim = Simulator(seed, batch)
        random.append(incumbents(sim, run_random(sim, n), budget))
    return Comparison(
        optimum=Simulator(0, batch).optimum(budget),
        study=np.array([curve for curve, _ in study]),
        random=np.array([curve for curve, _ in random]),
        study_costs=[cost for _, cost in study],
        random_costs=[cost for _, cost in random],
        seconds=seconds,
    )


def table(c: Comparison, n: int, budget: float) -> str:
    steps = list(range(10, n + 1, 10)) or [n]
    head = f"{'method':<26}" + "".join(f"{f'after {k}':>10}" for k in steps) + "  final pick's cost"
    lines = [head, "-" * len(head)]
    rows = (
        ("llmopt study (GP, log-EI)", c.study, c.study_costs),
        ("random search", c.random, c.random_costs),
    )
    for name, curves, costs in rows:
        cells = "".join(f"{c.median(curves, k):>10.4f}" for k in steps)
        over = sum(1 for x in costs if not x <= budget)
        lines.append(f"{name:<26}{cells}  ${np.nanmedian(costs):.6f} ({over} over budget)")
    lines.append(f"{'optimum (noise-free)':<26}{c.optimum:>10.4f}")
    return "\n".join(lines)


def plot(c: Comparison, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    x = np.arange(1, c.study.shape[1] + 1)
    for label, curves in (("llmopt study", c.study), ("random search", c.random)):
        ax.plot(x, np.median(np.nan_to_num(curves), axis=0), label=f"{label} (median of seeds)")
    ax.axhline(c.optimum, color="grey", linestyle="--", label="optimum within the budget")
    ax.set_xlabel("evaluations")
    ax.set_ylabel("expected quality of the best pick within budget")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return True


@contextlib.contextmanager
def own_server() -> Iterator[str]:
    """``python -m llmopt`` on a free port with a temporary data dir."""
    with tempfile.TemporaryDirectory(prefix="tune-llm-") as tmp:
        log_path = Path(tmp) / "server.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "llmopt", "--port", "0", "--data-dir",
                 str(Path(tmp) / "data")],
                stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1],
            )  # fmt: skip
            try:
                deadline = time.monotonic() + 120
                pattern = re.compile(r"listening on ([\w.:\[\]-]+)")
                while not (found := pattern.search(log_path.read_text(errors="replace"))):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(log_path.read_text(errors="replace"))
                    time.sleep(0.05)
                yield found.group(1)
            finally:
                proc.terminate()
                proc.wait(30)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--address", default="", help="a running server (default: start one)")
    parser.add_argument("--evaluations", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100, help="requests per evaluation")
    parser.add_argument("--budget", type=float, default=0.0007, help="$ per request, at most")
    parser.add_argument("--plot", default="", help="save the best-so-far curves here (PNG)")
    args = parser.parse_args(argv)
    seeds = list(range(1, args.seeds + 1))
    with contextlib.ExitStack() as stack:
        address = args.address or stack.enter_context(own_server())
        with Client(address) as client:
            client.wait_ready(60)
            c = compare(client, seeds, args.evaluations, args.batch, args.budget)
    print(table(c, args.evaluations, args.budget))
    print(f"{len(seeds)} studies of {args.evaluations} trials in {c.seconds:.1f} s")
    if args.plot:
        print(f"plot: {args.plot}" if plot(c, Path(args.plot)) else "matplotlib not installed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
