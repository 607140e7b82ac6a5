"""examples/tune_llm.py against the real server: the study beats random search on the same
budget, and the script prints its table and saves its plot."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from llmopt.client import Client

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tune_llm.py"

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tune_llm():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("tune_llm", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["tune_llm"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("tune_llm", None)


def test_the_study_beats_random_search_on_the_same_budget(server, tune_llm):
    """Seeds 1-3, 30 evaluations each: the study's pick is worth at least 97 % of the optimum
    within the budget and beats random search's by 0.02 (median over seeds); its final picks
    cost at most 5 % over the budget in expectation (measured costs are noisy)."""
    budget = 0.0007
    with Client(server.address) as client:
        c = tune_llm.compare(client, [1, 2, 3], 30, batch=100, budget=budget)
    study, random = c.median(c.study, 30), c.median(c.random, 30)
    assert study >= 0.97 * c.optimum, (study, c.optimum)
    assert study >= random + 0.02, (study, random)
    assert max(c.study_costs) <= 1.05 * budget, c.study_costs
    with Client(server.address) as client:  # the example deletes its studies
        assert not [s for s in client.list_studies() if s.description == "examples/tune_llm.py"]


def test_main_prints_the_table_and_saves_the_plot(tune_llm, capsys, tmp_path):
    png = tmp_path / "tune.png"
    code = tune_llm.main(["--evaluations", "12", "--seeds", "1", "--plot", str(png)])
    out = capsys.readouterr().out
    assert code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # matplotlib is in the dev extras
    for text in ("llmopt study", "random search", "optimum (noise-free)", "after 10"):
        assert text in out
