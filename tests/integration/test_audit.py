"""The audit trail through the real server: admin RPCs recorded with method, target, code and
time; with tokens, the principal is the token's (in the audit log and the alias history); an
acknowledged admin RPC's entry survives kill -9.

With auth off nobody authenticates, so entries carry the principal "" (the ``x-llmopt-actor``
header stays what the registry records as the alias history's actor, as before).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from llmopt.gen.llmopt.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    bandits_pb2,
    common_pb2,
    registry_pb2,
    registry_pb2_grpc,
)
from llmopt.gen.llmopt.v1 import bandits_pb2_grpc as bandits_grpc
from tests.support.server import ServerProcess
from tests.unit.registry.onnx_models import linear_model

pytestmark = pytest.mark.integration

R = "/llmopt.v1.Registry/"
B = "/llmopt.v1.Bandits/"
GET_AUDIT_LOG = "/llmopt.v1.Audit/GetAuditLog"
ADMIN_TOKEN, READ_TOKEN = "admin-" + uuid.uuid4().hex, "read-" + uuid.uuid4().hex


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def upload_requests(model: str) -> Iterator[registry_pb2.UploadVersionRequest]:
    yield registry_pb2.UploadVersionRequest(
        metadata=registry_pb2.UploadVersionMetadata(model=model, semver="1.0.0")
    )
    yield registry_pb2.UploadVersionRequest(chunk=linear_model())


def bearer(token: str, actor: str = "") -> tuple[tuple[str, str], ...]:
    md = (("authorization", f"Bearer {token}"),)
    return (*md, ("x-llmopt-actor", actor)) if actor else md


def audit_log(channel: grpc.Channel, md: tuple[tuple[str, str], ...] = (), **query: object):
    stub = audit_pb2_grpc.AuditStub(channel)
    return stub.GetAuditLog(audit_pb2.GetAuditLogRequest(**query), timeout=10, metadata=md)  # type: ignore[arg-type]


def rows(entries) -> list[tuple[str, str, str, str]]:
    return [(e.principal, e.method, e.target, e.code) for e in entries]


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code()  # type: ignore[attr-defined]


def test_admin_rpcs_appear_in_the_audit_log(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory()
    model, bandit = unique("m"), unique("b")
    before = time.time()
    with server.channel() as channel:
        registry = registry_pb2_grpc.RegistryStub(channel)
        bandits = bandits_grpc.BanditsStub(channel)
        registry.CreateModel(registry_pb2.CreateModelRequest(name=model), timeout=10)
        registry.UploadVersion(upload_requests(model), timeout=60)
        registry.SetAlias(
            registry_pb2.SetAliasRequest(model=model, alias="challenger", version=1), timeout=10
        )
        registry.Promote(registry_pb2.PromoteRequest(model=model), timeout=10)
        registry.GetModel(registry_pb2.GetModelRequest(name=model), timeout=10)  # read: not kept
        arms = [
            common_pb2.Arm(arm_id=f"a{i}", config=common_pb2.LLMConfig(model="x")) for i in (0, 1)
        ]
        bandits.CreateBandit(
            bandits_pb2.CreateBanditRequest(
                bandit=bandits_pb2.Bandit(
                    name=bandit, arms=arms, policy=bandits_pb2.Policy(ucb1=bandits_pb2.UCB1())
                )
            ),
            timeout=10,
        )
        bandits.DeleteBandit(bandits_pb2.DeleteBanditRequest(name=bandit), timeout=10)
        # A failing admin RPC: there is no challenger left to promote.
        failed = code_of(
            lambda: registry.Promote(registry_pb2.PromoteRequest(model=model), timeout=10)
        )
        missing = code_of(
            lambda: bandits.DeleteBandit(bandits_pb2.DeleteBanditRequest(name=bandit), timeout=10)
        )
        after = time.time()

        answer = audit_log(channel)
        entries = list(answer.entries)
        assert answer.next_page_token == ""
        # Newest first.
        assert [(e.method, e.code) for e in entries][::-1] == [
            (R + "CreateModel", "OK"),
            (R + "UploadVersion", "OK"),
            (R + "SetAlias", "OK"),
            (R + "Promote", "OK"),
            (B + "CreateBandit", "OK"),
            (B + "DeleteBandit", "OK"),
            (R + "Promote", failed.name),
            (B + "DeleteBandit", missing.name),
        ]
        assert failed == grpc.StatusCode.FAILED_PRECONDITION
        assert missing == grpc.StatusCode.NOT_FOUND
        by_method = {(e.method, e.code): e for e in entries}
        assert by_method[(R + "CreateModel", "OK")].target == model
        assert by_method[(R + "UploadVersion", "OK")].target == model  # from the first message
        assert by_method[(R + "SetAlias", "OK")].target == f"{model}@challenger"
        assert by_method[(R + "Promote", "OK")].target == model
        assert by_method[(B + "DeleteBandit", "NOT_FOUND")].target == bandit
        assert {e.principal for e in entries} == {""}  # auth off: nobody authenticated
        times = [e.time.seconds + e.time.nanos / 1e9 for e in entries]
        assert all(before - 1 <= t <= after + 1 for t in times)
        assert times == sorted(times, reverse=True)

        # Filters and pages over the wire (asking is itself recorded: the newest entry).
        promotes = audit_log(channel, method=R + "Promote").entries
        assert [e.code for e in promotes] == ["FAILED_PRECONDITION", "OK"]
        assert [e.method for e in audit_log(channel, target=bandit).entries] == [
            B + "DeleteBandit",
            B + "DeleteBandit",
            B + "CreateBandit",
        ]
        assert audit_log(channel, until=Timestamp(seconds=int(before) - 10)).entries == []
        recent = audit_log(channel, since=Timestamp(seconds=int(before) - 10)).entries
        assert len(recent) >= len(entries)
        seen, token = [], ""
        while True:
            page = audit_log(
                channel, target=model, page=common_pb2.PageRequest(page_size=2, page_token=token)
            )
            assert len(page.entries) <= 2
            seen += [e.method for e in page.entries]
            token = page.next_page_token
            if not token:
                break
        assert seen == [R + "Promote", R + "Promote", R + "UploadVersion", R + "CreateModel"]
        bad = code_of(lambda: audit_log(channel, page=common_pb2.PageRequest(page_token="x")))
        assert bad == grpc.StatusCode.INVALID_ARGUMENT


def test_with_tokens_the_principal_is_the_tokens(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(
        "# principal per token\n"
        f"{hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()} ops admin,read\n"
        f"{hashlib.sha256(READ_TOKEN.encode()).hexdigest()} viewer read\n"
    )
    server = server_factory("--auth-tokens", str(tokens))
    model = unique("m")
    admin = bearer(ADMIN_TOKEN, actor="mallory")  # the header claims someone else
    with server.channel() as channel:
        registry = registry_pb2_grpc.RegistryStub(channel)
        registry.CreateModel(
            registry_pb2.CreateModelRequest(name=model), timeout=10, metadata=admin
        )
        registry.UploadVersion(upload_requests(model), timeout=60, metadata=admin)
        registry.SetAlias(
            registry_pb2.SetAliasRequest(model=model, alias="champion", version=1),
            timeout=10,
            metadata=admin,
        )
        denied = code_of(
            lambda: registry.Promote(
                registry_pb2.PromoteRequest(model=model), timeout=10, metadata=bearer(READ_TOKEN)
            )
        )
        anonymous = code_of(
            lambda: registry.DeleteModel(
                registry_pb2.DeleteModelRequest(name=model, force=True), timeout=10
            )
        )
        assert (denied, anonymous) == (
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.UNAUTHENTICATED,
        )
        history = registry.GetAliasHistory(
            registry_pb2.GetAliasHistoryRequest(model=model, alias="champion"),
            timeout=10,
            metadata=admin,
        )
        assert [c.actor for c in history.changes] == ["ops"]

        # The log itself needs admin: the reader is refused, and that refusal is recorded too.
        refused = code_of(lambda: audit_log(channel, bearer(READ_TOKEN)))
        assert refused == grpc.StatusCode.PERMISSION_DENIED
        entries = audit_log(channel, bearer(ADMIN_TOKEN)).entries
        assert [(e.principal, e.method, e.code) for e in entries][::-1] == [
            ("ops", R + "CreateModel", "OK"),
            ("ops", R + "UploadVersion", "OK"),
            ("ops", R + "SetAlias", "OK"),
            ("viewer", R + "Promote", "PERMISSION_DENIED"),
            ("", R + "DeleteModel", "UNAUTHENTICATED"),
            ("viewer", GET_AUDIT_LOG, "PERMISSION_DENIED"),
        ]
        assert entries[-3].target == f"{model}@champion"
        assert entries[1].target == entries[2].target == entries[-1].target == model
        mine = audit_log(channel, bearer(ADMIN_TOKEN), principal="viewer").entries
        assert rows(mine) == [
            ("viewer", GET_AUDIT_LOG, "", "PERMISSION_DENIED"),
            ("viewer", R + "Promote", model, "PERMISSION_DENIED"),
        ]
        # The refusals changed nothing: the model is there, champion at 1.
        got = registry.GetModel(
            registry_pb2.GetModelRequest(name=model), timeout=10, metadata=admin
        )
        assert dict(got.aliases) == {"champion": 1}


def test_an_answered_admin_rpc_survives_kill_9(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = server_factory(data_dir=data_dir)
    model = unique("m")
    with server.channel() as channel:
        registry_pb2_grpc.RegistryStub(channel).CreateModel(
            registry_pb2.CreateModelRequest(name=model), timeout=10
        )
    server.kill()
    again = server_factory(data_dir=data_dir)
    with again.channel() as channel:
        entries = audit_log(channel, target=model).entries
    assert rows(entries) == [("", R + "CreateModel", model, "OK")]
