"""What a user's working directory may hold, and the checks that an installed llmopt ignores it.

A user's own ``server.py``, ``native.py`` or ``registry/`` package sits first on ``sys.path`` when
they run Python there; before the one ``llmopt`` package, the project's ``server``, ``native``
and ``registry`` top-level packages lost to them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

DECOY_NOTE = "raise ImportError('a decoy of the user was imported instead of llmopt')\n"

# Every command runs in the decoy directory and must exit 0.
IMPORTS = (
    "import llmopt, llmopt.client, llmopt.app, llmopt.native.context, llmopt.registry.cli; "
    "from llmopt.client import Client; from llmopt.bandits import policies; "
    "print(llmopt.__version__)"
)


def make_decoys(folder: Path) -> Path:
    """``server.py``, ``native.py``, ``registry/__init__.py`` and ``inference/`` that raise on
    import, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "server.py").write_text(DECOY_NOTE)
    (folder / "native.py").write_text(DECOY_NOTE)
    for package in ("registry", "inference"):
        (folder / package).mkdir(exist_ok=True)
        (folder / package / "__init__.py").write_text(DECOY_NOTE)
    return folder


def check_installed(bin_dir: Path, folder: Path) -> str:
    """Import the package, ask both commands for their version or help and run ``python -m
    llmopt --version``, all in ``folder`` (made full of decoys); returns the version printed."""
    make_decoys(folder)
    python = str(bin_dir / "python")
    runs = [
        [python, "-c", IMPORTS],
        [python, "-m", "llmopt", "--version"],
        [str(bin_dir / "llmopt-server"), "--version"],
        [str(bin_dir / "llmopt-registry"), "--help"],
    ]
    outputs = []
    for argv in runs:
        out = subprocess.run(argv, cwd=folder, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {out.returncode}:\n{out.stderr}")
        outputs.append(out.stdout.strip())
    version = outputs[0].splitlines()[-1]
    if outputs[1] != f"llmopt-server {version}" or outputs[2] != outputs[1]:
        raise AssertionError(f"--version printed {outputs[1]!r} and {outputs[2]!r}, not {version}")
    return version
