"""Coverage-guided fuzzing of the request converters with atheris (``make fuzz-atheris``).

An input is a selector byte and the bytes of a request message. The converter that reads that
message may raise the server's own errors (``llmopt.errors.LLMOptError``, which the one error
mapping answers with their status); any other exception is a finding, and libFuzzer keeps the
input that raised it (``crash-*`` in the working directory). Run as a script: libFuzzer's flags
(``-max_total_time=60``, ``-runs=N``, a corpus folder) pass through.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Any

import atheris
from google.protobuf.message import DecodeError

with atheris.instrument_imports(include=["llmopt.api", "llmopt.tensors", "llmopt.bandits"]):
    from llmopt import errors
    from llmopt.api import (
        convert,
        convert_bandits,
        convert_features,
        convert_inference,
        convert_registry,
    )
    from llmopt.gen.inference import grpc_service_pb2 as oip
    from llmopt.gen.llmopt.v1 import (
        bandits_pb2,
        common_pb2,
        features_pb2,
        inference_pb2,
        registry_pb2,
    )

# (request message, what the servicer does with it first)
TARGETS: list[tuple[type[Any], Callable[[Any], object]]] = [
    (inference_pb2.PredictRequest, convert_inference.from_predict_request),
    (oip.ModelInferRequest, convert_inference.from_infer_request),
    (features_pb2.WriteFeaturesRequest, convert_features.from_request_rows),
    (
        features_pb2.CreateFeatureSetRequest,
        lambda m: convert_features.from_feature_set(m.feature_set),
    ),
    (features_pb2.GetFeaturesRequest, lambda m: convert_features.from_timestamp(m.as_of)),
    (bandits_pb2.CreateBanditRequest, lambda m: convert_bandits.from_bandit(m.bandit)),
    (bandits_pb2.AddArmRequest, lambda m: convert_bandits.from_arm(m.arm)),
    (bandits_pb2.RecordRewardRequest, lambda m: convert_bandits.from_outcome(m.outcome)),
    (
        inference_pb2.SetTrafficPolicyRequest,
        lambda m: convert_inference.from_traffic_policy(m.policy),
    ),
    (common_pb2.RequestContext, convert.from_request_context),
    (registry_pb2.UploadVersionMetadata, convert_registry.from_upload_metadata),
    (
        registry_pb2.GetVersionRequest,
        lambda m: convert_registry.from_version_ref(m.version, m.alias),
    ),
    (oip.ModelMetadataRequest, lambda m: convert_inference.parse_version(m.version, "version")),
]


def one_input(data: bytes) -> None:
    if not data:
        return
    cls, read = TARGETS[data[0] % len(TARGETS)]
    try:
        msg = cls.FromString(data[1:])
    except DecodeError:
        return  # the interceptor answers INVALID_ARGUMENT before any converter runs
    with contextlib.suppress(errors.LLMOptError):
        read(msg)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
