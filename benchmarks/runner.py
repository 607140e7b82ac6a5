"""``python -m benchmarks``: discover bench modules, run them, print the table, write JSON.

Discovery: every ``benchmarks/bench_*.py`` with a module-level ``benchmarks(ctx)``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from benchmarks.harness import ERROR, FAIL, Context, Result, machine_info, machine_label

BENCH_DIR = Path(__file__).resolve().parent


def discover(bench_dir: Path = BENCH_DIR) -> list[str]:
    """Module names of every ``bench_*.py`` in ``bench_dir``, sorted."""
    return [f"benchmarks.{p.stem}" for p in sorted(bench_dir.glob("bench_*.py"))]


def run_module(module_name: str, ctx: Context, echo: TextIO | None = None) -> list[Result]:
    """Run one bench module; a crash (import or run) becomes an ERROR row named after it."""
    short = module_name.rsplit(".", 1)[-1]
    # ``--only e2e`` selects a whole module: everything in it runs unfiltered.
    module_ctx = ctx
    if ctx.only and ctx.wants(short):
        module_ctx = Context(quick=ctx.quick, tmp_dir=ctx.tmp_dir, only=None, cache=ctx.cache)
    results: list[Result] = []
    try:
        module = importlib.import_module(module_name)
        fn = getattr(module, "benchmarks", None)
        if fn is None:
            raise AttributeError(f"{module_name} has no module-level benchmarks(ctx) function")
        for result in fn(module_ctx):
            if not isinstance(result, Result):
                raise TypeError(f"{module_name} yielded {type(result).__name__}, not Result")
            if not module_ctx.wants(result.name):
                continue
            results.append(result)
            if echo is not None:
                print(f"  {format_row(result)}", file=echo, flush=True)
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(exc)).strip()
        if echo is not None:
            traceback.print_exc(file=echo)
        results.append(Result.failed(f"{short} (crashed)", detail))
    return results


def run_all(
    ctx: Context, modules: Iterable[str] | None = None, echo: TextIO | None = None
) -> list[Result]:
    machine = machine_label(machine_info())
    results: list[Result] = []
    for name in discover() if modules is None else modules:
        if echo is not None:
            print(f"[{name}]", file=echo, flush=True)
        for result in run_module(name, ctx, echo):
            result.machine = result.machine or machine
            results.append(result)
    return results


# -- output ---------------------------------------------------------------------------------------


def fmt_number(value: float | None) -> str:
    """Compact human figure: 3 significant digits below 1000, thousands separators above."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if value == 0:
        return "0"
    return f"{value:.3g}"


def _target_text(result: Result) -> str:
    if result.target is None:
        return "-"
    sign = "<=" if result.better == "lower" else ">="
    return f"{sign} {fmt_number(result.target)} {result.unit}".rstrip()


def _measured_text(result: Result) -> str:
    if result.measured is None:
        return "-"
    return f"{fmt_number(result.measured)} {result.unit}".rstrip()


def _note_text(result: Result) -> str:
    if result.error:
        return result.error.splitlines()[0][:100]
    if result.skipped:
        return "skipped: " + result.skipped.splitlines()[0][:100]
    return result.note


COLUMNS = ("name", "metric", "measured", "target", "verdict", "note")


def table_rows(results: Sequence[Result]) -> list[tuple[str, ...]]:
    return [
        (r.name, r.metric, _measured_text(r), _target_text(r), r.verdict, _note_text(r))
        for r in results
    ]


def format_table(results: Sequence[Result]) -> str:
    rows = [COLUMNS, *table_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[i].ljust(widths[i]) for i in range(len(widths))] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths) + "  ----")
    return "\n".join(lines)


def format_row(result: Result) -> str:
    return " | ".join(table_rows([result])[0]).rstrip(" |")


def to_json(
    results: Sequence[Result], *, quick: bool, started: float, finished: float
) -> dict[str, Any]:
    return {
        "started": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "duration_s": round(finished - started, 1),
        "quick": quick,
        "machine": machine_info(),
        "results": [r.to_json() for r in results],
    }


def load_json(path: Path) -> list[Result]:
    data = json.loads(Path(path).read_text())
    return [Result.from_json(r) for r in data["results"]]


def _direction(r: Result) -> str:
    """Which way is better: the row's own ``better`` when it has a target; an info row (no
    target) keeps the default "lower" unless its unit is a rate or a ratio (req/s, rows/s, x)."""
    if r.target is None and (r.unit.endswith("/s") or r.unit == "x"):
        return "higher"
    return r.better


def format_compare(old: Sequence[Result], new: Sequence[Result], threshold: float = 0.05) -> str:
    """Change of each row's measured value against an earlier run; ``threshold`` (relative)
    separates noise (``~``) from ``better`` / ``worse``."""
    before = {r.name: r for r in old}
    rows = [("name", "metric", "before", "after", "change", "")]
    for r in new:
        o = before.get(r.name)
        if o is None or o.measured is None or r.measured is None:
            rows.append(
                (
                    r.name,
                    r.metric,
                    "-" if o is None else _measured_text(o),
                    _measured_text(r),
                    "new" if o is None else "-",
                    "",
                )
            )
            continue
        if o.measured == 0:
            change = math.inf if r.measured else 0.0
        else:
            change = (r.measured - o.measured) / abs(o.measured)
        if abs(change) < threshold:
            word = "~"
        else:
            improved = change < 0 if _direction(r) == "lower" else change > 0
            word = "better" if improved else "WORSE"
        rows.append(
            (r.name, r.metric, _measured_text(o), _measured_text(r), f"{change:+.1%}", word)
        )
    gone = [name for name in before if name not in {r.name for r in new}]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(row[i].ljust(widths[i]) for i in range(5)) + "  " + row[5] for row in rows]
    lines = [line.rstrip() for line in lines]
    if len(gone) > 10:
        lines.append(f"not measured this time: {len(gone)} rows, e.g. " + ", ".join(gone[:5]))
    elif gone:
        lines.append("not measured this time: " + ", ".join(gone))
    return "\n".join(lines)


# -- entry point ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run every benchmark (benchmarks/bench_*.py) and print one table.",
    )
    parser.add_argument("--quick", action="store_true", help="short version of everything (CI)")
    parser.add_argument(
        "--only",
        metavar="PATTERN",
        help="only benchmarks (or bench modules) whose name contains PATTERN "
        "or matches it as a glob",
    )
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write results as JSON")
    parser.add_argument(
        "--compare",
        metavar="PATH",
        type=Path,
        help="print the change against an earlier --json result",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when a target is missed (FAIL), not only on errors",
    )
    parser.add_argument("--list", action="store_true", help="list the bench modules and exit")
    return parser


def main(argv: Sequence[str] | None = None, modules: Sequence[str] | None = None) -> int:
    """The command line; ``modules`` replaces discovery (tests)."""
    args = build_parser().parse_args(argv)
    if args.list:
        print("\n".join(discover() if modules is None else modules))
        return 0
    previous = None
    if args.compare is not None:
        try:
            previous = load_json(args.compare)
        except (OSError, ValueError, KeyError) as exc:
            print(f"cannot read --compare {args.compare}: {exc}", file=sys.stderr)
            return 2
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="llmopt-bench-") as tmp:
        ctx = Context(quick=args.quick, tmp_dir=Path(tmp), only=args.only)
        results = run_all(ctx, modules, echo=sys.stderr)
    finished = time.time()
    info = machine_info()
    print(
        f"\nmachine: {machine_label(info)} ({info['host']}, python {info['python']}, "
        f"grpcio {info['grpcio']}); {'quick' if args.quick else 'full'} run, "
        f"{finished - started:.0f} s"
    )
    print(format_table(results))
    if args.json is not None:
        payload = to_json(results, quick=args.quick, started=started, finished=finished)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    if previous is not None:
        print(f"\nchange against {args.compare}:")
        print(format_compare(previous, results))
    if not results:
        print("no benchmark matched", file=sys.stderr)
        return 1
    errors = [r for r in results if r.verdict == ERROR]
    failed = [r for r in results if r.verdict == FAIL]
    if errors:
        print(
            f"{len(errors)} benchmark(s) could not run: " + ", ".join(r.name for r in errors),
            file=sys.stderr,
        )
        return 1
    if args.strict and failed:
        print(f"{len(failed)} target(s) missed", file=sys.stderr)
        return 1
    return 0
