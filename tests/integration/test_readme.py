"""Every grpcurl example in the README runs, in order, against a fresh server; the settings table
matches the code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from llmopt.config import settings_table

README = Path(__file__).resolve().parents[2] / "README.md"
README_ADDRESS = "127.0.0.1:50051"


def readme_commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("grpcurl "):
                commands.append(line.strip())
    return commands


def test_readme_has_grpcurl_examples():
    commands = readme_commands()
    assert len(commands) >= 3
    assert all(README_ADDRESS in c for c in commands)


def test_every_readme_example_runs(server_factory):
    proc = server_factory("--demo")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    for command in readme_commands():
        out = subprocess.run(
            command.replace(README_ADDRESS, proc.address),
            shell=True,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert out.returncode == 0, f"{command}\n{out.stdout}\n{out.stderr}"
        assert out.stdout.strip(), command


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_every_readme_python_example_runs(server_factory, tmp_path):
    blocks = readme_python_blocks()
    assert blocks
    proc = server_factory("--demo")
    for block in blocks:
        script = tmp_path / "example.py"
        script.write_text(block.replace(README_ADDRESS, proc.address))
        out = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=README.parent,
        )
        assert out.returncode == 0, f"{block}\n{out.stdout}\n{out.stderr}"
        assert out.stdout.strip()
        if "task-aware" in block:  # the one-hot example: a task type outside the built-in four
            assert "'task=code': 1.0" in out.stdout, out.stdout


def test_settings_table_matches_the_code():
    text = README.read_text()
    for flag, env, default, help_text in settings_table():
        assert f"| `{flag}` | `{env}` | `{default}` | {help_text} |" in text, flag
