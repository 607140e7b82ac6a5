"""A sample of the rows each model version served recently: what global importance averages over.

The inference engine hands ``TrafficSample.served`` the inputs of every prediction that ran
(Predict, PredictStream and the Open Inference Protocol's ModelInfer alike) with the version
that answered. When they are one float matrix ``[rows, features]``, the rows are copied into
that version's ``RecentRows``: a preallocated ring buffer and a write index, holding the most
recent ``rows`` rows (a request of more rows than that contributes its last ones). Inputs of any
other form are not kept. On the predict path this costs a dict lookup, a lock and one numpy copy
without a cast (the ring keeps the input's own dtype, fixed by the version's signature); no
Python runs per row.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from llmopt import errors

# A version's ring holds at most this many bytes: fewer rows are kept of very wide inputs.
MAX_RING_BYTES = 8 << 20


class RecentRows:
    """The most recent ``capacity`` rows of width ``width`` added, oldest overwritten first,
    kept in ``dtype``."""

    __slots__ = ("_lock", "_next", "_rows", "capacity", "total", "width")

    def __init__(self, width: int, capacity: int, dtype: npt.DTypeLike = np.float64) -> None:
        self.width = width
        self.capacity = capacity
        self.total = 0  # rows ever added
        self._rows = np.zeros((capacity, width), dtype=dtype)
        self._next = 0  # where the next row goes
        self._lock = threading.Lock()

    def add(self, rows: np.ndarray) -> None:
        """Copy in ``rows`` ([n, width]): the latest ``capacity`` of them."""
        n = len(rows)
        with self._lock:
            start = self._next
            end = start + n
            self.total += n
            if end < self.capacity:  # the common case: one slice copy, no wrap
                self._rows[start:end] = rows
                self._next = end
                return
            cap = self.capacity
            if n >= cap:
                self._rows[:] = rows[n - cap :]
                self._next = 0
            else:
                head = cap - start
                self._rows[start:] = rows[:head]
                self._rows[: n - head] = rows[head:]
                self._next = n - head

    def counts(self) -> tuple[int, int]:
        """(rows ever added, rows held)."""
        total = self.total
        return total, min(total, self.capacity)

    def recent(self) -> tuple[int, np.ndarray]:
        """(rows ever added, the rows held as float64, oldest first)."""
        with self._lock:
            total, start = self.total, self._next
            if total < self.capacity:
                return total, self._rows[:total].astype(np.float64)
            held = np.concatenate((self._rows[start:], self._rows[:start]))
        return total, held.astype(np.float64, copy=False)


class TrafficSample:
    """The recent rows of every (model, version) that served one float matrix; safe from many
    threads. At most ``versions`` versions keep a sample: a new one beyond that drops the
    sample begun longest ago."""

    def __init__(self, rows: int = 1000, versions: int = 256) -> None:
        for name, value in (("rows", rows), ("versions", versions)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise errors.invalid(name, value, "a positive integer")
        self.rows = rows
        self.versions = versions
        self._rings: dict[tuple[str, int], RecentRows] = {}
        self._lock = threading.Lock()

    def served(self, model: str, version: int, inputs: Mapping[str, np.ndarray]) -> None:
        """Keep the rows of a prediction that ran (``ports.ServedRows``)."""
        if len(inputs) != 1:
            return
        (x,) = inputs.values()
        if x.ndim != 2 or x.dtype.kind != "f":
            return
        ring = self._rings.get((model, version))
        if ring is None or ring.width != x.shape[1]:
            ring = self._ring(model, version, x)
        ring.add(x)

    def counts(self, model: str, version: int) -> tuple[int, int]:
        """(rows the version served since its sample began, rows the sample holds)."""
        ring = self._rings.get((model, version))
        return (0, 0) if ring is None else ring.counts()

    def recent(self, model: str, version: int) -> tuple[int, np.ndarray] | None:
        """(rows the version served since its sample began, the rows held as float64, oldest
        first); None: it has no sample."""
        ring = self._rings.get((model, version))
        return None if ring is None else ring.recent()

    def _ring(self, model: str, version: int, x: np.ndarray) -> RecentRows:
        """The version's ring for rows like ``x``: a new one for a first or a changed width."""
        key, width = (model, version), x.shape[1]
        with self._lock:
            ring = self._rings.get(key)
            if ring is None or ring.width != width:
                fits = MAX_RING_BYTES // max(width * x.dtype.itemsize, 1)
                ring = RecentRows(width, max(1, min(self.rows, fits)), x.dtype)
                self._rings.pop(key, None)
                while len(self._rings) >= self.versions:
                    del self._rings[next(iter(self._rings))]
                self._rings[key] = ring
            return ring
