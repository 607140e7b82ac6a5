"""Server reflection under both names, v1alpha (grpcio-reflection) and v1.

grpcio-reflection implements only ``grpc.reflection.v1alpha``. The v1 service has the same
messages with the same field numbers, so v1 requests are re-read as v1alpha messages, answered by
grpcio-reflection's own servicer, and the answers re-read as v1 messages. Nothing is reimplemented.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import grpc
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2

from llmopt.gen.grpc.reflection.v1 import reflection_pb2 as v1_pb2
from llmopt.gen.grpc.reflection.v1 import reflection_pb2_grpc as v1_grpc

V1_SERVICE_NAME: str = v1_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name


class _V1Reflection(v1_grpc.ServerReflectionServicer):
    def __init__(self, alpha: reflection.ReflectionServicer) -> None:
        self._alpha = alpha

    def ServerReflectionInfo(  # type: ignore[override]
        self,
        request_iterator: Iterable[v1_pb2.ServerReflectionRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[v1_pb2.ServerReflectionResponse]:
        alpha_requests = (
            v1alpha_pb2.ServerReflectionRequest.FromString(r.SerializeToString())
            for r in request_iterator
        )
        for response in self._alpha.ServerReflectionInfo(alpha_requests, context):
            yield v1_pb2.ServerReflectionResponse.FromString(response.SerializeToString())


def enable_reflection(server: grpc.Server, service_names: Sequence[str]) -> None:
    """Serve reflection for ``service_names`` plus both reflection services themselves."""
    names = (*service_names, reflection.SERVICE_NAME, V1_SERVICE_NAME)
    alpha = reflection.ReflectionServicer(names)
    from grpc_reflection.v1alpha import reflection_pb2_grpc as v1alpha_grpc

    v1alpha_grpc.add_ServerReflectionServicer_to_server(alpha, server)
    v1_grpc.add_ServerReflectionServicer_to_server(_V1Reflection(alpha), server)
