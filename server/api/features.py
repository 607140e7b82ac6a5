"""llmopt.v1.Features. Built so far: GetFeatureVector for the built-in request context vector."""

from __future__ import annotations

import numpy as np

from server import errors
from server.api.binding import AppContext, ServiceBinding, service_name
from server.api.convert import from_request_context, to_tensor
from server.features.context import DEFAULT_CONTEXT_SLOTS, default_context
from server.gen.llmopt.v1 import features_pb2, features_pb2_grpc

DEFAULT_FEATURE_SET = "context"


class FeaturesServicer(features_pb2_grpc.FeaturesServicer):
    """RPCs not overridden here answer UNIMPLEMENTED (see server.api.interceptor)."""

    def GetFeatureVector(self, request, context):  # type: ignore[no-untyped-def]
        if request.feature_set not in ("", DEFAULT_FEATURE_SET):
            raise errors.NotFound(
                f"feature_set: {request.feature_set!r} does not exist "
                f"(only the built-in {DEFAULT_FEATURE_SET!r} set is available so far)"
            )
        vector = default_context(from_request_context(request.context))
        return features_pb2.FeatureVector(
            feature_set=DEFAULT_FEATURE_SET,
            version=1,
            slot_names=DEFAULT_CONTEXT_SLOTS,
            vector=to_tensor(vector.astype(np.float32), name="context"),
            values=vector.tolist(),
        )


def bind(ctx: AppContext) -> ServiceBinding:
    return ServiceBinding(
        service_name(features_pb2, "Features"),
        features_pb2_grpc.add_FeaturesServicer_to_server,
        FeaturesServicer(),
    )
