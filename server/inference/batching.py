"""Dynamic batching: concurrent requests to one model version merged into one onnxruntime run.

``DynamicBatcher`` sits in front of a ``LoadedModel``'s ``run``. Requests that ask for the same
outputs, with inputs of the same dtypes and the same dimensions after the first, wait in one
group; a single worker thread concatenates a group's requests along axis 0, runs them once and
hands each caller its own rows back. onnxruntime releases the GIL while it runs, so callers keep
queueing while a batch computes, and the next batch is already formed when it ends.

When a batch runs:

- its rows reach ``max_batch_size`` (limits count rows, not requests), or a preferred size (the
  largest that the queued requests reach in arrival order), or the next request does not fit;
- or its first request has waited ``max_queue_delay_us``;
- a request already bigger than ``max_batch_size`` does not queue: it runs alone, at once, in
  the caller's thread.

A request whose deadline (``time.monotonic()`` seconds) has passed when its batch is formed is
dropped before compute with ``errors.DeadlineExceeded``; the worker wakes at the earliest queued
deadline, so such a caller hears promptly. An error of the merged run is raised to every request
of the batch. An output whose first dimension is not the batch's rows cannot be split: those
requests then run one by one, unbatched, in their callers' threads, and later requests of that
group skip the queue (the model is not batchable for those outputs).

Requests that cannot be concatenated run unbatched at once: a model whose signature fixes an
input's first dimension or has a scalar input, a request whose inputs disagree on their row
count, an empty request. After ``close()`` every ``submit`` runs unbatched on ``run`` (which
raises ``errors.Unavailable`` itself once its session has been unloaded); requests queued before
``close`` still run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from llmopt import errors
from llmopt.inference.signature import Signature, validate_inputs

log = logging.getLogger("llmopt.inference")

RunFn = Callable[[Mapping[str, np.ndarray], Sequence[str] | None], dict[str, np.ndarray]]

MAX_BATCH_SIZE = 65_536
MAX_QUEUE_DELAY_US = 10_000_000  # 10 s


@dataclass(frozen=True)
class BatchingConfig:
    """A model's dynamic batching: ``max_batch_size`` rows per run (0: off), how long the first
    request of a batch may wait for others, and batch sizes worth running at once.

    >>> BatchingConfig(64, 500, (16, 32)).validate().enabled
    True
    >>> BatchingConfig(0, 0).enabled
    False
    """

    max_batch_size: int = 0
    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.max_batch_size > 0

    def validate(self, field: str = "policy.batching") -> BatchingConfig:
        """This config, or InvalidArgument naming the field and the value at fault."""
        if not 0 <= self.max_batch_size <= MAX_BATCH_SIZE:
            raise errors.invalid(
                f"{field}.max_batch_size",
                self.max_batch_size,
                f"0 (off) to {MAX_BATCH_SIZE} rows",
            )
        if not 0 <= self.max_queue_delay_us <= MAX_QUEUE_DELAY_US:
            raise errors.invalid(
                f"{field}.max_queue_delay_us",
                self.max_queue_delay_us,
                f"0 to {MAX_QUEUE_DELAY_US} microseconds (10 s)",
            )
        sizes = self.preferred_batch_sizes
        for size in sizes:
            if not 1 <= size <= self.max_batch_size:
                raise errors.invalid(
                    f"{field}.preferred_batch_sizes",
                    list(sizes),
                    f"each size from 1 to max_batch_size ({self.max_batch_size})",
                )
        if list(sizes) != sorted(set(sizes)):
            raise errors.invalid(
                f"{field}.preferred_batch_sizes", list(sizes), "sorted, without repeats"
            )
        return self


class BatchResult(NamedTuple):
    """One request's answer and how it ran: the wait before its batch started, the batch's
    compute time, the batch's rows and requests (its own rows and 1 when run alone), and
    whether it was the batch's first request (exactly one per run: count executions by it)."""

    outputs: dict[str, np.ndarray]
    queue_ns: int
    compute_ns: int
    batch_rows: int
    batch_requests: int
    first_in_batch: bool = True


def batchable(signature: Signature) -> bool:
    """Whether requests to a model with this signature can be concatenated along axis 0: every
    input has a dynamic first dimension."""
    return bool(signature.inputs) and all(
        spec.shape and spec.shape[0] < 0 for spec in signature.inputs
    )


class _Pending:
    """A queued request, completed by the worker (outputs or error) or handed back to run."""

    __slots__ = (
        "batch_requests",
        "batch_rows",
        "compute_ns",
        "deadline",
        "done",
        "enqueued_ns",
        "error",
        "first",
        "inputs",
        "outputs",
        "queue_ns",
        "rows",
        "run_alone",
    )

    def __init__(self, inputs: Mapping[str, np.ndarray], rows: int, deadline: float | None):
        self.inputs = inputs
        self.rows = rows
        self.deadline = deadline
        self.enqueued_ns = time.perf_counter_ns()
        self.done = threading.Lock()  # held until the worker answers: the cheapest hand-off
        self.done.acquire()
        self.outputs: dict[str, np.ndarray] | None = None
        self.error: BaseException | None = None
        self.run_alone = False
        self.first = False
        self.queue_ns = 0
        self.compute_ns = 0
        self.batch_rows = 0
        self.batch_requests = 0


class _Group:
    """Requests that can share a run: same outputs, same dtypes and trailing dimensions."""

    __slots__ = ("key", "output_names", "pending", "rows")

    def __init__(self, key: Hashable, output_names: Sequence[str] | None) -> None:
        self.key = key
        self.output_names = output_names
        self.pending: list[_Pending] = []
        self.rows = 0


class DynamicBatcher:
    """Merges concurrent ``submit`` calls into batched ``run`` calls; one worker thread.

    ``run`` is the model's ``run(inputs, output_names)``; ``signature``, when given, validates
    each request before it queues (errors then name the request's own tensors) and says whether
    the model can be batched at all.
    """

    def __init__(
        self,
        run: RunFn,
        config: BatchingConfig,
        name: str,
        *,
        signature: Signature | None = None,
    ) -> None:
        self._run = run
        self.config = config.validate()
        self.name = name
        self._signature = signature
        self._batchable = config.enabled and (signature is None or batchable(signature))
        self._delay_ns = config.max_queue_delay_us * 1_000
        self._preferred = frozenset(config.preferred_batch_sizes)
        self._cond = threading.Condition(threading.Lock())
        self._groups: dict[Hashable, _Group] = {}
        self._unsplittable: set[Hashable] = set()
        self._closed = False
        self._worker: threading.Thread | None = None
        if self._batchable:
            self._worker = threading.Thread(target=self._work, name=f"batcher-{name}", daemon=True)
            self._worker.start()

    def __repr__(self) -> str:
        return f"DynamicBatcher({self.name!r}, {self.config}, closed={self._closed})"

    @property
    def closed(self) -> bool:
        return self._closed

    # -- callers --------------------------------------------------------------------------------

    def submit(
        self,
        inputs: Mapping[str, np.ndarray],
        output_names: Sequence[str] | None = None,
        deadline: float | None = None,
    ) -> BatchResult:
        """Run ``inputs`` in a batch with concurrent requests; this request's outputs."""
        if deadline is not None and deadline <= time.monotonic():
            raise errors.DeadlineExceeded(f"model {self.name!r}: the deadline passed before it ran")
        if self._signature is not None:
            validate_inputs(self._signature.inputs, inputs)
        rows = _rows(inputs)
        if rows is None or rows == 0 or rows > self.config.max_batch_size or not self._batchable:
            return self._alone(inputs, output_names, rows or 0)
        key = _group_key(inputs, output_names)
        pending = _Pending(inputs, rows, deadline)
        with self._cond:
            queued = not (self._closed or key in self._unsplittable)
            if queued:
                group = self._groups.get(key)
                if group is None:
                    group = self._groups[key] = _Group(key, output_names)
                group.pending.append(pending)
                group.rows += rows
                if len(group.pending) == 1 or self._full(group) or deadline is not None:
                    self._cond.notify()
        if not queued:
            return self._alone(inputs, output_names, rows)
        pending.done.acquire()
        if pending.run_alone:
            return self._alone(inputs, output_names, rows)
        if pending.error is not None:
            raise _copy(pending.error)
        assert pending.outputs is not None
        return BatchResult(
            pending.outputs,
            pending.queue_ns,
            pending.compute_ns,
            pending.batch_rows,
            pending.batch_requests,
            pending.first,
        )

    def close(self) -> None:
        """Run what is queued, then end the worker; later submits run unbatched."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join()

    def _alone(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str] | None, rows: int
    ) -> BatchResult:
        start = time.perf_counter_ns()
        outputs = self._run(inputs, output_names)
        return BatchResult(outputs, 0, time.perf_counter_ns() - start, rows, 1)

    # -- the worker -----------------------------------------------------------------------------

    def _full(self, group: _Group) -> bool:
        return group.rows >= self.config.max_batch_size or group.rows in self._preferred

    def _work(self) -> None:
        while True:
            with self._cond:
                taken = self._next_batch()
                while taken is None:
                    if self._closed and not self._groups:
                        return
                    self._cond.wait(self._wait_seconds())
                    taken = self._next_batch()
            group, batch, expired = taken
            for pending in expired:
                pending.error = errors.DeadlineExceeded(
                    f"model {self.name!r}: the deadline passed while the request waited "
                    f"for its batch"
                )
                pending.done.release()
            if batch:
                self._run_batch(group, batch)

    def _wait_seconds(self) -> float | None:
        """Until the oldest group's delay ends or the earliest queued deadline; lock held."""
        if not self._groups:
            return None
        now_ns = time.perf_counter_ns()
        wake_ns = min(g.pending[0].enqueued_ns for g in self._groups.values()) + self._delay_ns
        wait = max(0.0, (wake_ns - now_ns) / 1e9)
        now = time.monotonic()
        for group in self._groups.values():
            for pending in group.pending:
                if pending.deadline is not None:
                    wait = min(wait, max(0.0, pending.deadline - now))
        return wait

    def _next_batch(self) -> tuple[_Group, list[_Pending], list[_Pending]] | None:
        """The next batch to run (and the requests dropped for their deadline), taken off the
        queue, or None when no group is ready yet; lock held."""
        now_ns = time.perf_counter_ns()
        now = time.monotonic()
        for key, group in list(self._groups.items()):
            expired = [p for p in group.pending if p.deadline is not None and p.deadline <= now]
            if expired:
                group.pending = [p for p in group.pending if p not in expired]
                group.rows -= sum(p.rows for p in expired)
                if not group.pending:
                    del self._groups[key]
                    return group, [], expired
            count = self._ready_count(group, now_ns)
            if count or expired:
                batch = group.pending[:count]
                del group.pending[:count]
                group.rows -= sum(p.rows for p in batch)
                if not group.pending:
                    del self._groups[key]
                return group, batch, expired
        return None

    def _ready_count(self, group: _Group, now_ns: int) -> int:
        """How many of the group's first requests make a batch now (0: wait for more)."""
        limit = self.config.max_batch_size
        rows = 0
        count = 0
        preferred = 0
        for pending in group.pending:
            if rows + pending.rows > limit:
                return preferred or count  # the next request does not fit: run what does
            rows += pending.rows
            count += 1
            if rows == limit:
                return count
            if rows in self._preferred:
                preferred = count
        if preferred:
            return preferred
        if self._closed or now_ns - group.pending[0].enqueued_ns >= self._delay_ns:
            return count
        return 0

    def _run_batch(self, group: _Group, batch: list[_Pending]) -> None:
        batch[0].first = True
        start = time.perf_counter_ns()
        total = sum(p.rows for p in batch)
        try:
            if len(batch) == 1:
                feed = batch[0].inputs
            else:
                feed = {
                    name: np.concatenate([p.inputs[name] for p in batch])
                    for name in batch[0].inputs
                }
            outputs = self._run(feed, group.output_names)
        except BaseException as exc:  # every caller of the batch hears it
            compute = time.perf_counter_ns() - start
            for pending in batch:
                pending.error = exc
                self._finish(pending, start, compute, total, len(batch))
            return
        compute = time.perf_counter_ns() - start
        unsplittable = sorted(k for k, v in outputs.items() if not _splits(v, total))
        if len(batch) > 1 and unsplittable:
            log.warning(
                "model %r: outputs %s do not have one row per input row; running these "
                "requests unbatched",
                self.name,
                unsplittable,
            )
            with self._cond:
                self._unsplittable.add(group.key)
            for pending in batch:
                pending.run_alone = True
                pending.done.release()
            return
        offset = 0
        for pending in batch:
            if len(batch) == 1:
                pending.outputs = outputs
            else:
                end = offset + pending.rows
                pending.outputs = {k: v[offset:end] for k, v in outputs.items()}
                offset = end
            self._finish(pending, start, compute, total, len(batch))

    @staticmethod
    def _finish(pending: _Pending, start: int, compute: int, rows: int, requests: int) -> None:
        pending.queue_ns = start - pending.enqueued_ns
        pending.compute_ns = compute
        pending.batch_rows = rows
        pending.batch_requests = requests
        pending.done.release()


def _rows(inputs: Mapping[str, np.ndarray]) -> int | None:
    """The request's rows: the first dimension its inputs share, or None (no inputs, a scalar,
    inputs that disagree): then it cannot be concatenated with others."""
    rows: int | None = None
    for array in inputs.values():
        if array.ndim == 0:
            return None
        if rows is None:
            rows = int(array.shape[0])
        elif array.shape[0] != rows:
            return None
    return rows


def _splits(value: object, rows: int) -> bool:
    """Whether an output of a ``rows``-row batch has one row per input row."""
    return isinstance(value, np.ndarray) and value.ndim > 0 and value.shape[0] == rows


def _group_key(inputs: Mapping[str, np.ndarray], output_names: Sequence[str] | None) -> Hashable:
    outputs = frozenset(output_names) if output_names else None
    return outputs, frozenset(
        (name, array.dtype.str, array.shape[1:]) for name, array in inputs.items()
    )


def _copy(exc: BaseException) -> BaseException:
    """A fresh instance of ``exc`` for one caller (several threads raise the batch's error)."""
    try:
        fresh = type(exc)(*exc.args)
    except Exception:
        return exc
    fresh.__cause__ = exc.__cause__
    return fresh
