"""llmopt.v1.Features: feature sets, the online store and dense vectors (llmopt.features)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmopt import errors
from llmopt.api import convert_features as cf
from llmopt.api.binding import ServiceBinding, service_name
from llmopt.api.convert import from_request_context
from llmopt.features import FeatureService
from llmopt.gen.llmopt.v1 import features_pb2, features_pb2_grpc

if TYPE_CHECKING:
    from llmopt.composition import Services

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class FeaturesServicer(features_pb2_grpc.FeaturesServicer):
    def __init__(self, features: FeatureService) -> None:
        self._features = features

    def CreateFeatureSet(self, request, context):  # type: ignore[no-untyped-def]
        fs = cf.from_feature_set(request.feature_set)
        return cf.to_feature_set(self._features.create_set(fs, fit_from_store=request.fit))

    def GetFeatureSet(self, request, context):  # type: ignore[no-untyped-def]
        if request.version < 0:
            raise errors.invalid("version", request.version, "must be >= 0 (0 = latest)")
        return cf.to_feature_set(self._features.get_set(request.name, request.version))

    def ListFeatureSets(self, request, context):  # type: ignore[no-untyped-def]
        size = request.page.page_size or DEFAULT_PAGE_SIZE
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise errors.invalid("page.page_size", request.page.page_size,
                                 f"must be in 0..{MAX_PAGE_SIZE}")  # fmt: skip
        sets, token = self._features.list_sets(size, request.page.page_token)
        return features_pb2.ListFeatureSetsResponse(
            feature_sets=[cf.to_feature_set(s) for s in sets], next_page_token=token
        )

    def WriteFeatures(self, request, context):  # type: ignore[no-untyped-def]
        written = self._features.write(request.feature_set, cf.from_request_rows(request))
        return features_pb2.WriteFeaturesResponse(rows_written=written)

    def WriteFeaturesStream(self, request_iterator, context):  # type: ignore[no-untyped-def]
        written = 0
        for request in request_iterator:
            written += self._features.write(request.feature_set, cf.from_request_rows(request))
        return features_pb2.WriteFeaturesResponse(rows_written=written)

    def GetFeatures(self, request, context):  # type: ignore[no-untyped-def]
        as_of = cf.from_timestamp(request.as_of) if request.HasField("as_of") else None
        entities = self._features.read(
            request.feature_set, request.entity_ids, request.feature_names, as_of
        )
        return features_pb2.GetFeaturesResponse(
            entities=[cf.to_entity_features(e) for e in entities]
        )

    def GetFeatureVector(self, request, context):  # type: ignore[no-untyped-def]
        ctx = from_request_context(request.context) if request.HasField("context") else None
        vector = self._features.vector(request.feature_set, ctx, request.entity_ids)
        return cf.to_feature_vector(vector)


def bind(services: Services) -> ServiceBinding:
    return ServiceBinding(
        service_name(features_pb2, "Features"),
        features_pb2_grpc.add_FeaturesServicer_to_server,
        FeaturesServicer(services.features),
    )
