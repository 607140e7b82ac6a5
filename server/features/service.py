"""FeatureService: the domain object behind ``llmopt.v1.Features`` and the API other parts call."""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from llmopt import errors
from llmopt.features.aggregates import BUCKET_US, HOUR_BUCKETS
from llmopt.features.context import DEFAULT_CONTEXT_SLOTS, RequestContext
from llmopt.features.fitting import fit
from llmopt.features.plan import CompiledPlan, default_context_plan
from llmopt.features.spec import (
    AGGREGATE_STATS,
    AGGREGATE_WINDOWS,
    CONTEXT_FIELDS,
    Feature,
    FeatureSet,
    FeatureType,
    check_value,
    coerce,
)
from llmopt.features.store import (
    COMPACT_ROWS,
    DEFAULT_MAX_ENTITIES,
    MAX_US,
    FeatureRow,
    FeatureStore,
    Latest,
    SetState,
)
from llmopt.native.features import clean_rows

log = logging.getLogger("llmopt.features")

CONTEXT_SET = "context"
ARM_OUTCOMES_SET = "arm_outcomes"
RESERVED_SETS = (CONTEXT_SET, ARM_OUTCOMES_SET)
MAX_ENTITY_ID = 256
MAX_ROWS_PER_WRITE = 100_000
MAX_ENTITIES_PER_READ = 10_000
MAX_PROBLEMS_LISTED = 50
FUTURE_SLACK_US = 3600 * 1_000_000  # event times more than an hour ahead are refused
FIT_ROWS = 100_000

ARM_OUTCOMES = FeatureSet(
    name=ARM_OUTCOMES_SET,
    entity_key="arm",
    description="Outcomes per arm, recorded by the bandits on every reward (built in).",
    features=(
        Feature("latency_ms", FeatureType.FLOAT),
        Feature("cost", FeatureType.FLOAT),
        Feature("quality", FeatureType.FLOAT),
        Feature("error", FeatureType.FLOAT),
    ),
    aggregates=("latency_ms", "cost", "quality", "error"),
)


@dataclass(frozen=True)
class FeatureVector:
    """A dense row and the names of its slots."""

    values: np.ndarray  # float32, shape (len(slot_names),)
    slot_names: tuple[str, ...]
    feature_set: str
    version: int


@dataclass(frozen=True)
class StoredValue:
    """One feature of one entity as read: missing when never written, newer than as_of, or
    expired (TTL)."""

    value: float | int | bool | str | None
    event_us: int | None
    staleness_us: int | None

    @property
    def missing(self) -> bool:
        return self.value is None


MISSING = StoredValue(None, None, None)


@dataclass(frozen=True)
class EntityFeatures:
    entity_id: str
    values: dict[str, StoredValue]


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_US = dt.timedelta(microseconds=1)


def to_us(t: dt.datetime) -> int:
    """Microseconds since the epoch, exactly (naive datetimes are UTC)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return (t - _EPOCH) // _ONE_US


def from_us(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


class FeatureService:
    """Feature sets, the online store, windowed aggregates and vectors.

    ``clock`` returns seconds since the epoch (tests pass a fake one).
    """

    def __init__(self, root: Path, *, synchronous: str = "normal",
                 clock: Callable[[], float] = time.time,
                 max_entities: int = DEFAULT_MAX_ENTITIES,
                 compact_rows: int = COMPACT_ROWS) -> None:  # fmt: skip
        self._clock = clock
        self._create_lock = threading.Lock()  # one set definition change at a time
        self._store = FeatureStore(
            Path(root), synchronous=synchronous, max_entities=max_entities,
            compact_rows=compact_rows,
        )  # fmt: skip
        self._context_plan = default_context_plan()
        if self._store.state(ARM_OUTCOMES_SET) is None:
            self._store.save_version(replace(ARM_OUTCOMES, version=1, create_time=clock()))
        self._rebuild_aggregates()

    def _now_us(self) -> int:
        return int(self._clock() * 1_000_000)

    # -- lifecycle --------------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Exercise the kernels once so the first request pays no first-call costs."""
        self.vector(CONTEXT_SET, RequestContext(hour_of_day=0, day_of_week=0))
        for name in self._store.names():
            state = self._state(name)
            plan = state.plans[state.latest.version]
            plan.vectorize({}, RequestContext())

    def close(self) -> None:
        self._store.close()

    def _rebuild_aggregates(self, only: str | None = None) -> None:
        since = self._now_us() - (HOUR_BUCKETS + 1) * BUCKET_US
        for name in [only] if only else self._store.names():
            state = self._state(name)
            if state.aggregates.streams:
                for row in self._store.rows_since(name, since):
                    state.aggregates.add(row.entity_id, row.values, row.event_us)  # type: ignore[arg-type]

    # -- sets -------------------------------------------------------------------------------------

    def _state(self, name: str) -> SetState:
        state = self._store.state(name)
        if state is None:
            raise errors.NotFound(f"feature_set: {name!r} does not exist")
        return state

    def create_set(self, fs: FeatureSet, *, fit_from_store: bool = False) -> FeatureSet:
        """Create a set, or a new version when the definition differs from the latest one
        (an identical definition returns the latest version unchanged)."""
        if fs.name in RESERVED_SETS or fs.name == "":
            if fs.name == "":
                raise errors.invalid("feature_set.name", fs.name, "must not be empty")
            raise errors.FailedPrecondition(f"feature_set.name: {fs.name!r} is built in")
        fs.validate(allow_unfitted=fit_from_store)
        with self._create_lock:
            return self._create_locked(fs, fit_from_store)

    def _create_locked(self, fs: FeatureSet, fit_from_store: bool) -> FeatureSet:
        state = self._store.state(fs.name)
        if fit_from_store:
            rows = self._store.all_values(fs.name, FIT_ROWS) if state else []
            fs = fit(fs, rows).validate()
        if state is not None and state.latest.same_definition(fs):
            return state.latest
        version = 1 if state is None else state.latest.version + 1
        created = replace(fs, version=version, create_time=self._clock())
        previous = () if state is None else state.latest.aggregates
        self._store.save_version(created)
        if state is not None and created.aggregates and created.aggregates != previous:
            self._rebuild_aggregates(created.name)  # new streams: fill them from the last hour
        return created

    def get_set(self, name: str, version: int = 0) -> FeatureSet:
        if name in ("", CONTEXT_SET):
            raise errors.NotFound(
                f"feature_set: {name!r} is the built-in request context vector, not a stored set"
            )
        fs = self._state(name).get(version)
        if fs is None:
            raise errors.NotFound(f"feature_set: {name!r} has no version {version}")
        return fs

    def list_sets(self, page_size: int = 100, after: str = "") -> tuple[list[FeatureSet], str]:
        """Latest versions by name; the second item is the page token of the next page."""
        names = [n for n in self._store.names() if n > after]
        page = names[:page_size]
        sets = [self._state(n).latest for n in page]
        return sets, (page[-1] if len(names) > page_size else "")

    # -- writes -----------------------------------------------------------------------------------

    def write(self, feature_set: str, rows: Sequence[tuple[str, dict, int | None]]) -> int:
        """Validate every row against the latest version, make them durable, return the count.

        Each row is (entity_id, values, event_us or None for now). Every problem is listed in one
        InvalidArgument and nothing is written.
        """
        if feature_set in ("", CONTEXT_SET):
            raise errors.invalid("feature_set", feature_set, "name a stored feature set")
        state = self._state(feature_set)
        fs = state.latest
        clean = self._validate_rows(fs, rows)
        return self._store.write(state, clean)

    def _validate_rows(self, fs: FeatureSet, rows: Sequence[tuple[str, dict, int | None]]
                       ) -> list[FeatureRow]:  # fmt: skip
        if not rows:
            raise errors.invalid("rows", [], "at least one row is required")
        if len(rows) > MAX_ROWS_PER_WRITE:
            raise errors.invalid("rows", f"{len(rows)} rows", f"at most {MAX_ROWS_PER_WRITE}")
        now = self._now_us()
        latest_ok = now + FUTURE_SLACK_US
        types = state_types(fs)
        # Every row checked in one native loop; only a write with a problem goes through the
        # checks that name each bad field.
        clean: list[FeatureRow] | None = clean_rows(rows, types, now, latest_ok, MAX_ENTITY_ID)
        if clean is None:
            problems = [
                problem
                for i, (entity_id, values, event_us) in enumerate(rows)
                for problem in _row_problems(
                    fs, i, entity_id, values, now if event_us is None else event_us, latest_ok
                )
            ]
            if problems:
                more = len(problems) - MAX_PROBLEMS_LISTED
                listed = problems[:MAX_PROBLEMS_LISTED]
                if more > 0:
                    listed.append(f"... and {more} more")
                raise errors.InvalidArgument(
                    f"{len(problems)} invalid field(s), nothing written: " + "; ".join(listed)
                )
            # Values of types the native loop does not take but the checks accept.
            clean = [(e, v, now if ev is None else ev) for e, v, ev in rows]  # type: ignore[misc]
        if any(f.type is FeatureType.INT for f in fs.stored_features):
            by_name = fs.by_name
            clean = [
                (e, {k: coerce(by_name[k], v) for k, v in values.items()}, ev)  # type: ignore[misc]
                for e, values, ev in clean
            ]
        return clean

    def record_arm_outcome(self, arm_key: str, latency_ms: float, cost: float,
                           quality: float | None, error: bool,
                           at: dt.datetime | None = None) -> None:  # fmt: skip
        """Feed the per-arm aggregates of the built-in ``arm_outcomes`` set (entity = arm key).

        The row is journaled like any write (a copy into a mapped file, no commit to wait for).
        """
        values: dict = {"error": 1.0 if error else 0.0}
        for name, x in (("latency_ms", latency_ms), ("cost", cost), ("quality", quality)):
            if x is not None and math.isfinite(x):
                values[name] = float(x)
        event_us = self._now_us() if at is None else to_us(at)
        rows = [(arm_key, values, event_us)]
        state = self._state(ARM_OUTCOMES_SET)
        self._store.write(state, self._validate_rows(state.latest, rows))

    # -- reads ------------------------------------------------------------------------------------

    def read(self, feature_set: str, entity_ids: Sequence[str], feature_names: Sequence[str] = (),
             as_of: dt.datetime | None = None) -> list[EntityFeatures]:  # fmt: skip
        """Per entity, the latest value of each feature with event time <= as_of (default now),
        its event time and staleness; expired (TTL) or absent values are MISSING. Aggregate
        names (``<stream>_<stat>_<window>``) read the windows that contain ``as_of``."""
        state = self._state(feature_set)
        fs = state.latest
        readable = fs.readable_names()
        names = list(feature_names) or list(readable)
        unknown = [n for n in names if n not in readable]
        if unknown:
            raise errors.invalid(
                "feature_names", unknown, f"not readable from {fs.name!r} v{fs.version}"
            )
        if not entity_ids:
            raise errors.invalid("entity_ids", [], "name at least one entity")
        if len(entity_ids) > MAX_ENTITIES_PER_READ:
            raise errors.invalid(
                "entity_ids", f"{len(entity_ids)} ids", f"at most {MAX_ENTITIES_PER_READ}"
            )
        now = self._now_us()
        at = now if as_of is None else to_us(as_of)
        cutoff = at - int(fs.ttl_seconds * 1_000_000) if fs.ttl_seconds else -MAX_US
        stored = [n for n in names if n in fs.by_name]
        aggregated = [n for n in names if n not in fs.by_name]
        out = []
        for entity in entity_ids:
            if as_of is None or at >= now:
                latest = self._store.latest(state, entity)
            else:
                latest = self._store.as_of(state, entity, at, set(stored))
            values: dict[str, StoredValue] = {}
            for n in stored:
                triple = latest.get(n)
                if triple is None or triple[1] > at or triple[1] < cutoff:
                    values[n] = MISSING
                else:
                    values[n] = StoredValue(triple[0], triple[1], at - triple[1])
            for n in aggregated:
                values[n] = self._aggregate(state, entity, n, at)
            out.append(EntityFeatures(entity, values))
        return out

    @staticmethod
    def _aggregate(state: SetState, entity: str, name: str, at: int) -> StoredValue:
        stream, stat, window = name.rsplit("_", 2)
        assert stat in AGGREGATE_STATS and window in AGGREGATE_WINDOWS
        stats = state.aggregates.read(entity, stream, window, at)
        if stats is None:
            return MISSING
        value = stats.stat(stat)
        if stat == "count":
            value = int(value)
        return StoredValue(value, stats.last_event_us, max(at - stats.last_event_us, 0))

    # -- vectors ----------------------------------------------------------------------------------

    def vector(self, feature_set: str, context: RequestContext | None,
               entity_ids: Sequence[str] | Mapping[str, str] = ()) -> FeatureVector:  # fmt: skip
        """A dense float32 row for a request: ``""``/``"context"`` is the built-in 10-dim vector;
        any other set joins the entity's stored values with the request's own fields."""
        if feature_set in ("", CONTEXT_SET):
            context = context or RequestContext()  # no context: defaults, the current time
            out = np.empty(len(DEFAULT_CONTEXT_SLOTS), dtype=np.float32)
            self._context_plan.run_facts(context.validate().facts(), out)
            return FeatureVector(out, DEFAULT_CONTEXT_SLOTS, CONTEXT_SET, 1)
        state = self._state(feature_set)
        fs = state.latest
        plan: CompiledPlan = state.plans[fs.version]
        stored: Latest = {}
        if plan.uses_store:
            entity = self._entity_for(fs, context, entity_ids)
            if entity:
                stored = self._store.latest(state, entity)
        if context is not None:
            context.validate()
        cutoff = self._now_us() - int(fs.ttl_seconds * 1_000_000) if fs.ttl_seconds else -MAX_US
        values = plan.vectorize(stored, context, cutoff)
        return FeatureVector(values, plan.slot_names, fs.name, fs.version)

    def vector_width(self, feature_set: str) -> int:
        """Number of slots of the latest version's vector (10 for the built-in context)."""
        return len(self.slot_names(feature_set))

    def slot_names(self, feature_set: str) -> tuple[str, ...]:
        """The names of the latest version's vector slots (the built-in context's for "")."""
        if feature_set in ("", CONTEXT_SET):
            return DEFAULT_CONTEXT_SLOTS
        state = self._state(feature_set)
        return state.plans[state.latest.version].slot_names

    @staticmethod
    def _entity_for(
        fs: FeatureSet,
        context: RequestContext | None,
        entity_ids: Sequence[str] | Mapping[str, str],
    ) -> str:
        """The entity whose stored values a vector reads: ``entity_ids`` as a sequence (one id)
        or a mapping (entity key -> id), else the request field named like the entity key."""
        if isinstance(entity_ids, Mapping):
            found = entity_ids.get(fs.entity_key)
            if found:
                return str(found)
        elif len(entity_ids) > 1:
            raise errors.invalid(
                "entity_ids", list(entity_ids), f"a set has one entity ({fs.entity_key}); name one"
            )
        elif entity_ids:
            return entity_ids[0]
        if context is None:
            return ""
        if fs.entity_key in CONTEXT_FIELDS:
            return str(getattr(context, fs.entity_key) or "")
        return context.metadata.get(fs.entity_key, "")


def state_types(fs: FeatureSet) -> dict[str, int]:
    """Stored feature name -> FeatureType number, for ``llmopt.native.features.clean_rows``."""
    return {f.name: int(f.type) for f in fs.stored_features}


def _row_problems(
    fs: FeatureSet, i: int, entity_id: str, values: dict, event_us: int, latest_ok: int
) -> list[str]:
    """Every problem of one row, each naming its field (the slow path of validation)."""
    problems = []
    if not entity_id or len(entity_id) > MAX_ENTITY_ID:
        problems.append(
            f"rows[{i}].entity_id: {entity_id[:40]!r} must be 1..{MAX_ENTITY_ID} characters"
        )
    if not values:
        problems.append(f"rows[{i}].values: empty (a row needs at least one value)")
    for name, value in values.items():
        f = fs.by_name.get(name)
        if f is None or f.source:
            problems.append(
                f"rows[{i}].values[{name!r}]: not a stored feature of {fs.name!r} v{fs.version}"
            )
            continue
        why = check_value(f, value)
        if why:
            problems.append(f"rows[{i}].values[{name!r}]: {why} ({f.type.name} expected)")
    if not 0 <= event_us <= latest_ok:
        problems.append(
            f"rows[{i}].event_time: {event_us} us is invalid: must be after 1970 and at "
            "most an hour ahead of the server clock"
        )
    return problems
