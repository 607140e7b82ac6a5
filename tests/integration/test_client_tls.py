"""The Python client and ``llmopt-registry`` against a real TLS + token server: the right CA and
token work, no token is the client's Unauthenticated, and the audit trail shows the admin calls
just made, through ``Client.get_audit_log`` and ``llmopt-registry audit``."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import grpc
import pytest

from llmopt.client import Arm, Client, PermissionDenied, Unauthenticated, Unavailable
from tests.support.certs import SERVER_HOSTS, make_ca, make_cert, write_ca, write_pair
from tests.support.server import ServerProcess

ADMIN, READER = "admin-token-for-the-client-test", "reader-token-for-the-client-test"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("client-tls")
    ca = make_ca("client-test-ca")
    cert, key = write_pair(d, *make_cert(ca, "server", hosts=SERVER_HOSTS), name="server")
    tokens = d / "tokens"
    tokens.write_text(
        "# sha256 principal scopes\n"
        f"{hashlib.sha256(ADMIN.encode()).hexdigest()} release-bot admin,read,decide\n"
        f"{hashlib.sha256(READER.encode()).hexdigest()} dashboard read\n"
    )
    args = ["--tls-cert", str(cert), "--tls-key", str(key), "--auth-tokens", str(tokens)]
    proc = ServerProcess(
        d / "data", args, credentials=grpc.ssl_channel_credentials(ca.cert_pem)
    ).start()
    try:
        yield proc, write_ca(d, ca)
    finally:
        proc.stop()


def test_the_right_ca_and_token_work_and_are_audited(server) -> None:
    proc, ca_file = server
    with Client(proc.address, tls_ca=ca_file, token=ADMIN) as client:
        client.create_bandit("tls-router", [Arm("a", model="m-a"), Arm("b", model="m-b")])
        assert client.select_arm("tls-router").arm.arm_id in ("a", "b")
        client.delete_bandit("tls-router")
        page = client.get_audit_log(principal="release-bot", target="tls-router")
    methods = [(e.method, e.code) for e in page.items]
    assert ("/llmopt.v1.Bandits/CreateBandit", "OK") in methods
    assert ("/llmopt.v1.Bandits/DeleteBandit", "OK") in methods
    assert all(e.principal == "release-bot" for e in page.items)
    assert not any("SelectArm" in m for m, _ in methods)  # decide is not an admin RPC


def test_no_token_is_unauthenticated_and_a_reader_is_denied(server) -> None:
    proc, ca_file = server
    with Client(proc.address, tls_ca=ca_file) as client, pytest.raises(Unauthenticated):
        client.list_bandits()
    with Client(proc.address, tls_ca=ca_file, token=READER) as client:
        assert client.list_bandits() is not None
        with pytest.raises(PermissionDenied, match="admin"):
            client.delete_bandit("anything")
    with Client(proc.address, tls_ca=ca_file, token=ADMIN) as client:
        page = client.get_audit_log(principal="dashboard")
    assert ("/llmopt.v1.Bandits/DeleteBandit", "PERMISSION_DENIED") in [
        (e.method, e.code) for e in page.items
    ]


def test_plaintext_to_a_tls_server_fails(server) -> None:
    proc, _ = server
    with Client(proc.address, token=ADMIN, timeout=3) as client, pytest.raises(Unavailable):
        client.list_bandits()


def test_llmopt_registry_audit_over_tls(server) -> None:
    proc, ca_file = server
    with Client(proc.address, tls_ca=ca_file, token=ADMIN) as client:
        client.create_model("tls-audited")
    cli = [sys.executable, "-m", "llmopt.registry.cli", "--address", proc.address,
           "--tls-ca", str(ca_file)]  # fmt: skip
    env = {**os.environ, "LLMOPT_TOKEN": ADMIN}
    done = subprocess.run([*cli, "audit", "--target", "tls-audited", "--json"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    entries = json.loads(done.stdout)["entries"]
    assert [(e["principal"], e["method"], e["code"]) for e in entries] == [
        ("release-bot", "/llmopt.v1.Registry/CreateModel", "OK")
    ]
    text = subprocess.run([*cli, "--token", ADMIN, "audit", "--method",
                           "/llmopt.v1.Registry/CreateModel"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert text.returncode == 0, text.stderr
    assert "release-bot /llmopt.v1.Registry/CreateModel tls-audited OK" in text.stdout
    no_token = {k: v for k, v in os.environ.items() if k != "LLMOPT_TOKEN"}
    refused = subprocess.run([*cli, "audit"], capture_output=True, text=True, timeout=60,
                             env=no_token)  # fmt: skip
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr
