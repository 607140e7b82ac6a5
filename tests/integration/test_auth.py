"""Tokens with scopes on every RPC, against the real server (``--auth-tokens``, ``--auth-jwt-key``).

Driven by the scope table: every RPC of every service is called with no token, with a token that
holds every scope but the one it needs, and with a token that holds only that one.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import jwt
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc

import llmopt.app  # noqa: F401 - imports every service's generated modules into the pool
from llmopt.gen.llmopt.v1 import bandits_pb2 as pb
from llmopt.gen.llmopt.v1 import bandits_pb2_grpc, common_pb2
from llmopt.security import REFLECTION_METHODS, SCOPE_BY_METHOD, SCOPES, hash_token
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration
Code = grpc.StatusCode
REFUSALS = (Code.UNAUTHENTICATED, Code.PERMISSION_DENIED)
SECRET = b"the integration test's HS256 secret, 32+ bytes"
AUDIENCE, ISSUER = "llmopt", "https://issuer.test"


def token_lines() -> str:
    """``only-<scope>`` holds that scope, ``no-<scope>`` every other one, ``ops`` all of them."""
    lines = ["# principals of tests/integration/test_auth.py"]
    for scope in SCOPES:
        lines.append(f"{hash_token('only-' + scope)} only-{scope} {scope}")
        others = ",".join(s for s in SCOPES if s != scope)
        lines.append(f"{hash_token('no-' + scope)} no-{scope} {others}")
    lines.append(f"{hash_token('ops')} ops {','.join(SCOPES)}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("auth")
    (root / "tokens").write_text(token_lines())
    (root / "jwt-secret").write_bytes(SECRET)
    args = ["--auth-tokens", str(root / "tokens"), "--auth-jwt-key", str(root / "jwt-secret")]
    args += ["--auth-jwt-audience", AUDIENCE, "--auth-jwt-issuer", ISSUER]
    proc = ServerProcess(root / "data", args).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with server.channel() as ch:
        yield ch


def _service_registered(method: str) -> bool:
    try:
        descriptor_pool.Default().FindServiceByName(method.split("/")[1])
    except KeyError:
        return False
    return True


SCOPED = sorted(m for m, s in SCOPE_BY_METHOD.items() if s is not None and _service_registered(m))


def call(channel: grpc.Channel, method: str, token: str | None) -> tuple[Code, str]:
    """``method`` called with one empty request; its status code and details."""
    _, service_name, name = method.split("/")
    descriptor = descriptor_pool.Default().FindServiceByName(service_name).methods_by_name[name]
    request = message_factory.GetMessageClass(descriptor.input_type)()
    response = message_factory.GetMessageClass(descriptor.output_type)
    metadata = [("authorization", f"Bearer {token}")] if token is not None else []
    kinds = {
        (False, False): channel.unary_unary,
        (False, True): channel.unary_stream,
        (True, False): channel.stream_unary,
        (True, True): channel.stream_stream,
    }
    make = kinds[(descriptor.client_streaming, descriptor.server_streaming)]
    stub = make(
        method,
        request_serializer=type(request).SerializeToString,
        response_deserializer=response.FromString,
    )
    argument = iter([request]) if descriptor.client_streaming else request
    try:
        answer = stub(argument, metadata=metadata, timeout=20)
        if descriptor.server_streaming:
            list(answer)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return Code.OK, ""


@pytest.mark.parametrize("method", SCOPED)
def test_every_rpc_against_the_scope_table(channel: grpc.Channel, method: str):
    scope = SCOPE_BY_METHOD[method]
    code, details = call(channel, method, None)
    assert (code, details) == (
        Code.UNAUTHENTICATED,
        "missing bearer token (authorization: Bearer <token>)",
    )
    code, details = call(channel, method, f"no-{scope}")
    assert (code, details) == (
        Code.PERMISSION_DENIED,
        f"principal 'no-{scope}' lacks scope '{scope}' needed by {method}",
    )
    code, details = call(channel, method, f"only-{scope}")
    assert code not in REFUSALS, details


def test_the_table_reaches_every_service(channel: grpc.Channel):
    services = {m.split("/")[1] for m in SCOPED}
    assert {"llmopt.v1.Registry", "llmopt.v1.Bandits", "llmopt.v1.Features"} <= services
    assert {"llmopt.v1.Inference", "inference.GRPCInferenceService"} <= services


def test_an_unknown_token_is_unauthenticated_and_not_echoed(channel: grpc.Channel):
    code, details = call(channel, "/llmopt.v1.Bandits/ListBandits", "no-such-token-1234")
    assert (code, details) == (Code.UNAUTHENTICATED, "unknown token")


def test_health_is_open(channel: grpc.Channel):
    answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_is_open_by_default(channel: grpc.Channel):
    for method in sorted(REFLECTION_METHODS):
        code, details = call(channel, method, None)
        assert code not in REFUSALS, details


def _as(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def _refusal(rpc: grpc.UnaryUnaryMultiCallable, request: object, token: str | None) -> tuple:
    with pytest.raises(grpc.RpcError) as caught:
        rpc(request, metadata=_as(token) if token else [], timeout=10)
    return caught.value.code(), caught.value.details()


def test_refusals_change_nothing_and_do_not_leak_existence(channel: grpc.Channel):
    stub = bandits_pb2_grpc.BanditsStub(channel)
    name, missing = f"kept-{uuid.uuid4().hex[:8]}", f"absent-{uuid.uuid4().hex[:8]}"
    arms = [common_pb2.Arm(arm_id=f"a{i}", config=common_pb2.LLMConfig(model="m")) for i in "12"]
    bandit = pb.Bandit(name=name, policy=pb.Policy(ucb1=pb.UCB1()), arms=arms)
    stub.CreateBandit(pb.CreateBanditRequest(bandit=bandit), metadata=_as("ops"), timeout=10)
    for token in (None, "no-admin", "only-read"):
        on_existing = _refusal(stub.DeleteBandit, pb.DeleteBanditRequest(name=name), token)
        on_missing = _refusal(stub.DeleteBandit, pb.DeleteBanditRequest(name=missing), token)
        assert on_existing[0] in REFUSALS
        assert on_existing == on_missing
    for token in (None, "no-read"):
        on_existing = _refusal(stub.GetBandit, pb.GetBanditRequest(name=name), token)
        assert on_existing == _refusal(stub.GetBandit, pb.GetBanditRequest(name=missing), token)
    kept = stub.GetBandit(pb.GetBanditRequest(name=name), metadata=_as("only-read"), timeout=10)
    assert [a.arm_id for a in kept.arms] == ["a1", "a2"]


def _jwt(**claims: object) -> str:
    payload = {"sub": "svc", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 300}
    payload.update(claims)
    payload["scope"] = "read"
    return jwt.encode(payload, SECRET, "HS256")


def test_a_valid_jwt_is_its_principal(channel: grpc.Channel):
    code, details = call(channel, "/llmopt.v1.Bandits/ListBandits", _jwt())
    assert code is Code.OK, details
    code, details = call(channel, "/llmopt.v1.Bandits/DeleteBandit", _jwt())
    assert (code, details) == (
        Code.PERMISSION_DENIED,
        "principal 'svc' lacks scope 'admin' needed by /llmopt.v1.Bandits/DeleteBandit",
    )


def test_an_expired_jwt_is_unauthenticated(channel: grpc.Channel):
    token = _jwt(exp=int(time.time()) - 3600)
    assert call(channel, "/llmopt.v1.Bandits/ListBandits", token) == (
        Code.UNAUTHENTICATED,
        "expired token",
    )


def test_a_jwt_for_another_audience_is_unauthenticated(channel: grpc.Channel):
    token = _jwt(aud="someone-else")
    assert call(channel, "/llmopt.v1.Bandits/ListBandits", token) == (
        Code.UNAUTHENTICATED,
        "token audience 'someone-else' is not 'llmopt'",
    )


def _replace(path: Path, text: str) -> None:
    """Writes ``path`` whole at once, as an operator should (the server never reads half)."""
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    partial.replace(path)


def test_the_token_file_is_reread_while_running(tmp_path: Path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{hash_token('first')} first read\n")
    proc = ServerProcess(tmp_path / "data", ["--auth-tokens", str(tokens)]).start()
    try:
        with proc.channel() as ch:
            assert call(ch, "/llmopt.v1.Bandits/ListBandits", "first")[0] is Code.OK
            assert call(ch, "/llmopt.v1.Bandits/ListBandits", "second")[0] is Code.UNAUTHENTICATED
            _replace(tokens, f"{hash_token('second')} second read # first revoked\n")
            deadline = time.monotonic() + 30
            while call(ch, "/llmopt.v1.Bandits/ListBandits", "second")[0] is not Code.OK:
                assert time.monotonic() < deadline, "the changed token file was not re-read"
                time.sleep(0.2)
            assert call(ch, "/llmopt.v1.Bandits/ListBandits", "first") == (
                Code.UNAUTHENTICATED,
                "unknown token",
            )
            _replace(tokens, "not a token line\n")  # broken: the previous table stays
            time.sleep(1.5)
            assert call(ch, "/llmopt.v1.Bandits/ListBandits", "second")[0] is Code.OK
        assert "not reloaded" in proc.log()
    finally:
        proc.stop()


def test_a_malformed_token_file_stops_start_up_naming_its_line(tmp_path: Path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# ok\n{hash_token('a')} a read\n{hash_token('b')} b read,root\n")
    args = ["--port", "0", "--data-dir", str(tmp_path / "data"), "--auth-tokens", str(tokens)]
    done = subprocess.run(
        [sys.executable, "-m", "llmopt", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"{tokens} line 3: unknown scope 'root'" in done.stderr
