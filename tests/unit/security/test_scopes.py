"""llmopt.security.scopes: every registered RPC has exactly one entry in the scope table."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

from llmopt.app import SERVICE_MODULES
from llmopt.gen.grpc.reflection.v1 import reflection_pb2 as v1_pb2
from llmopt.security import REFLECTION_METHODS, SCOPE_BY_METHOD, SCOPES, scope_of


class _NoServices:
    """Stands in for ``Services``: binding a module only stores what it is handed."""

    def __getattr__(self, name: str) -> None:
        return None


def _methods_of(service_names: set[str]) -> set[str]:
    pool = descriptor_pool.Default()
    found = set()
    for name in service_names:
        service = pool.FindServiceByName(name)
        found |= {f"/{service.full_name}/{m.name}" for m in service.methods}
    return found


def registered_methods() -> set[str]:
    """Every RPC the server registers, from the generated descriptors: the service each module
    of SERVICE_MODULES binds, health, and both reflection versions."""
    bound = {module.bind(_NoServices()).name for module in SERVICE_MODULES}  # type: ignore[arg-type]
    assert len(bound) == len(SERVICE_MODULES)
    others = {
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        v1alpha_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name,
        v1_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name,
    }
    return _methods_of(bound | others)


def test_every_registered_rpc_has_a_scope():
    missing = sorted(registered_methods() - set(SCOPE_BY_METHOD))
    assert missing == [], f"give these RPCs a scope in llmopt/security/scopes.py: {missing}"


def test_every_entry_names_a_registered_rpc():
    stale = sorted(set(SCOPE_BY_METHOD) - registered_methods())
    assert stale == [], f"these entries name no registered RPC: {stale}"


def test_scopes_are_known_and_only_health_and_reflection_are_open():
    assert {s for s in SCOPE_BY_METHOD.values() if s is not None} <= set(SCOPES)
    open_methods = {m for m, s in SCOPE_BY_METHOD.items() if s is None}
    health = {m for m in open_methods if m.startswith("/grpc.health.v1.Health/")}
    assert open_methods == health | REFLECTION_METHODS
    assert len(health) == 3


def test_the_issue_s_groups():
    assert scope_of("/llmopt.v1.Registry/Promote") == "admin"
    assert scope_of("/llmopt.v1.Registry/DownloadVersion") == "read"
    assert scope_of("/llmopt.v1.Bandits/SelectArm") == "decide"
    assert scope_of("/llmopt.v1.Features/GetFeatureVector") == "decide"
    assert scope_of("/inference.GRPCInferenceService/ModelInfer") == "predict"
    assert scope_of("/llmopt.v1.Features/WriteFeaturesStream") == "write-features"
    assert scope_of("/llmopt.v1.Audit/GetAuditLog") == "admin"
    assert scope_of("/grpc.health.v1.Health/Check") is None


def test_an_unknown_method_is_a_key_error():
    with pytest.raises(KeyError):
        scope_of("/llmopt.v1.Bandits/Nope")
