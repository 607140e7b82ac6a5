"""llmopt.v1.Registry servicer: converts messages, calls ``registry.Registry``, converts back.

The actor recorded with alias changes (and deletions, uploads) is the authenticated principal
when auth is on (``llmopt.security.current_actor``, set by the interceptor), whatever the caller
writes in the ``x-llmopt-actor`` header. With auth off nobody is authenticated, so the header is
kept as it was: a label the caller chooses, not a proof of who called.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc

from llmopt import errors
from llmopt.api import convert_registry as conv
from llmopt.api.binding import ServiceBinding, service_name
from llmopt.gen.llmopt.v1 import registry_pb2, registry_pb2_grpc
from llmopt.registry import Registry
from llmopt.security import current_actor

if TYPE_CHECKING:
    from llmopt.composition import Services

ACTOR_METADATA = "x-llmopt-actor"
DEFAULT_CHUNK = 1 << 20
# Largest chunk: a message that still fits the 4 MiB default receive limit of gRPC clients.
MAX_CHUNK = (4 << 20) - 1024


def actor_of(context: grpc.ServicerContext) -> str:
    """Who the registry records as making a change: the principal, else (auth off) the header."""
    principal = current_actor()
    if principal:
        return principal
    for key, value in context.invocation_metadata() or ():
        if key == ACTOR_METADATA:
            return value if isinstance(value, str) else value.decode(errors="replace")
    return ""


class RegistryServicer(registry_pb2_grpc.RegistryServicer):
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def CreateModel(self, request, context):  # type: ignore[no-untyped-def]
        model = self.registry.create_model(
            request.name, request.description, conv.from_task(request.task), dict(request.tags)
        )
        return conv.to_model(model)

    def GetModel(self, request, context):  # type: ignore[no-untyped-def]
        return conv.to_model(self.registry.get_model(request.name))

    def ListModels(self, request, context):  # type: ignore[no-untyped-def]
        page = self.registry.list_models_page(
            request.page.page_size, request.page.page_token, dict(request.tag_filter)
        )
        return registry_pb2.ListModelsResponse(
            models=[conv.to_model(m) for m in page.items], next_page_token=page.next_page_token
        )

    def DeleteModel(self, request, context):  # type: ignore[no-untyped-def]
        count = self.registry.delete_model(request.name, request.force, actor=actor_of(context))
        return registry_pb2.DeleteModelResponse(versions_deleted=count)

    def UploadVersion(self, request_iterator, context):  # type: ignore[no-untyped-def]
        requests = _received(request_iterator)
        first = next(requests, None)
        if first is None or first.WhichOneof("part") != "metadata":
            raise errors.invalid(
                "metadata",
                first.WhichOneof("part") if first else None,
                "the first UploadVersionRequest carries the metadata",
            )
        version = self.registry.upload_version(
            first.metadata.model,
            _chunks(requests),
            conv.from_upload_metadata(first.metadata),
            actor=actor_of(context),
        )
        return conv.to_version(version)

    def GetVersion(self, request, context):  # type: ignore[no-untyped-def]
        version, alias = conv.from_version_ref(request.version, request.alias)
        return conv.to_version(self.registry.get_version(request.model, version, alias))

    def ListVersions(self, request, context):  # type: ignore[no-untyped-def]
        page = self.registry.list_versions(
            request.model,
            request.page.page_size,
            request.page.page_token,
            dict(request.tag_filter),
        )
        return registry_pb2.ListVersionsResponse(
            versions=[conv.to_version(v) for v in page.items], next_page_token=page.next_page_token
        )

    def DeleteVersion(self, request, context):  # type: ignore[no-untyped-def]
        self.registry.delete_version(request.model, request.version)
        return registry_pb2.DeleteVersionResponse()

    def DownloadVersion(self, request, context):  # type: ignore[no-untyped-def]
        if not 0 <= request.chunk_size <= MAX_CHUNK:
            raise errors.invalid("chunk_size", request.chunk_size, f"0 (1 MiB) to {MAX_CHUNK}")
        chunk = request.chunk_size or DEFAULT_CHUNK
        version, alias = conv.from_version_ref(request.version, request.alias)
        mv, f = self.registry.open_artifact(request.model, version, alias)
        with f:
            yield registry_pb2.DownloadVersionResponse(metadata=conv.to_version(mv))
            while block := f.read(chunk):
                yield registry_pb2.DownloadVersionResponse(chunk=block)

    def SetAlias(self, request, context):  # type: ignore[no-untyped-def]
        change = self.registry.set_alias(
            request.model, request.alias, request.version, request.reason, actor_of(context)
        )
        return conv.to_alias_change(change)

    def DeleteAlias(self, request, context):  # type: ignore[no-untyped-def]
        change = self.registry.delete_alias(
            request.model, request.alias, request.reason, actor_of(context)
        )
        return conv.to_alias_change(change)

    def Promote(self, request, context):  # type: ignore[no-untyped-def]
        champion, removed = self.registry.promote(request.model, request.reason, actor_of(context))
        return registry_pb2.PromoteResponse(
            champion=conv.to_alias_change(champion),
            challenger_removed=conv.to_alias_change(removed),
        )

    def Rollback(self, request, context):  # type: ignore[no-untyped-def]
        change = self.registry.rollback(request.model, request.reason, actor_of(context))
        return conv.to_alias_change(change)

    def GetAliasHistory(self, request, context):  # type: ignore[no-untyped-def]
        page = self.registry.alias_history(
            request.model, request.alias, request.page.page_size, request.page.page_token
        )
        return registry_pb2.GetAliasHistoryResponse(
            changes=[conv.to_alias_change(c) for c in page.items],
            next_page_token=page.next_page_token,
        )


def _received(
    requests: Iterator[registry_pb2.UploadVersionRequest],
) -> Iterator[registry_pb2.UploadVersionRequest]:
    """The client's stream; a broken stream (client cancelled, deadline passed) becomes a domain
    error, so that the upload is abandoned cleanly rather than logged as a server fault."""
    try:
        yield from requests
    except grpc.RpcError:
        raise errors.Unavailable(
            "requests: the upload stream broke off (client cancelled or deadline passed); "
            "nothing was stored"
        ) from None


def _chunks(requests: Iterator[registry_pb2.UploadVersionRequest]) -> Iterator[bytes]:
    for index, request in enumerate(requests, start=1):
        if request.WhichOneof("part") != "chunk":
            raise errors.invalid(
                f"requests[{index}]",
                request.WhichOneof("part"),
                "every message after the first carries a chunk of the artifact",
            )
        yield request.chunk


def bind(services: Services) -> ServiceBinding:
    return ServiceBinding(
        service_name(registry_pb2, "Registry"),
        registry_pb2_grpc.add_RegistryServicer_to_server,
        RegistryServicer(services.registry),
    )
