"""``python tests/packaging/check_wheel.py dist/X.whl``: the wheel's only top-level package is
llmopt, it carries the licence, the compiled kernels and the generated modules, and installed in a
venv of its own it runs outside the source tree, beside a user's decoy modules (CI runs this)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.packaging.decoys import check_installed


def check_contents(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    tops = {n.split("/")[0] for n in names} - {info}
    if tops != {"llmopt"}:
        raise SystemExit(f"{wheel.name}: top-level entries {sorted(tops)}, expected ['llmopt']")
    top_level = zipfile.ZipFile(wheel).read(f"{info}/top_level.txt").decode().split()
    if top_level != ["llmopt"]:
        raise SystemExit(f"{wheel.name}: top_level.txt lists {top_level}")
    wanted = {
        "licence": any(n.startswith(f"{info}/") and n.endswith("LICENSE") for n in names),
        "kernels": any(n.startswith("llmopt/native/") and n.endswith(".so") for n in names),
        "generated": "llmopt/gen/llmopt/v1/bandits_pb2.py" in names,
    }
    missing = [what for what, found in wanted.items() if not found]
    if missing:
        raise SystemExit(f"{wheel.name}: no {', '.join(missing)} in the wheel")


def main(argv: list[str]) -> int:
    (wheel,) = (Path(a).resolve() for a in argv)
    check_contents(wheel)
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)]
        subprocess.run(pip, check=True)
        version = check_installed(venv / "bin", Path(tmp) / "work")
    print(f"wheel ok: {wheel.name}, llmopt {version}, one top-level package")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
