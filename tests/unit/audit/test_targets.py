"""target_of: every admin RPC of the scope table names its target, from the real request."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message

from llmopt.audit import TARGET_FIELDS, target_of
from llmopt.gen.inference import grpc_service_pb2 as oip_pb2
from llmopt.gen.llmopt.v1 import (
    audit_pb2,
    bandits_pb2,
    common_pb2,
    features_pb2,
    inference_pb2,
    registry_pb2,
    tuning_pb2,
)
from llmopt.security import SCOPE_BY_METHOD

R = "/llmopt.v1.Registry/"
B = "/llmopt.v1.Bandits/"

# Every admin RPC: a request as a client sends it, and the target it is recorded under.
CASES: dict[str, tuple[Message, str]] = {
    R + "CreateModel": (registry_pb2.CreateModelRequest(name="qp", description="d"), "qp"),
    R + "DeleteModel": (registry_pb2.DeleteModelRequest(name="qp", force=True), "qp"),
    R + "UploadVersion": (
        registry_pb2.UploadVersionRequest(
            metadata=registry_pb2.UploadVersionMetadata(model="qp", semver="1.0.0")
        ),
        "qp",
    ),
    R + "DeleteVersion": (registry_pb2.DeleteVersionRequest(model="qp", version=3), "qp@3"),
    R + "SetAlias": (
        registry_pb2.SetAliasRequest(model="qp", alias="champion", version=2, reason="r"),
        "qp@champion",
    ),
    R + "DeleteAlias": (registry_pb2.DeleteAliasRequest(model="qp", alias="shadow"), "qp@shadow"),
    R + "Promote": (registry_pb2.PromoteRequest(model="qp", reason="r"), "qp"),
    R + "Rollback": (registry_pb2.RollbackRequest(model="qp"), "qp"),
    "/llmopt.v1.Features/CreateFeatureSet": (
        features_pb2.CreateFeatureSetRequest(feature_set=features_pb2.FeatureSet(name="user")),
        "user",
    ),
    B + "CreateBandit": (
        bandits_pb2.CreateBanditRequest(bandit=bandits_pb2.Bandit(name="router")),
        "router",
    ),
    B + "DeleteBandit": (bandits_pb2.DeleteBanditRequest(name="router"), "router"),
    B + "AddArm": (
        bandits_pb2.AddArmRequest(bandit="router", arm=common_pb2.Arm(arm_id="gpt")),
        "router@gpt",
    ),
    B + "RemoveArm": (bandits_pb2.RemoveArmRequest(bandit="router", arm_id="gpt"), "router@gpt"),
    "/llmopt.v1.Inference/SetTrafficPolicy": (
        inference_pb2.SetTrafficPolicyRequest(policy=inference_pb2.TrafficPolicy(model="qp")),
        "qp",
    ),
    "/llmopt.v1.Audit/GetAuditLog": (audit_pb2.GetAuditLogRequest(target="qp"), "qp"),
    "/inference.GRPCInferenceService/RepositoryModelLoad": (
        oip_pb2.RepositoryModelLoadRequest(model_name="qp"),
        "qp",
    ),
    "/inference.GRPCInferenceService/RepositoryModelUnload": (
        oip_pb2.RepositoryModelUnloadRequest(model_name="qp"),
        "qp",
    ),
    "/llmopt.v1.Tuning/CreateStudy": (
        tuning_pb2.CreateStudyRequest(study=tuning_pb2.Study(name="temp")),
        "temp",
    ),
    "/llmopt.v1.Tuning/DeleteStudy": (tuning_pb2.DeleteStudyRequest(name="temp"), "temp"),
    "/llmopt.v1.Tuning/StopStudy": (tuning_pb2.StopStudyRequest(name="temp"), "temp"),
}

ADMIN = sorted(m for m, scope in SCOPE_BY_METHOD.items() if scope == "admin")


def test_every_admin_rpc_has_a_target_rule() -> None:
    assert ADMIN, "the scope table has no admin RPC"
    assert sorted(TARGET_FIELDS) == ADMIN
    assert sorted(CASES) == ADMIN


@pytest.mark.parametrize("method", ADMIN)
def test_target_of_each_admin_rpc(method: str) -> None:
    request, expected = CASES[method]
    assert target_of(method, request) == expected


@pytest.mark.parametrize("method", ADMIN)
def test_an_empty_request_has_no_target(method: str) -> None:
    request, _ = CASES[method]
    assert target_of(method, type(request)()) == ""


def test_unset_version_or_alias_leaves_the_bare_name() -> None:
    assert target_of(R + "DeleteVersion", registry_pb2.DeleteVersionRequest(model="qp")) == "qp"
    assert target_of(R + "SetAlias", registry_pb2.SetAliasRequest(model="qp")) == "qp"


def test_no_request_or_an_unknown_method_has_no_target() -> None:
    assert target_of(R + "Promote", None) == ""
    assert target_of("/llmopt.v1.Registry/GetModel", registry_pb2.GetModelRequest(name="qp")) == ""
