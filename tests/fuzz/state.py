"""Stored state, read back through the server's read RPCs, as a comparable dict.

What a client can read of every bandit (definition and counts), model (versions, aliases, traffic
policy), feature set (definitions, and the fixture's stored rows) and study (definition, trials).
Fields that move with the clock alone (open and expired decision counts, staleness) are left out,
so two snapshots differ only when a write took effect.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from llmopt.gen.llmopt.v1 import (
    bandits_pb2,
    bandits_pb2_grpc,
    common_pb2,
    features_pb2,
    features_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    tuning_pb2,
    tuning_pb2_grpc,
)
from tests.fuzz.fixture import ENTITIES, FEATURE_SET

PAGE = common_pb2.PageRequest(page_size=1000)
TIMEOUT = 30


def _dict(msg: Any) -> dict[str, Any]:
    return MessageToDict(msg, preserving_proto_field_name=True)


def snapshot(channel: grpc.Channel) -> dict[str, Any]:
    bandits = bandits_pb2_grpc.BanditsStub(channel)
    registry = registry_pb2_grpc.RegistryStub(channel)
    inference = inference_pb2_grpc.InferenceStub(channel)
    features = features_pb2_grpc.FeaturesStub(channel)
    tuning = tuning_pb2_grpc.TuningStub(channel)
    state: dict[str, Any] = {"bandits": {}, "models": {}, "feature_sets": {}, "studies": {}}

    for b in bandits.ListBandits(
        bandits_pb2.ListBanditsRequest(page=PAGE), timeout=TIMEOUT
    ).bandits:
        stats = _dict(bandits.GetStats(bandits_pb2.GetStatsRequest(bandit=b.name), timeout=TIMEOUT))
        stats.pop("open_decisions", None)
        stats.pop("expired_decisions", None)
        state["bandits"][b.name] = {"bandit": _dict(b), "stats": stats}

    models = registry.ListModels(registry_pb2.ListModelsRequest(page=PAGE), timeout=TIMEOUT)
    for m in models.models:
        versions = registry.ListVersions(
            registry_pb2.ListVersionsRequest(model=m.name, page=PAGE), timeout=TIMEOUT
        )
        policy = inference.GetTrafficPolicy(
            inference_pb2.GetTrafficPolicyRequest(model=m.name), timeout=TIMEOUT
        )
        state["models"][m.name] = {
            "model": _dict(m),
            "versions": [_dict(v) for v in versions.versions],
            "policy": _dict(policy),
        }

    studies = tuning.ListStudies(tuning_pb2.ListStudiesRequest(page=PAGE), timeout=TIMEOUT)
    for study in studies.studies:
        trials = tuning.ListTrials(
            tuning_pb2.ListTrialsRequest(study=study.name, page=PAGE), timeout=TIMEOUT
        )
        state["studies"][study.name] = {
            "study": _dict(study),
            "trials": [_dict(t) for t in trials.trials],
        }

    sets = features.ListFeatureSets(features_pb2.ListFeatureSetsRequest(page=PAGE), timeout=TIMEOUT)
    for fs in sets.feature_sets:
        state["feature_sets"][fs.name] = _dict(fs)
    if FEATURE_SET in state["feature_sets"]:
        rows = features.GetFeatures(
            features_pb2.GetFeaturesRequest(feature_set=FEATURE_SET, entity_ids=list(ENTITIES)),
            timeout=TIMEOUT,
        )
        state["rows"] = {
            e.entity_id: {
                name: (_dict(v.value), v.event_time.ToMicroseconds(), v.missing)
                for name, v in sorted(e.values.items())
            }
            for e in rows.entities
        }
    return state


def diff(before: dict[str, Any], after: dict[str, Any], path: str = "") -> list[str]:
    """Where two snapshots differ, as short 'path: before -> after' lines."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in sorted(set(before) | set(after), key=str):
            out += diff(before.get(key, "<absent>"), after.get(key, "<absent>"), f"{path}/{key}")
        return out
    if before != after:
        return [f"{path}: {str(before)[:200]} -> {str(after)[:200]}"]
    return []
