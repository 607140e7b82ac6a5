"""Every RPC of the contract has a comment (``grpcurl describe`` shows it to a user)."""

from __future__ import annotations

import re
from pathlib import Path

PROTOS = Path(__file__).resolve().parents[2] / "protos" / "llmopt"


def test_every_rpc_has_a_comment() -> None:
    bare = []
    count = 0
    for path in sorted(PROTOS.rglob("*.proto")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            m = re.match(r"\s*rpc (\w+)\(", line)
            if m:
                count += 1
                if i == 0 or not lines[i - 1].strip().startswith("//"):
                    bare.append(f"{path.name}: {m.group(1)}")
    assert count >= 35
    assert not bare, f"RPCs without a comment: {bare}"
