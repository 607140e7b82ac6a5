"""TLS and mTLS on a real server process, with certificates made here: right and wrong CA, an
expired certificate, client certificates, rotation under load, and the start-up rules."""

from __future__ import annotations

import hashlib
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from llmopt.gen.llmopt.v1 import bandits_pb2, bandits_pb2_grpc
from tests.support.certs import SERVER_HOSTS, make_ca, make_cert, write_ca, write_pair
from tests.support.server import ServerProcess

TOKEN = "s3cret-admin-token"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA with a server cert and an expired one; a client CA with a client cert; another CA."""
    d = tmp_path_factory.mktemp("pki")
    ca, client_ca, other = make_ca("server-ca"), make_ca("client-ca"), make_ca("other-ca")
    server = write_pair(d, *make_cert(ca, "server", hosts=SERVER_HOSTS), name="server")
    expired = write_pair(
        d, *make_cert(ca, "server", hosts=SERVER_HOSTS, expired=True), name="expired"
    )
    client = make_cert(client_ca, "build-agent", client=True)
    stranger = make_cert(other, "stranger", client=True)
    return {
        "dir": d,
        "ca": ca,
        "ca_file": write_ca(d, ca),
        "client_ca_file": write_ca(d, client_ca),
        "other_ca": other,
        "server": server,
        "expired": expired,
        "client": client,
        "stranger": stranger,
    }


def tls_args(pair: tuple[Path, Path]) -> list[str]:
    return ["--tls-cert", str(pair[0]), "--tls-key", str(pair[1])]


def creds(ca_pem: bytes, client: tuple[bytes, bytes] | None = None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=ca_pem)
    return grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=client[1], certificate_chain=client[0]
    )


def list_bandits(channel: grpc.Channel, metadata=()) -> bandits_pb2.ListBanditsResponse:
    return bandits_pb2_grpc.BanditsStub(channel).ListBandits(
        bandits_pb2.ListBanditsRequest(), timeout=10, metadata=metadata
    )


def call_fails(channel: grpc.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        list_bandits(channel)
    return info.value.code()


def fresh_channel(server: ServerProcess, credentials: grpc.ChannelCredentials) -> grpc.Channel:
    """A channel with a connection of its own (a new TLS handshake), never a shared one."""
    return grpc.secure_channel(
        server.address, credentials, options=[("grpc.use_local_subchannel_pool", 1)]
    )


def served_certificate(address: str, ca_file: Path | None) -> bytes:
    """The DER certificate the server presents to a new connection (checked against ca_file)."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if ca_file is None:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, int(port)), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def der_of(cert_pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)


@pytest.fixture
def start(tmp_path):
    servers: list[ServerProcess] = []

    def start(args=(), credentials=None, **kwargs) -> ServerProcess:
        server = ServerProcess(
            tmp_path / f"data{len(servers)}", args=list(args), credentials=credentials
        )
        servers.append(server)
        return server.start(**kwargs)

    yield start
    for server in servers:
        server.stop()


def test_tls_with_the_right_ca_connects_and_plaintext_does_not(pki, start):
    server = start(tls_args(pki["server"]), credentials=creds(pki["ca"].cert_pem))
    with server.channel() as channel:
        assert list(list_bandits(channel).bandits) == []
    with grpc.insecure_channel(server.address) as plain:
        assert call_fails(plain) == grpc.StatusCode.UNAVAILABLE
    assert "TLS with certificate" in server.log()
    assert server.faults() == []


def test_a_client_trusting_another_ca_cannot_connect(pki, start):
    server = start(tls_args(pki["server"]), credentials=creds(pki["ca"].cert_pem))
    with server.channel(creds(pki["other_ca"].cert_pem)) as channel:
        assert call_fails(channel) == grpc.StatusCode.UNAVAILABLE
    with server.channel() as channel:  # the server itself is fine
        list_bandits(channel)


def test_an_expired_server_certificate_is_refused_by_the_client(pki, start):
    server = start(tls_args(pki["expired"]), wait_serving=False)
    with server.channel(creds(pki["ca"].cert_pem)) as channel:
        assert call_fails(channel) == grpc.StatusCode.UNAVAILABLE
    # The refusal is the expiry: the server answers TLS, and verification says so.
    assert served_certificate(server.address, None) == der_of(pki["expired"][0].read_bytes())
    with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
        served_certificate(server.address, pki["ca_file"])


def test_mtls_requires_a_client_certificate_signed_by_the_client_ca(pki, start):
    server = start(
        [*tls_args(pki["server"]), "--tls-client-ca", str(pki["client_ca_file"])],
        credentials=creds(pki["ca"].cert_pem, pki["client"]),
    )
    with server.channel() as channel:  # the right client certificate
        assert list(list_bandits(channel).bandits) == []
    with server.channel(creds(pki["ca"].cert_pem)) as channel:  # none
        assert call_fails(channel) == grpc.StatusCode.UNAVAILABLE
    with server.channel(creds(pki["ca"].cert_pem, pki["stranger"])) as channel:  # another CA's
        assert call_fails(channel) == grpc.StatusCode.UNAVAILABLE
    assert "mTLS with certificate" in server.log()


def test_the_client_certificate_subject_is_the_principal_with_its_scopes(pki, start, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("# mTLS principal\nsubject:build-agent build-agent read\n")
    server = start(
        [
            *tls_args(pki["server"]),
            "--tls-client-ca",
            str(pki["client_ca_file"]),
            "--auth-tokens",
            str(tokens),
            "--require-auth",
        ],
        credentials=creds(pki["ca"].cert_pem, pki["client"]),
    )
    with server.channel() as channel:
        list_bandits(channel)  # read: granted by the subject's entry, no token sent
        stub = bandits_pb2_grpc.BanditsStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.DeleteBandit(bandits_pb2.DeleteBanditRequest(name="x"), timeout=10)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "admin" in info.value.details()


def test_tls_with_a_token_file_and_require_auth(pki, start, tmp_path):
    tokens = tmp_path / "tokens"
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    tokens.write_text(f"{digest} ops read,admin\n")
    server = start(
        [*tls_args(pki["server"]), "--auth-tokens", str(tokens), "--require-auth"],
        credentials=creds(pki["ca"].cert_pem),
    )
    with server.channel() as channel:
        assert call_fails(channel) == grpc.StatusCode.UNAUTHENTICATED
        list_bandits(channel, metadata=[("authorization", f"Bearer {TOKEN}")])


def test_certificate_rotation_under_load_fails_no_call(pki, start, tmp_path):
    """Calls on an open connection and on new connections keep succeeding while the files are
    rewritten in place (not atomically) with a new pair; new connections then get the new one."""
    live = write_pair(tmp_path / "live", *make_cert(pki["ca"], "old", hosts=SERVER_HOSTS))
    credentials = creds(pki["ca"].cert_pem)
    server = start(tls_args(live), credentials=credentials)
    assert served_certificate(server.address, pki["ca_file"]) == der_of(live[0].read_bytes())

    stop = threading.Event()
    outcomes = {"ok": 0, "failed": []}

    def load() -> None:
        with server.channel() as kept:
            while not stop.is_set():
                for channel in (kept, fresh_channel(server, credentials)):
                    try:
                        list_bandits(channel)
                        outcomes["ok"] += 1
                    except grpc.RpcError as exc:
                        outcomes["failed"].append(f"{exc.code()}: {exc.details()}")
                    if channel is not kept:
                        channel.close()

    thread = threading.Thread(target=load)
    thread.start()
    try:
        new_cert, new_key = make_cert(pki["ca"], "new", hosts=SERVER_HOSTS)
        for _ in range(3):  # a few rotations, each file rewritten in place, one after the other
            before = outcomes["ok"]
            new_cert, new_key = make_cert(pki["ca"], "new", hosts=SERVER_HOSTS)
            live[0].write_bytes(new_cert)
            live[1].write_bytes(new_key)
            seen = b""
            for _attempt in range(200):
                seen = served_certificate(server.address, pki["ca_file"])
                if seen == der_of(new_cert) and outcomes["ok"] > before + 5:
                    break
                stop.wait(0.05)
            assert seen == der_of(new_cert), "new connections never saw the new certificate"
    finally:
        stop.set()
        thread.join(60)
    assert outcomes["failed"] == []
    assert outcomes["ok"] > 10
    assert "TLS certificate reloaded" in server.log()
    assert server.faults() == []


def test_a_half_written_pair_keeps_the_current_certificate(pki, start, tmp_path):
    live = write_pair(tmp_path / "live", *make_cert(pki["ca"], "old", hosts=SERVER_HOSTS))
    server = start(tls_args(live), credentials=creds(pki["ca"].cert_pem))
    old = der_of(live[0].read_bytes())
    other_cert, _other_key = make_cert(pki["ca"], "other", hosts=SERVER_HOSTS)
    live[0].write_bytes(other_cert)  # the certificate changed, its key not yet
    assert served_certificate(server.address, pki["ca_file"]) == old
    with server.channel() as channel:
        list_bandits(channel)
    assert "cannot be used yet" in server.log()


def run_server(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmopt", "--port", "0", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("llmopt-server: error:")
    return lines[0]


def test_require_auth_refuses_to_start_without_tls_and_auth(pki, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("")
    line = one_error_line(run_server("--data-dir", str(tmp_path / "d"), "--require-auth"))
    assert "TLS" in line and "auth" in line
    line = one_error_line(
        run_server("--data-dir", str(tmp_path / "d"), "--require-auth", *tls_args(pki["server"]))
    )
    assert "--auth-tokens" in line and "--tls-cert" not in line
    line = one_error_line(
        run_server(
            "--data-dir", str(tmp_path / "d"), "--require-auth", "--auth-tokens", str(tokens)
        )
    )
    assert "--tls-cert" in line and "--auth-tokens" not in line
    assert not (tmp_path / "d").exists()  # refused before anything was created


def test_unusable_tls_files_exit_2_naming_them(pki, tmp_path):
    missing = tmp_path / "nope.crt"
    line = one_error_line(run_server("--tls-cert", str(missing), "--tls-key", str(missing)))
    assert str(missing) in line
    # a key that is not the certificate's
    _, stray_key = write_pair(tmp_path / "stray", *make_cert(pki["ca"], "stray"))
    line = one_error_line(
        run_server(
            "--data-dir",
            str(tmp_path / "d"),
            "--tls-cert",
            str(pki["server"][0]),
            "--tls-key",
            str(stray_key),
        )
    )
    assert str(stray_key) in line


def test_non_loopback_without_tls_or_auth_warns_loudly(start):
    server = start(["--host", "0.0.0.0"])
    warnings = [line for line in server.log().splitlines() if "SECURITY WARNING" in line]
    assert len(warnings) == 2, server.log()
    assert any("TLS" in w for w in warnings) and any("auth" in w for w in warnings)
    assert all("WARNING" in w.split("SECURITY")[0] for w in warnings)  # logged at WARNING


def test_loopback_without_tls_does_not_warn(start):
    server = start()
    assert "SECURITY WARNING" not in server.log()


def list_services(channel: grpc.Channel, metadata=()) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    answers = list(stub.ServerReflectionInfo(requests, timeout=10, metadata=metadata))
    return [s.name for s in answers[0].list_services_response.service]


def test_reflection_open_by_default_even_with_auth_on(start, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{hashlib.sha256(TOKEN.encode()).hexdigest()} ops read\n")
    server = start(["--auth-tokens", str(tokens)])
    with server.channel() as channel:
        assert "llmopt.v1.Bandits" in list_services(channel)
        assert call_fails(channel) == grpc.StatusCode.UNAUTHENTICATED


def test_reflection_auth_wants_a_valid_principal(start, tmp_path):
    tokens = tmp_path / "tokens"
    # a principal with a scope unrelated to reflection is enough
    tokens.write_text(f"{hashlib.sha256(TOKEN.encode()).hexdigest()} ops predict\n")
    server = start(["--auth-tokens", str(tokens), "--reflection", "auth"])
    with server.channel() as channel:
        with pytest.raises(grpc.RpcError) as info:
            list_services(channel)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as info:
            list_services(channel, metadata=[("authorization", "Bearer wrong")])
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        token = [("authorization", f"Bearer {TOKEN}")]
        assert "llmopt.v1.Bandits" in list_services(channel, metadata=token)


def test_reflection_off_registers_none(start):
    server = start(["--reflection", "off"])
    with server.channel() as channel:
        with pytest.raises(grpc.RpcError) as info:
            list_services(channel)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        list_bandits(channel)


def test_an_unusable_token_file_exits_2_naming_it(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("not-a-hash ops read\n")
    line = one_error_line(
        run_server("--data-dir", str(tmp_path / "d"), "--auth-tokens", str(tokens))
    )
    assert str(tokens) in line
    assert not (tmp_path / "d").exists()  # refused before any store was opened
