"""One interceptor for every RPC: readiness gate, error mapping, metrics.

Every servicer method runs inside it, so later services get the same behaviour for free:
exceptions become a status through the one mapping (``llmopt.api.errors.status_of``: domain
errors their code, anything unexpected INTERNAL with a request id that also appears in the logged
traceback), and each call is counted by method and code and timed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from llmopt import errors
from llmopt.api.errors import status_of
from llmopt.metrics import RpcMetrics

# Services that answer while the server is starting or stopping.
ALWAYS_OPEN_PREFIXES = ("/grpc.health.", "/grpc.reflection.")
# Streams that last as long as the client wants; shutdown does not wait for them to end.
ENDLESS_METHODS = ("/grpc.health.v1.Health/Watch",)


class ServingInterceptor(grpc.ServerInterceptor):
    def __init__(
        self,
        metrics: RpcMetrics | None,
        is_ready: Callable[[], bool],
        stream_pool: ThreadPoolExecutor | None = None,
    ) -> None:
        self._metrics = metrics
        self._is_ready = is_ready
        self._stream_pool = stream_pool
        # The contexts of the RPCs in progress. set.add and set.discard of an object hashed by
        # identity are atomic under the GIL, so counting takes no lock: a lock shared by every
        # handler thread is where threads queue and hand the GIL over, which costs more than the
        # count. Only drain waits, and it polls.
        self._active: set[object] = set()
        # Handlers are fixed once the server starts: wrap each method once, not on every call.
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    @property
    def in_flight(self) -> int:
        """RPCs in progress now (endless streams aside)."""
        return len(self._active)

    def wait_idle(self, timeout: float, poll: float = 0.005) -> bool:
        """Wait until no RPC is in progress (endless streams aside); False on timeout."""
        deadline = time.monotonic() + timeout
        while self.in_flight > 0:
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)
        return True

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        method: str = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = continuation(handler_call_details)
            if handler is None:
                return None
            wrapped = self._wrapped.setdefault(method, self._wrap(handler, method))
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        gated = not method.startswith(ALWAYS_OPEN_PREFIXES)
        counted = method not in ENDLESS_METHODS
        streaming_in = bool(handler.stream_unary or handler.stream_stream)
        serialized = getattr(handler.unary_unary, "answers_serialized", False)
        options = {
            "request_deserializer": _tolerant(handler.request_deserializer, method),
            "response_serializer": None if serialized else handler.response_serializer,
        }
        if handler.unary_unary:
            wrapped = self._unary(handler.unary_unary, method, gated, counted, streaming_in)
            return grpc.unary_unary_rpc_method_handler(wrapped, **options)
        # Any streaming RPC runs on the stream pool (grpc honours a behaviour's
        # ``experimental_thread_pool``; grpcio-health-checking's Watch relies on it too).
        if handler.stream_unary:
            wrapped = self._unary(handler.stream_unary, method, gated, counted, streaming_in)
            wrapped.experimental_thread_pool = self._stream_pool  # type: ignore[attr-defined]
            return grpc.stream_unary_rpc_method_handler(wrapped, **options)
        behavior = handler.unary_stream or handler.stream_stream
        wrapped = self._stream(behavior, method, gated, counted, streaming_in)
        wrapped.experimental_thread_pool = self._stream_pool  # type: ignore[attr-defined]
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(wrapped, **options)
        return grpc.stream_stream_rpc_method_handler(wrapped, **options)

    def _unary(
        self,
        behavior: Callable[..., Any],
        method: str,
        gated: bool,
        counted: bool,
        streaming_in: bool,
    ) -> Callable[..., Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            if counted:
                self._active.add(context)
            try:
                if gated and not self._is_ready():
                    raise errors.Unavailable("server is not serving (starting up or shutting down)")
                return behavior(_parsed(request, streaming_in), context)
            except Exception as exc:
                _abort_for(exc, method, context)
            finally:
                if counted:
                    self._active.discard(context)
                self._record(method, context, start)

        return call

    def _stream(
        self,
        behavior: Callable[..., Any],
        method: str,
        gated: bool,
        counted: bool,
        streaming_in: bool,
    ) -> Callable[..., Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            start = time.perf_counter()
            if counted:
                self._active.add(context)
            try:
                if gated and not self._is_ready():
                    raise errors.Unavailable("server is not serving (starting up or shutting down)")
                yield from behavior(_parsed(request, streaming_in), context)
            except Exception as exc:
                _abort_for(exc, method, context)
            finally:
                if counted:
                    self._active.discard(context)
                self._record(method, context, start)

        return call

    def _record(self, method: str, context: grpc.ServicerContext, start: float) -> None:
        if self._metrics is not None:
            code = context.code() or grpc.StatusCode.OK  # type: ignore[attr-defined]
            self._metrics.observe(method, code.name, time.perf_counter() - start)


class _Malformed:
    """What the tolerant deserializer returns for bytes that are not a valid request."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any] | None, method: str) -> Any:
    """Never let grpc fail to deserialize a request: grpc then answers INTERNAL, and a streaming
    call that fails so can leave the server unable to finish ``stop()`` (seen with grpcio 1.85).
    The servicer wrapper turns the marker into INVALID_ARGUMENT instead."""
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:
            return _Malformed(
                f"request: {len(data)} bytes are not a valid message for {method}: {exc}"
            )

    return parse


def _parsed(request: Any, streaming_in: bool) -> Any:
    if streaming_in:
        return _parsed_stream(request)
    if type(request) is _Malformed:
        raise errors.InvalidArgument(request.error)
    return request


def _parsed_stream(requests: Iterator[Any]) -> Iterator[Any]:
    for request in requests:
        if type(request) is _Malformed:
            raise errors.InvalidArgument(request.error)
        yield request


def _abort_for(exc: Exception, method: str, context: grpc.ServicerContext) -> None:
    """Turn an exception escaping a servicer into a status; never lets it reach grpc's core."""
    if _servicer_chose_status(exc, context):
        raise exc  # the servicer already chose a status (context.abort)
    context.abort(*status_of(exc, method))


def _servicer_chose_status(exc: Exception, context: grpc.ServicerContext) -> bool:
    """Whether ``exc`` is grpc's own after the servicer called ``context.abort``."""
    if isinstance(exc, errors.LLMOptError | NotImplementedError):
        return False
    current = context.code()  # type: ignore[attr-defined]
    return current is not None and current != grpc.StatusCode.OK
