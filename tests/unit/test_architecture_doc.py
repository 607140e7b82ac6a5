"""docs/ARCHITECTURE.md stays true: every service of the contract is in its table of where
each RPC is handled, and every path it names (`folder/file`) exists."""

from __future__ import annotations

import re
from pathlib import Path

from llmopt.gen.inference import grpc_service_pb2
from llmopt.gen.llmopt.v1 import (
    audit_pb2,
    bandits_pb2,
    features_pb2,
    inference_pb2,
    registry_pb2,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
# Where a path in the doc may be relative to: the repository, or the server/ folder (llmopt).
BASES = (ROOT, ROOT / "server")


def test_every_service_of_the_contract_says_where_it_is_handled() -> None:
    table = DOC.split("## Where each RPC is handled", 1)[1].split("\n## ", 1)[0]
    modules = (audit_pb2, bandits_pb2, features_pb2, inference_pb2, registry_pb2, grpc_service_pb2)
    names = [s.full_name for m in modules for s in m.DESCRIPTOR.services_by_name.values()]
    assert len(names) == 6
    for name in names:
        assert f"| `{name}` |" in table, f"{name} is not in the doc's RPC table"


def test_every_file_the_doc_names_exists() -> None:
    named = {p for p in re.findall(r"`([\w/.-]+\.(?:py|pyx|proto|md))`", DOC) if "/" in p}
    assert len(named) > 20
    missing = sorted(
        path
        for path in named
        if "training" not in path  # the doc's worked example of a capability to come
        and not any((base / path).exists() for base in BASES)
    )
    assert not missing, f"docs/ARCHITECTURE.md names files that do not exist: {missing}"
