"""Instruction counts of the hot in-process paths under valgrind's callgrind.

``python -m benchmarks.callgrind`` (``make bench-callgrind``) runs a driver under
``valgrind --tool=callgrind --dump-before=os_getpgrp``: for each case the driver builds the
call, warms it up, then calls ``os.getpgrp()`` right before and right after the measured loop.
Each ``os.getpgrp`` makes callgrind dump and zero its counters, so dump ``2k`` holds exactly the
loop of case ``k``. An empty loop of the same length (``loop``) is subtracted from every case:
what is left is the instructions of one call. Counts do not move with machine noise, so a
regression is a number; they are reported, never asserted.

Cases: select and update of three policies of the policy table (UCB1, Gaussian Thompson,
LinUCB; K = 10, d = 10), the default context vector, and one Predict servicer call (request
bytes to answer bytes, the 16-feature logistic regression).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

MARKER = "os_getpgrp"  # the C function behind os.getpgrp in CPython
POLICIES = ("ucb1", "thompson_gaussian", "lin_ucb")
ITERATIONS = 2_000
WARMUP = 200
BASELINE = "loop"

_TOTALS = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)
_PART = re.compile(r"\.(\d+)$")


# -- the cases (run inside valgrind) --------------------------------------------------------------


def _policy_case(oneof: str, op: str) -> Callable[[], Callable[[], object]]:
    def build() -> Callable[[], object]:
        import itertools

        import numpy as np

        from benchmarks.bench_bandits import ARMS, DIM, trained
        from llmopt.bandits import policies as P

        contexts = np.random.default_rng(0).uniform(-1.0, 1.0, size=(64, DIM))
        policy = trained(P.CONFIG_BY_ONEOF[oneof](), contexts, rounds=500)
        xs = itertools.cycle([x if policy.contextual else None for x in contexts]).__next__
        allowed = np.ones(ARMS, dtype=np.uint8)
        if op == "select":
            return lambda: policy.select(xs(), allowed)
        arms = itertools.cycle(range(ARMS)).__next__
        return lambda: policy.update(arms(), 0.5, xs())

    return build


def _context_case() -> Callable[[], object]:
    from llmopt.features.context import OutputLength, RequestContext, default_context

    request = RequestContext(
        task_type="summarization",
        input_length=1234,
        output_length=OutputLength.MEDIUM,
        priority=5,
        hour_of_day=13,
        day_of_week=2,
    )
    return lambda: default_context(request)


def _predict_case(model: Path, scratch: Path) -> Callable[[], object]:
    from benchmarks.bench_inference import data
    from llmopt.api.convert import to_tensor
    from llmopt.api.inference import InferenceServicer
    from llmopt.gen.llmopt.v1 import inference_pb2
    from llmopt.inference import (
        MIGRATIONS,
        EngineConfig,
        InferenceEngine,
        Predictor,
        TrafficPolicyStore,
    )
    from llmopt.registry import Registry, VersionMetadata
    from llmopt.storage import Database

    registry = Registry(scratch / "registry")
    db = Database(scratch / "inference.db", migrations=MIGRATIONS)
    engine = InferenceEngine(registry, TrafficPolicyStore(db), EngineConfig())
    registry.create_model("lr16")
    registry.upload_version("lr16", model.read_bytes(), VersionMetadata(alias="champion"))
    servicer = InferenceServicer(engine, Predictor(engine))
    X, _ = data()
    request = inference_pb2.PredictRequest(
        model="lr16", inputs=[to_tensor(X[:1], "X")]
    ).SerializeToString()
    parse = inference_pb2.PredictRequest.FromString
    return lambda: servicer.Predict(parse(request), None)


def cases(model: Path | None, scratch: Path) -> dict[str, Callable[[], Callable[[], object]]]:
    """Case name -> a function that builds the call to count (``loop`` first: the baseline)."""
    out: dict[str, Callable[[], Callable[[], object]]] = {BASELINE: lambda: lambda: None}
    for oneof in POLICIES:
        for op in ("select", "update"):
            out[f"bandits.{oneof}.{op}"] = _policy_case(oneof, op)
    out["context.default_context"] = _context_case
    if model is not None:
        out["inference.servicer.predict"] = lambda: _predict_case(model, scratch)
    return out


def drive(names: Sequence[str], iterations: int, model: Path | None, scratch: Path) -> None:
    """The driver: each case built and warmed, then its loop between two ``os.getpgrp()``."""
    mark = os.getpgrp
    table = cases(model, scratch)
    for name in names:
        call = table[name]()
        for _ in range(WARMUP):
            call()
        mark()
        for _ in range(iterations):
            call()
        mark()
    print(json.dumps(list(names)), flush=True)


# -- reading callgrind's dumps ---------------------------------------------------------------------


def total_instructions(text: str) -> int:
    """The event total of one callgrind dump (its ``summary:`` or ``totals:`` line; Ir first)."""
    match = _TOTALS.search(text)
    if match is None:
        raise ValueError("no summary or totals line in the callgrind output")
    return int(match.group(1))


def dump_parts(out_dir: Path, prefix: str) -> list[Path]:
    """``<prefix>.1``, ``<prefix>.2``, ... in dump order (the last, unnumbered file is the
    program's end and is left out)."""
    numbered = [p for p in out_dir.glob(f"{prefix}.*") if _PART.search(p.name)]
    return sorted(numbered, key=lambda p: int(_PART.search(p.name).group(1)))  # type: ignore[union-attr]


def per_call(loop_totals: Sequence[int], names: Sequence[str], iterations: int) -> dict[str, float]:
    """Instructions per call of each case: its loop's total less the empty loop's, over
    ``iterations``. ``loop_totals[k]`` is case ``names[k]``'s dump; ``BASELINE`` is reported
    as the loop's own cost per iteration."""
    if len(loop_totals) != len(names):
        raise ValueError(f"{len(loop_totals)} loop dumps for {len(names)} cases")
    totals = dict(zip(names, loop_totals, strict=True))
    base = totals.get(BASELINE, 0)
    return {
        name: (total if name == BASELINE else total - base) / iterations
        for name, total in totals.items()
    }


def loop_dumps(parts: Sequence[Path]) -> list[int]:
    """The totals of the loop dumps: every second part (part ``2k`` ends case ``k``'s loop)."""
    return [total_instructions(p.read_text(errors="replace")) for p in parts[1::2]]


# -- the command line ------------------------------------------------------------------------------


def _export_model(path: Path) -> None:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    from benchmarks.bench_inference import data

    X, y = data()
    lr = LogisticRegression(max_iter=500).fit(X, y)
    onnx = to_onnx(lr, X[:1], options={"zipmap": False}, target_opset=17)
    path.write_bytes(onnx.SerializeToString())


def measure(
    names: Sequence[str] | None = None, iterations: int = ITERATIONS, valgrind: str = "valgrind"
) -> dict[str, float]:
    """Run the driver under callgrind and return instructions per call of every case."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="llmopt-callgrind-") as tmp:
        work = Path(tmp)
        model = work / "lr16.onnx"
        _export_model(model)
        chosen = list(cases(model, work)) if names is None else [BASELINE, *names]
        prefix = "callgrind.out"
        cmd = [
            valgrind,
            "--tool=callgrind",
            f"--dump-before={MARKER}",
            f"--callgrind-out-file={work / prefix}",
            sys.executable,
            "-m",
            "benchmarks.callgrind",
            "--driver",
            "--iterations",
            str(iterations),
            "--model",
            str(model),
            "--scratch",
            str(work),
            *chosen,
        ]
        # A fixed hash seed: the same dict and set layouts, so the same counts run after run.
        env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"the driver failed under valgrind:\n{done.stderr[-2000:]}")
        ran = json.loads(done.stdout.strip().splitlines()[-1])
        return per_call(loop_dumps(dump_parts(work, prefix)), ran, iterations)


def format_counts(counts: dict[str, float]) -> str:
    """One line per case: name, instructions per call."""
    width = max(len(n) for n in counts)
    lines = [f"{'case'.ljust(width)}  instructions/call"]
    for name, value in counts.items():
        label = f"{name} (loop overhead, subtracted)" if name == BASELINE else name
        lines.append(f"{label.ljust(width)}  {value:,.0f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.callgrind", description=__doc__)
    parser.add_argument("cases", nargs="*", help="case names (default: every case)")
    parser.add_argument("--iterations", type=int, default=ITERATIONS)
    parser.add_argument("--json", type=Path, help="also write the counts as JSON")
    parser.add_argument("--driver", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.driver:
        drive(args.cases, args.iterations, args.model, args.scratch or Path(tempfile.gettempdir()))
        return 0
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("callgrind: skipped: valgrind is not installed (make bench-callgrind installs it)")
        return 0
    counts = measure(args.cases or None, args.iterations, valgrind)
    print(f"callgrind: {args.iterations:,} calls per case, valgrind {_version(valgrind)}")
    print(format_counts(counts))
    if args.json is not None:
        payload: dict[str, Any] = {"iterations": args.iterations, "instructions_per_call": counts}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


def _version(valgrind: str) -> str:
    done = subprocess.run([valgrind, "--version"], capture_output=True, text=True)
    return done.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
