"""The README's "TLS and tokens" section runs as written: its shell lines make the token and
the token file, the server starts with the flags it shows (certificates made here, under the
names it uses), and its grpcurl, llmopt-registry and Python examples succeed against it."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import grpc

from tests.support.certs import SERVER_HOSTS, make_ca, make_cert, write_pair
from tests.support.server import ServerProcess

README = Path(__file__).resolve().parents[2] / "README.md"
README_ADDRESS = "127.0.0.1:50051"
CALLS = ("grpcurl ", "llmopt-registry ")


def section_blocks(kind: str) -> list[str]:
    """The fenced blocks marked ```<kind> tls (the generic README test skips them)."""
    return re.findall(rf"```{kind} tls\n(.*?)```", README.read_text(), flags=re.S)


def test_the_section_has_setup_server_calls_and_python() -> None:
    lines = [line for block in section_blocks("sh") for line in block.splitlines()]
    assert sum(line.startswith("llmopt-server ") for line in lines) == 1
    assert sum(line.startswith("grpcurl ") for line in lines) >= 2
    assert section_blocks("python")


def test_the_tls_and_tokens_quick_start_runs(tmp_path: Path) -> None:
    ca = make_ca("readme-ca")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    write_pair(tmp_path, *make_cert(ca, "server", hosts=SERVER_HOSTS), name="server")
    lines = [line.strip() for block in section_blocks("sh") for line in block.splitlines()]
    setup = [line for line in lines if line and not line.startswith(("llmopt-server ", *CALLS))]
    (server_line,) = [line for line in lines if line.startswith("llmopt-server ")]
    calls = [line for line in lines if line.startswith(CALLS)]

    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    env.pop("LLMOPT_TOKEN", None)
    made = subprocess.run(["bash", "-ec", "\n".join([*setup, 'echo "$LLMOPT_TOKEN"'])],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
                          check=True)  # fmt: skip
    token = made.stdout.strip()
    assert token and token not in (tmp_path / "tokens.txt").read_text()  # only its sha256
    env["LLMOPT_TOKEN"] = token

    args = [str(tmp_path / a) if (tmp_path / a).is_file() else a
            for a in shlex.split(server_line)[1:]]  # fmt: skip
    creds = grpc.ssl_channel_credentials((tmp_path / "ca.crt").read_bytes())
    proc = ServerProcess(tmp_path / "data", args, credentials=creds).start()
    try:
        for call in calls:
            out = subprocess.run(call.replace(README_ADDRESS, proc.address), shell=True,
                                 cwd=tmp_path, env=env, capture_output=True, text=True,
                                 timeout=60)  # fmt: skip
            assert out.returncode == 0, f"{call}\n{out.stdout}\n{out.stderr}"
        # The same call without the token is refused: the section's server really checks it.
        bare = re.sub(r' -H "[^"]*"', "", calls[0])
        no_token = subprocess.run(bare.replace(README_ADDRESS, proc.address), shell=True,
                                  cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=60)  # fmt: skip
        assert no_token.returncode != 0 and "Unauthenticated" in no_token.stderr, no_token
        for block in section_blocks("python"):
            script = tmp_path / "example.py"
            script.write_text(block.replace(README_ADDRESS, proc.address))
            out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=120)  # fmt: skip
            assert out.returncode == 0, f"{block}\n{out.stdout}\n{out.stderr}"
            assert "/llmopt.v1.Audit/GetAuditLog" in out.stdout  # the grpcurl call, audited
    finally:
        proc.stop()
