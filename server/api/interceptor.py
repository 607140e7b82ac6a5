"""One interceptor for every RPC: where it runs, whether it is admitted, errors, metrics, streams.

Every servicer method runs inside it, so later services get the same behaviour for free:

- **Lanes.** Each RPC runs on the thread pool of its lane (``Lanes``): unary calls on a few
  threads, domain streams on threads of their own, health and reflection apart from both, so
  that no kind of traffic can starve another.
- **Limits.** The unary and the stream lane admit a bounded number of RPCs in progress (queued
  or running); beyond it a new RPC answers RESOURCE_EXHAUSTED naming the limit. The check runs
  where grpc hands the call over, before it takes a thread of its lane, and the refusal runs on
  the control lane, so a full lane never delays it. Health and reflection are never refused.
- **Idle streams.** A stream that waits on its client for longer than ``stream_idle_seconds``
  ends with DEADLINE_EXCEEDED naming the limit (``OpenStreams``). Waiting on the client means
  blocked for the client's next message (client-streaming and bidi RPCs), or blocked until the
  client takes the last answer (every stream that answers with a stream). A server-streaming
  call that keeps sending to a client that keeps reading is never idle. Health ``Watch`` holds no
  thread at all (grpc's non-blocking handlers), so it never counts and never idles.
- **Shutdown.** ``begin_drain`` ends every ``Watch`` at once with UNAVAILABLE, and from then on
  ends a stream with UNAVAILABLE as soon as it waits on its client for ``DRAIN_IDLE_SECONDS``;
  streams busy with a message, and unary calls, finish (``wait_idle``).
- **Errors.** Exceptions become a status through the one mapping
  (``llmopt.api.errors.status_of``: domain errors their code, anything unexpected INTERNAL with a
  request id that also appears in the logged traceback). A call that ended under the handler
  (the client cancelled, its deadline passed, or this server ended it) is not an error: it is
  logged at debug level and nothing is sent.
- **Metrics.** Each call is counted by method and code and timed.
- **Who is calling.** With an ``Authenticator`` (auth on), every RPC but the open ones (health;
  reflection unless ``reflection_auth``) first authenticates (the ``authorization`` metadata, or
  the mTLS client certificate's subject common name) and is authorized against the scope table
  (``llmopt.security.scopes``), before anything else runs or is looked up: UNAUTHENTICATED or
  PERMISSION_DENIED naming the scope. The handler sees the caller in
  ``llmopt.security.current_principal``. An RPC the table does not know is refused. Auth off
  costs one branch per call.
- **Audit.** With an ``AuditSink``, every ``admin``-scope RPC is recorded (principal, method,
  target, status code, time) whatever its outcome, refusals included, before its answer leaves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc

from llmopt import errors
from llmopt.api.errors import status_of
from llmopt.audit import target_of
from llmopt.metrics import RpcMetrics
from llmopt.ports import AuditSink
from llmopt.security import REFLECTION_METHODS, Authenticator, scope_of
from llmopt.security import current_principal as _current_principal

log = logging.getLogger("llmopt.rpc")

# Services that answer while the server is starting or stopping, and are never refused by a limit.
ALWAYS_OPEN_PREFIXES = ("/grpc.health.", "/grpc.reflection.")
# While draining, a stream that has waited this long on its client is idle and ends: long enough
# for a client between two messages it has ready (the chunks of an upload), short beside a grace.
DRAIN_IDLE_SECONDS = 1.0
# Threads of the lanes that no setting sizes: health calls and refusals (short, never held), and
# reflection streams (held while open, as long as their client keeps them busy).
CONTROL_WORKERS = 4
REFLECTION_WORKERS = 8

NEXT_MESSAGE = "the client's next message"
CLIENT_READ = "the client to read the last answer"


class CountingPool(ThreadPoolExecutor):
    """A thread pool that knows how many tasks it holds, queued or running.

    grpc submits every call to the pool of its handler (``experimental_thread_pool``), so this
    count is the lane's RPCs in progress. ``set.add`` and ``set.discard`` are atomic under the
    GIL: no lock on the way of every call.
    """

    def __init__(self, max_workers: int, name: str) -> None:
        super().__init__(max_workers, thread_name_prefix=name)
        self._held: set[Future[Any]] = set()

    @property
    def held(self) -> int:
        return len(self._held)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future = super().submit(fn, *args, **kwargs)
        self._held.add(future)
        future.add_done_callback(self._held.discard)
        return future


@dataclass(frozen=True)
class Lane:
    """Where one kind of RPC runs, and how many of them may be in progress at once."""

    pool: CountingPool
    limit: int | None = None  # None: never refused
    what: str = "RPCs"  # named in a refusal
    setting: str = ""  # the setting of the limit, named in a refusal

    def full(self) -> bool:
        return self.limit is not None and self.pool.held >= self.limit


@dataclass(frozen=True)
class Lanes:
    """The server's thread pools, one per kind of RPC."""

    unary: Lane
    streams: Lane
    control: Lane
    reflection: Lane

    @classmethod
    def create(cls, workers: int, max_unary: int, max_streams: int) -> Lanes:
        """``workers`` threads run unary calls, up to ``max_unary`` in progress (the rest queue);
        each of ``max_streams`` streams has a thread of its own, so none waits for one."""
        return cls(
            unary=Lane(CountingPool(workers, "rpc"), max_unary, "RPCs", "--max-concurrent-rpcs"),
            streams=Lane(
                CountingPool(max_streams, "rpc-stream"),
                max_streams,
                "streams",
                "--max-concurrent-streams",
            ),
            control=Lane(CountingPool(CONTROL_WORKERS, "rpc-control")),
            reflection=Lane(CountingPool(REFLECTION_WORKERS, "rpc-reflection")),
        )

    def shutdown(self, wait: bool) -> None:
        for lane in (self.unary, self.streams, self.control, self.reflection):
            lane.pool.shutdown(wait=wait)


class _Stream:
    """One open stream: what it waits on the client for (None: busy), and since when."""

    __slots__ = ("context", "ended_with", "first", "method", "since", "waiting_for")

    def __init__(self, context: grpc.ServicerContext, method: str) -> None:
        self.context = context
        self.method = method
        self.waiting_for: str | None = None
        self.since = 0.0
        self.ended_with: grpc.StatusCode | None = None
        self.first: Any = None  # the client's first message (client streams): the audit target


def end_call(context: grpc.ServicerContext, exc: errors.LLMOptError, method: str) -> None:
    """End ``context``'s call now, from any thread, with the status of ``exc``.

    The handler's thread may be blocked in grpc (waiting for a message, or for the client to
    take one), where it cannot raise. grpc's public ``ServicerContext.cancel()`` ends the call,
    but the client then reads a bare CANCELLED; the call object behind the context can cancel
    with a status of our choosing, which the client reads as the RPC's status. The handler then
    sees a grpc ``RpcError`` and unwinds (see ``_abort_for``).
    """
    code, message = status_of(exc, method)
    call = getattr(getattr(context, "_rpc_event", None), "call", None)
    if call is None:  # a grpc without that object: end it all the same
        context.cancel()
        return
    call.cancel(code.value[0], message)


class OpenStreams:
    """The streams in progress; one thread ends those that wait on their client too long.

    ``idle_seconds`` 0 turns the idle limit off (draining still ends streams that wait).
    """

    def __init__(self, idle_seconds: float) -> None:
        self.idle_seconds = idle_seconds
        self._open: set[_Stream] = set()
        self._endless: set[_Stream] = set()  # Watch: ended at shutdown, never idle
        self._draining = False
        self._lock = threading.Lock()  # ending a stream: once, never twice
        self._closed = threading.Event()
        tick = min(0.25, idle_seconds / 4) if idle_seconds > 0 else 0.25
        self._reaper = threading.Thread(
            target=self._run, args=(tick,), name="rpc-idle-streams", daemon=True
        )
        self._reaper.start()

    def open(self, stream: _Stream) -> None:
        self._open.add(stream)

    def close(self, stream: _Stream) -> None:
        self._open.discard(stream)

    def open_endless(self, stream: _Stream) -> None:
        self._endless.add(stream)
        if self._draining:  # opened after begin_drain swept: end it here
            self.end(stream, errors.Unavailable("server is shutting down"))

    def close_endless(self, stream: _Stream) -> None:
        self._endless.discard(stream)

    def end(self, stream: _Stream, exc: errors.LLMOptError) -> None:
        with self._lock:
            if stream.ended_with is not None:
                return
            stream.ended_with = status_of(exc, stream.method)[0]
        log.debug("%s: %s", stream.method, exc)
        end_call(stream.context, exc, stream.method)

    def begin_drain(self) -> None:
        """End every endless stream now; from now on, end streams as soon as they wait."""
        self._draining = True
        for stream in list(self._endless):
            self.end(stream, errors.Unavailable("server is shutting down"))
        self.reap()

    def end_all(self, exc: errors.LLMOptError) -> None:
        for stream in [*self._open, *self._endless]:
            self.end(stream, exc)

    def reap(self) -> None:
        now = time.monotonic()
        draining = self._draining
        limit = DRAIN_IDLE_SECONDS if draining else self.idle_seconds
        if limit <= 0:
            return
        for stream in list(self._open):
            waiting_for = stream.waiting_for
            if waiting_for is None or now - stream.since < limit:
                continue
            if draining:
                exc: errors.LLMOptError = errors.Unavailable(
                    f"server is shutting down: the stream was waiting for {waiting_for}"
                )
            else:
                exc = errors.DeadlineExceeded(
                    f"stream idle: waited {limit:g} s for {waiting_for} "
                    f"(--stream-idle-seconds {limit:g})"
                )
            self.end(stream, exc)

    def close_all(self) -> None:
        self._closed.set()
        self._reaper.join(5)

    def _run(self, tick: float) -> None:
        while not self._closed.wait(tick):
            self.reap()


# What runs before an RPC's handler when auth is on: it sets ``current_principal`` to who is
# calling and raises the refusal, if any. The principal stays set when it is refused a scope, for
# the audit trail; the wrapper clears it when the call is over.
Guard = Callable[[grpc.ServicerContext], None]


def _metadata(context: grpc.ServicerContext) -> dict[str, str]:
    return {m.key: m.value for m in context.invocation_metadata() or ()}  # type: ignore[attr-defined]


def peer_subject(context: grpc.ServicerContext) -> str | None:
    """The common name of the client certificate's subject (mTLS), None without one."""
    names = context.auth_context().get("x509_common_name")
    if not names:
        return None
    name = names[0]
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name)


@dataclass(frozen=True)
class _Security:
    """What the interceptor does for one method: authenticate, authorize, audit."""

    guard: Guard | None  # None: the method is open (or auth is off)
    audited: bool  # an admin RPC, with an audit sink


@dataclass(frozen=True)
class _Route:
    handler: grpc.RpcMethodHandler
    refusal: grpc.RpcMethodHandler | None
    lane: Lane | None


class ServingInterceptor(grpc.ServerInterceptor):
    """Wraps every method handler once (see the module's docstring for what the wrapper does).

    ``lanes`` None runs every RPC on the server's own pool with no limit (small servers in
    tests); ``stream_idle_seconds`` 0 lets streams wait on their clients for ever.
    """

    def __init__(
        self,
        metrics: RpcMetrics | None,
        is_ready: Callable[[], bool],
        lanes: Lanes | None = None,
        stream_idle_seconds: float = 0.0,
        authenticator: Authenticator | None = None,
        audit: AuditSink | None = None,
        reflection_auth: bool = False,
    ) -> None:
        self._metrics = metrics
        self._authenticator = authenticator
        self._audit = audit
        self._reflection_auth = reflection_auth
        self._is_ready = is_ready
        self._lanes = lanes
        self.streams = OpenStreams(stream_idle_seconds)
        # The contexts of the RPCs in progress (Watch aside). set.add and set.discard of an object
        # hashed by identity are atomic under the GIL, so counting takes no lock: a lock shared by
        # every handler thread is where threads queue and hand the GIL over, which costs more
        # than the count. Only drain waits, and it polls.
        self._active: set[object] = set()
        # Handlers are fixed once the server starts: wrap each method once, not on every call.
        self._routes: dict[str, _Route] = {}

    @property
    def in_flight(self) -> int:
        """RPCs in progress now (Watch aside)."""
        return len(self._active)

    def wait_idle(self, timeout: float, poll: float = 0.005) -> bool:
        """Wait until no RPC is in progress (Watch aside); False on timeout."""
        deadline = time.monotonic() + timeout
        while self.in_flight > 0:
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)
        return True

    def begin_drain(self) -> None:
        """Shutdown begins: Watch streams end now, other streams as soon as they wait."""
        self.streams.begin_drain()

    def close(self) -> None:
        self.streams.close_all()

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        method: str = handler_call_details.method
        route = self._routes.get(method)
        if route is None:
            handler = continuation(handler_call_details)
            if handler is None:
                return None
            route = self._routes.setdefault(method, self._route(handler, method))
        if route.lane is not None and route.lane.full():
            return route.refusal
        return route.handler

    # -- building the handlers, once per method ---------------------------------------------

    def _route(self, handler: grpc.RpcMethodHandler, method: str) -> _Route:
        open_ = method.startswith(ALWAYS_OPEN_PREFIXES)
        non_blocking = bool(getattr(_behavior(handler), "experimental_non_blocking", False))
        lane = self._lane_of(handler, open_, non_blocking)
        wrapped = self._wrap(handler, method, not open_, non_blocking, self._security(method))
        refusal = None
        if lane is not None and lane.limit is not None:
            refusal = self._refusal(handler, method, lane)
        return _Route(_on(wrapped, lane), _on(refusal, self._control), lane)

    def _security(self, method: str) -> _Security:
        """Decided once per method: what it takes to call it, and whether it is audited."""
        auth = self._authenticator
        try:
            scope = scope_of(method)
        except KeyError:
            if auth is None:
                return _Security(None, False)

            refusal = errors.PermissionDenied(
                f"{method} has no scope in the scope table (llmopt.security.scopes): "
                "refused until it has one"
            )

            def unknown(_context: grpc.ServicerContext) -> None:
                raise refusal

            return _Security(unknown, False)
        audited = self._audit is not None and scope == "admin"
        if auth is None:
            return _Security(None, audited)
        if scope is None:
            if not (self._reflection_auth and method in REFLECTION_METHODS):
                return _Security(None, audited)

            def anyone(context: grpc.ServicerContext) -> None:
                _current_principal.set(auth.authenticate(_metadata(context), peer_subject(context)))

            return _Security(anyone, audited)

        def scoped(context: grpc.ServicerContext) -> None:
            principal = auth.authenticate(_metadata(context), peer_subject(context))
            _current_principal.set(principal)
            auth.authorize(principal, method)

        return _Security(scoped, audited)

    def _audit_call(
        self,
        method: str,
        context: grpc.ServicerContext,
        request: Any,
        stream: _Stream | None = None,
    ) -> None:
        """Record an admin RPC that is over (its status is set): by the principal of
        ``current_principal``; never fails the call."""
        assert self._audit is not None
        code = _code_of(context, stream)
        principal = _current_principal.get()
        try:
            if type(request) is _Malformed:
                request = None
            target = target_of(method, request)
            name = principal.name if principal is not None else ""
            self._audit.record(name, method, target, code.name, time.time())
        except Exception:
            log.exception("%s: the audit record could not be written", method)

    @property
    def _control(self) -> Lane | None:
        return self._lanes.control if self._lanes else None

    def _lane_of(
        self, handler: grpc.RpcMethodHandler, open_: bool, non_blocking: bool
    ) -> Lane | None:
        if self._lanes is None:
            return None
        streaming = not handler.unary_unary
        if open_:
            return self._lanes.reflection if streaming and not non_blocking else self._lanes.control
        return self._lanes.streams if streaming else self._lanes.unary

    def _wrap(
        self,
        handler: grpc.RpcMethodHandler,
        method: str,
        gated: bool,
        non_blocking: bool,
        security: _Security,
    ) -> grpc.RpcMethodHandler:
        serialized = getattr(handler.unary_unary, "answers_serialized", False)
        options = {
            "request_deserializer": _tolerant(handler.request_deserializer, method),
            "response_serializer": None if serialized else handler.response_serializer,
        }
        if handler.unary_unary:
            wrapped = self._unary(handler.unary_unary, method, gated, security)
            return grpc.unary_unary_rpc_method_handler(wrapped, **options)
        if handler.stream_unary:
            wrapped = self._client_stream(handler.stream_unary, method, gated, security)
            return grpc.stream_unary_rpc_method_handler(wrapped, **options)
        behavior = handler.unary_stream or handler.stream_stream
        if non_blocking:
            wrapped = self._endless(behavior, method, gated, security)
        else:
            wrapped = self._stream(behavior, method, gated, bool(handler.stream_stream), security)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(wrapped, **options)
        return grpc.stream_stream_rpc_method_handler(wrapped, **options)

    def _refusal(
        self, handler: grpc.RpcMethodHandler, method: str, lane: Lane
    ) -> grpc.RpcMethodHandler:
        """The handler answering when ``lane`` is full: at once, without reading the request."""

        def refuse(_request: Any, context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            try:
                if not self._is_ready():
                    raise errors.Unavailable("server is not serving (starting up or shutting down)")
                raise errors.ResourceExhausted(
                    f"too many {lane.what} in progress: the limit is {lane.limit} "
                    f"({lane.setting}); retry later"
                )
            except errors.LLMOptError as exc:
                context.abort(*status_of(exc, method))
            finally:
                self._record(method, context, start)

        kinds = {
            "unary_unary": grpc.unary_unary_rpc_method_handler,
            "stream_unary": grpc.stream_unary_rpc_method_handler,
            "unary_stream": grpc.unary_stream_rpc_method_handler,
            "stream_stream": grpc.stream_stream_rpc_method_handler,
        }
        # grpc runs any behaviour first and iterates only what it returns, so one that raises
        # refuses a call of every kind.
        kind = next(k for k in kinds if getattr(handler, k))
        return kinds[kind](
            refuse, _tolerant(handler.request_deserializer, method), handler.response_serializer
        )

    # -- the wrappers, one call each -----------------------------------------------------

    def _unary(
        self, behavior: Callable[..., Any], method: str, gated: bool, security: _Security
    ) -> Callable[..., Any]:
        guard, audited = security.guard, security.audited

        def call(request: Any, context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            self._active.add(context)
            try:
                if guard is not None:  # auth on: who is calling, before anything is looked up
                    guard(context)
                if gated and not self._is_ready():
                    raise errors.Unavailable("server is not serving (starting up or shutting down)")
                if type(request) is _Malformed:
                    raise errors.InvalidArgument(request.error)
                return behavior(request, context)
            except Exception as exc:
                _abort_for(exc, method, context)
            finally:
                if audited:
                    self._audit_call(method, context, request)
                if guard is not None:
                    _current_principal.set(None)
                self._active.discard(context)
                self._record(method, context, start)

        return call

    def _client_stream(
        self, behavior: Callable[..., Any], method: str, gated: bool, security: _Security
    ) -> Callable[..., Any]:
        guard, audited = security.guard, security.audited

        def call(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            stream = _Stream(context, method)
            self._active.add(context)
            self.streams.open(stream)
            try:
                if guard is not None:  # before the first message is read
                    guard(context)
                if gated and not self._is_ready():
                    raise errors.Unavailable("server is not serving (starting up or shutting down)")
                return behavior(_received(requests, stream), context)
            except Exception as exc:
                _abort_for(exc, method, context)
            finally:
                if audited:
                    self._audit_call(method, context, stream.first, stream)
                if guard is not None:
                    _current_principal.set(None)
                self.streams.close(stream)
                self._active.discard(context)
                self._record(method, context, start, stream)

        return call

    def _stream(
        self,
        behavior: Callable[..., Any],
        method: str,
        gated: bool,
        streaming_in: bool,
        security: _Security,
    ) -> Callable[..., Any]:
        guard, audited = security.guard, security.audited

        def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            start = time.perf_counter()
            stream = _Stream(context, method)
            self._active.add(context)
            self.streams.open(stream)
            try:
                if guard is not None:
                    # grpc iterates this generator on one thread, which serves only this call
                    guard(context)
                if gated and not self._is_ready():
                    raise errors.Unavailable("server is not serving (starting up or shutting down)")
                if streaming_in:
                    request = _received(request, stream)
                elif type(request) is _Malformed:
                    raise errors.InvalidArgument(request.error)
                for response in behavior(request, context):
                    # grpc sends it before it asks for the next: the wait on the client to read
                    stream.since = time.monotonic()
                    stream.waiting_for = CLIENT_READ
                    yield response
                    stream.waiting_for = None
            except Exception as exc:
                _abort_for(exc, method, context)
            finally:
                if audited:
                    first = stream.first if streaming_in else request
                    self._audit_call(method, context, first, stream)
                if guard is not None:
                    _current_principal.set(None)
                self.streams.close(stream)
                self._active.discard(context)
                self._record(method, context, start, stream)

        return call

    def _endless(
        self, behavior: Callable[..., Any], method: str, gated: bool, security: _Security
    ) -> Callable[..., Any]:
        """A non-blocking stream (health Watch): it answers through grpc's callback and holds no
        thread while open; it ends when the client leaves, or at shutdown."""

        def call(request: Any, context: grpc.ServicerContext, send: Callable[..., None]) -> None:
            start = time.perf_counter()
            stream = _Stream(context, method)

            def closed() -> None:
                self.streams.close_endless(stream)
                self._record(method, context, start, stream)

            try:
                if security.guard is not None:  # health Watch is open: no guard in practice
                    try:
                        security.guard(context)
                    finally:
                        _current_principal.set(None)  # nothing runs as the caller after this
                if gated and not self._is_ready():
                    raise errors.Unavailable("server is not serving (starting up or shutting down)")
                if type(request) is _Malformed:
                    raise errors.InvalidArgument(request.error)
                behavior(request, context, send)
            except Exception as exc:
                self._record(method, context, start)
                _abort_for(exc, method, context)
            if context.add_callback(closed):
                self.streams.open_endless(stream)
            else:  # over already (the client left): closed() will not run
                self._record(method, context, start, stream)

        call.experimental_non_blocking = True  # type: ignore[attr-defined]
        return call

    def _record(
        self,
        method: str,
        context: grpc.ServicerContext,
        start: float,
        stream: _Stream | None = None,
    ) -> None:
        if self._metrics is None:
            return
        self._metrics.observe(method, _code_of(context, stream).name, time.perf_counter() - start)


def _code_of(context: grpc.ServicerContext, stream: _Stream | None = None) -> grpc.StatusCode:
    """The status a call that is over ended with."""
    code = stream.ended_with if stream is not None else None
    code = code or context.code()  # type: ignore[attr-defined]
    if stream is not None and code is None and not context.is_active():
        code = grpc.StatusCode.CANCELLED
    return code or grpc.StatusCode.OK


def _on(handler: grpc.RpcMethodHandler | None, lane: Lane | None) -> Any:
    """``handler`` set to run on ``lane``'s pool (grpc honours a behaviour's
    ``experimental_thread_pool``); without lanes, on the server's own pool."""
    if handler is not None and lane is not None:
        _behavior(handler).experimental_thread_pool = lane.pool  # type: ignore[attr-defined]
    return handler


def _behavior(handler: grpc.RpcMethodHandler) -> Callable[..., Any]:
    """The one behaviour a method handler has, of whichever kind."""
    return (
        handler.unary_unary or handler.stream_unary or handler.unary_stream
    ) or handler.stream_stream  # type: ignore[return-value]


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


def _received(requests: Iterator[Any], stream: _Stream) -> Iterator[Any]:
    """The client's messages; the time spent waiting for each is noted on ``stream``."""
    while True:
        stream.since = time.monotonic()
        stream.waiting_for = NEXT_MESSAGE
        try:
            request = next(requests)
        except StopIteration:
            return
        finally:
            stream.waiting_for = None
        if stream.first is None:
            stream.first = request
        if type(request) is _Malformed:
            raise errors.InvalidArgument(request.error)
        yield request


def _abort_for(exc: Exception, method: str, context: grpc.ServicerContext) -> None:
    """Turn an exception escaping a servicer into a status; never lets it reach grpc's core."""
    if isinstance(exc, grpc.RpcError) and not context.is_active():
        # grpc's own, raised from its request iterator because the call is over: the client
        # cancelled, its deadline passed, or this server ended it. grpc sends nothing more for it.
        log.debug("%s ended before its handler finished (cancelled)", method)
        raise exc
    if _servicer_chose_status(exc, context):
        raise exc  # the servicer already chose a status (context.abort)
    context.abort(*status_of(exc, method))


def _servicer_chose_status(exc: Exception, context: grpc.ServicerContext) -> bool:
    """Whether ``exc`` is grpc's own after the servicer called ``context.abort``."""
    if isinstance(exc, errors.LLMOptError | NotImplementedError):
        return False
    current = context.code()  # type: ignore[attr-defined]
    return current is not None and current != grpc.StatusCode.OK
