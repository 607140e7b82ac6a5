"""The client's connection options: TLS files, the bearer token on every call, the audit page.

A real in-process gRPC server stands in for llmopt-server: it records the metadata each call
carries and answers with fixed messages, so these tests see exactly what goes on the wire.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from llmopt.client import AuditEntry, Client, Unauthenticated
from llmopt.client import types as ct
from llmopt.client.client import call_metadata, tls_credentials
from llmopt.gen.llmopt.v1 import audit_pb2, bandits_pb2
from llmopt.registry import cli


class Recorder:
    """Answers GetBandit and GetAuditLog; keeps each call's metadata and request."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []
        self.requests: list[Any] = []

    def _seen(self, request: Any, context: grpc.ServicerContext) -> None:
        self.metadata.append({k: str(v) for k, v in context.invocation_metadata()})
        self.requests.append(request)

    def get_bandit(self, request: Any, context: grpc.ServicerContext) -> bandits_pb2.Bandit:
        self._seen(request, context)
        if request.name == "refuse":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing bearer token")
        return bandits_pb2.Bandit(name=request.name)

    def get_audit_log(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._seen(request, context)
        entry = ct.to_audit_entry(
            AuditEntry("ci", "/llmopt.v1.Registry/Promote", "quality", "OK", 1767225600.5)
        )
        return audit_pb2.GetAuditLogResponse(entries=[entry], next_page_token="next")


@pytest.fixture
def server() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()
    handlers = {
        "llmopt.v1.Bandits": {
            "GetBandit": grpc.unary_unary_rpc_method_handler(
                recorder.get_bandit,
                request_deserializer=bandits_pb2.GetBanditRequest.FromString,
                response_serializer=bandits_pb2.Bandit.SerializeToString,
            )
        },
        "llmopt.v1.Audit": {
            "GetAuditLog": grpc.unary_unary_rpc_method_handler(
                recorder.get_audit_log,
                request_deserializer=audit_pb2.GetAuditLogRequest.FromString,
                response_serializer=audit_pb2.GetAuditLogResponse.SerializeToString,
            )
        },
    }
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    for service, methods in handlers.items():
        srv.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, methods),))
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    try:
        yield f"127.0.0.1:{port}", recorder
    finally:
        srv.stop(None)


def test_the_token_goes_with_every_call_beside_the_actor(server: tuple[str, Recorder]) -> None:
    address, recorder = server
    with Client(address, token="s3cret", actor="ci", retry=None) as client:
        client.get_bandit("a")
        client.get_audit_log()
    assert len(recorder.metadata) == 2
    for seen in recorder.metadata:
        assert seen["authorization"] == "Bearer s3cret"
        assert seen["x-llmopt-actor"] == "ci"


def test_without_a_token_no_authorization_is_sent(server: tuple[str, Recorder]) -> None:
    address, recorder = server
    with Client(address) as client:
        client.get_bandit("a")
    assert "authorization" not in recorder.metadata[0]


def test_unauthenticated_is_the_clients_own_error(server: tuple[str, Recorder]) -> None:
    address, _ = server
    with Client(address) as client, pytest.raises(Unauthenticated) as caught:
        client.get_bandit("refuse")
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "bearer" in caught.value.message


def test_get_audit_log_sends_the_filters_and_reads_the_page(server: tuple[str, Recorder]) -> None:
    address, recorder = server
    with Client(address) as client:
        page = client.get_audit_log(
            principal="ci",
            method="/llmopt.v1.Registry/Promote",
            target="quality",
            since=1767225600.0,
            until=1767312000.25,
            page_size=7,
            page_token="t",
        )
    assert page.items == (
        AuditEntry("ci", "/llmopt.v1.Registry/Promote", "quality", "OK", 1767225600.5),
    )
    assert page.next_page_token == "next"
    request = recorder.requests[0]
    assert (request.principal, request.method, request.target) == (
        "ci",
        "/llmopt.v1.Registry/Promote",
        "quality",
    )
    assert (request.page.page_size, request.page.page_token) == (7, "t")
    assert request.since.seconds == 1767225600 and request.since.nanos == 0
    assert request.until.seconds == 1767312000 and request.until.nanos == 250_000_000


def test_get_audit_log_leaves_unset_times_unset(server: tuple[str, Recorder]) -> None:
    address, recorder = server
    with Client(address) as client:
        client.get_audit_log()
    request = recorder.requests[0]
    assert not request.HasField("since") and not request.HasField("until")
    assert request.page.page_size == 100


def test_audit_entries_survive_the_round_trip() -> None:
    entry = AuditEntry("", "/llmopt.v1.Bandits/DeleteBandit", "", "PERMISSION_DENIED", 12.5)
    assert ct.from_audit_entry(ct.to_audit_entry(entry)) == entry


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"tls_cert": "c.pem"}, "tls_cert='c.pem', tls_key=None"),
        ({"tls_key": "k.pem"}, "tls_cert=None, tls_key='k.pem'"),
    ],
)
def test_a_certificate_without_its_key_is_refused(kwargs: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match="tls_cert and tls_key go together") as caught:
        Client("127.0.0.1:1", **kwargs)
    assert named in str(caught.value)


def test_credentials_and_tls_files_are_one_or_the_other(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"")
    with pytest.raises(ValueError, match="not both"):
        Client("127.0.0.1:1", tls_ca=ca, credentials=grpc.ssl_channel_credentials())


def test_a_missing_ca_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        tls_credentials(ca=tmp_path / "nope.pem")
    assert caught.value.filename == str(tmp_path / "nope.pem")


def test_tls_files_make_channel_credentials(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    assert tls_credentials() is None
    assert isinstance(tls_credentials(ca=ca), grpc.ChannelCredentials)


@pytest.mark.parametrize("token", ["", " padded", "two\nlines"])
def test_a_malformed_token_is_refused_without_echoing_it(token: str) -> None:
    with pytest.raises(ValueError, match="token must be") as caught:
        call_metadata(token=token)
    if token.strip():
        assert token.strip() not in str(caught.value)


def test_cli_names_a_certificate_without_its_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--address", "127.0.0.1:1", "--tls-cert", "c.pem", "audit"]) == 2
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().err


def test_cli_names_a_missing_ca_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "ca.pem"
    assert cli.main(["--address", "127.0.0.1:1", "--tls-ca", str(missing), "audit"]) == 2
    assert str(missing) in capsys.readouterr().err


def test_cli_takes_the_token_from_the_environment(
    server: tuple[str, Recorder],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    address, recorder = server
    monkeypatch.setenv("LLMOPT_TOKEN", "from-env")
    assert cli.main(["--address", address, "audit", "--since", "2026-01-01"]) == 0
    assert recorder.metadata[0]["authorization"] == "Bearer from-env"
    assert recorder.requests[0].since.seconds == 1767225600
    out = capsys.readouterr().out
    assert "ci /llmopt.v1.Registry/Promote quality OK" in out
    assert "--page-token next" in out


def test_cli_token_flag_wins_and_json_prints_the_entries(
    server: tuple[str, Recorder],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    address, recorder = server
    monkeypatch.setenv("LLMOPT_TOKEN", "from-env")
    assert cli.main(["--address", address, "--token", "flag", "audit", "--json"]) == 0
    assert recorder.metadata[0]["authorization"] == "Bearer flag"
    printed = capsys.readouterr().out
    assert '"principal": "ci"' in printed and '"next_page_token": "next"' in printed


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1767225600", 1767225600.0), ("2026-01-01", 1767225600.0),
     ("2026-01-01T01:00:00+01:00", 1767225600.0), ("2026-01-01T00:00:00Z", 1767225600.0)],
)  # fmt: skip
def test_cli_times_are_seconds_or_iso_8601(text: str, seconds: float) -> None:
    assert cli._time_arg(text, "--since") == seconds


def test_cli_a_bad_time_is_named() -> None:
    with pytest.raises(cli.CliError, match="--until 'soon'"):
        cli._time_arg("soon", "--until")
