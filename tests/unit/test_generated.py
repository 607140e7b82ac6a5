"""The generated protobuf modules must come from the .proto files as they are now."""

import hashlib
from pathlib import Path

from llmopt.gen import _manifest

PROTOS = Path(__file__).resolve().parents[2] / "protos"


def test_generated_code_matches_the_protos():
    current = {
        p.relative_to(PROTOS).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(PROTOS.rglob("*.proto"))
    }
    stale = sorted(
        name
        for name in current.keys() | _manifest.PROTO_SHA256.keys()
        if current.get(name) != _manifest.PROTO_SHA256.get(name)
    )
    assert not stale, (
        f"generated modules are stale for {stale}: rebuild with `pip install -e .` "
        "or `python setup.py generate_protos`"
    )
