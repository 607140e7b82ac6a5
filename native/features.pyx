# cython: language_level=3
"""Executes a compiled feature plan into a float32 row.

A plan is a list of ops, one per feature; each reads one input (a double: the raw number, or a
category code for one-hot and hash features, NaN when missing) and writes ``width`` consecutive
slots. ``llmopt.features.plan`` compiles a feature set into these arrays once; the per-request
work is ``Plan.gather`` (dict look-ups of the raw values, the only Python-object part) and
``run_plan`` (nogil arithmetic on C arrays, double precision, then a cast to float32).

Rules the kernel applies to every numeric op: a missing or non-finite input takes the op's
default; a result that is NaN becomes 0 and one beyond float32's range is clamped to ±FLT_MAX, so
rows are always finite. Categorical ops set the slot of their code; a missing input takes the
default code, and with no default (-1) no slot is set.
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.float cimport FLT_MAX
from libc.math cimport NAN, cos, floor, fmax, isfinite, isnan, log1p, sin, M_PI
from libc.stdint cimport int64_t

from llmopt.native.context cimport fill_default_context

import zlib

# Op kinds (kept in sync with llmopt.features.plan).
cdef enum:
    OP_IDENTITY = 0
    OP_LOG1P = 1
    OP_AFFINE = 2      # (x - p0) / p1: standardize (mean, std) and minmax (lo, hi - lo)
    OP_CLIP = 3        # min(max(x, p0), p1)
    OP_CYCLICAL = 4    # sin, cos of 2π·x/p0
    OP_ONEHOT = 5      # slot int(x) of width; used by one-hot (code) and hash (bucket)
    OP_CONTEXT = 6     # the default 10-dim context vector from six facts at input..input+5

# Input kinds for gather.
cdef enum:
    IN_NUMBER = 0
    IN_VOCAB = 1
    IN_HASH = 2

OPS = {"identity": OP_IDENTITY, "log1p": OP_LOG1P, "affine": OP_AFFINE, "clip": OP_CLIP,
       "cyclical": OP_CYCLICAL, "onehot": OP_ONEHOT, "context": OP_CONTEXT}
INPUTS = {"number": IN_NUMBER, "vocab": IN_VOCAB, "hash": IN_HASH}

cdef enum:
    MAX_CONTEXT = 10

cdef inline float to_f32(double y) noexcept nogil:
    if isnan(y):
        return 0.0
    if y > FLT_MAX:
        return FLT_MAX
    if y < -FLT_MAX:
        return -FLT_MAX
    return <float>y


cdef void run_plan(const int[::1] kind, const int[::1] inp, const int[::1] slot,
                   const int[::1] width, const double[::1] p0, const double[::1] p1,
                   const double[::1] dflt, const double* inputs, float* out) noexcept nogil:
    cdef Py_ssize_t k, j, n = kind.shape[0]
    cdef double x, angle
    cdef double ctx[MAX_CONTEXT]
    cdef int s, w, code
    for k in range(n):
        x = inputs[inp[k]]
        s = slot[k]
        if kind[k] == OP_ONEHOT:
            w = width[k]
            for j in range(w):
                out[s + j] = 0.0
            if isnan(x):
                x = dflt[k]
            if x >= 0.0 and x < w:
                code = <int>x
                out[s + code] = 1.0
            continue
        if kind[k] == OP_CONTEXT:
            fill_default_context(inputs[inp[k]], inputs[inp[k] + 1], inputs[inp[k] + 2],
                                 inputs[inp[k] + 3], inputs[inp[k] + 4], inputs[inp[k] + 5], ctx)
            for j in range(MAX_CONTEXT):
                out[s + j] = <float>ctx[j]
            continue
        if not isfinite(x):
            x = dflt[k]
        if kind[k] == OP_IDENTITY:
            out[s] = to_f32(x)
        elif kind[k] == OP_LOG1P:
            out[s] = to_f32(log1p(fmax(x, 0.0)))
        elif kind[k] == OP_AFFINE:
            out[s] = to_f32((x - p0[k]) / p1[k])
        elif kind[k] == OP_CLIP:
            if x < p0[k]:
                x = p0[k]
            if x > p1[k]:
                x = p1[k]
            out[s] = to_f32(x)
        elif kind[k] == OP_CYCLICAL:
            angle = 2.0 * M_PI * x / p0[k]
            out[s] = to_f32(sin(angle))
            out[s + 1] = to_f32(cos(angle))


cdef class Plan:
    """Op arrays of one compiled feature set, and what ``gather`` needs to fill its inputs.

    ``names[i]`` is the key of input i; ``from_context[i]`` picks the dict it is read from;
    ``in_kind[i]`` says how a raw value becomes a double; ``vocab[i]`` maps text to a code
    (IN_VOCAB, unknown text -> ``oov[i]``) and ``oov[i]`` is the bucket count for IN_HASH.
    """

    cdef readonly int n_inputs, width
    cdef int[::1] kind, inp, slot, op_width
    cdef double[::1] p0, p1, dflt
    cdef list names, vocab
    cdef int[::1] from_context, in_kind, oov

    def __init__(self, int width, int[::1] kind, int[::1] inp, int[::1] slot, int[::1] op_width,
                 double[::1] p0, double[::1] p1, double[::1] dflt, list names,
                 int[::1] from_context, int[::1] in_kind, list vocab, int[::1] oov):
        cdef Py_ssize_t k, n = kind.shape[0]
        if not (inp.shape[0] == n and slot.shape[0] == n and op_width.shape[0] == n
                and p0.shape[0] == n and p1.shape[0] == n and dflt.shape[0] == n):
            raise ValueError("op arrays must all have one entry per op")
        m = len(names)
        if not (from_context.shape[0] == m and in_kind.shape[0] == m and len(vocab) == m
                and oov.shape[0] == m):
            raise ValueError("input arrays must all have one entry per input")
        for k in range(n):
            if slot[k] < 0 or slot[k] + op_width[k] > width:
                raise ValueError(f"op {k} writes past the row (slot {slot[k]}, width {op_width[k]})")
            if inp[k] < 0 or inp[k] + (6 if kind[k] == OP_CONTEXT else 1) > m:
                raise ValueError(f"op {k} reads past the inputs (input {inp[k]})")
            if kind[k] == OP_CONTEXT and op_width[k] != MAX_CONTEXT:
                raise ValueError(f"op {k}: the context block is {MAX_CONTEXT} slots wide")
        self.width = width
        self.n_inputs = m
        self.kind, self.inp, self.slot, self.op_width = kind, inp, slot, op_width
        self.p0, self.p1, self.dflt = p0, p1, dflt
        self.names, self.vocab = names, vocab
        self.from_context, self.in_kind, self.oov = from_context, in_kind, oov

    def run(self, const double[::1] inputs, float[::1] out):
        """Execute on ready inputs (one double per input, NaN = missing)."""
        if inputs.shape[0] != self.n_inputs:
            raise ValueError(f"inputs must have length {self.n_inputs}, got {inputs.shape[0]}")
        if out.shape[0] != self.width:
            raise ValueError(f"out must have length {self.width}, got {out.shape[0]}")
        if self.n_inputs == 0 or self.width == 0:
            return
        # The GIL is kept: a row takes well under a microsecond, and letting go of the GIL costs a
        # thread hand-off whenever another request thread is waiting for it (always, under load).
        run_plan(self.kind, self.inp, self.slot, self.op_width, self.p0, self.p1, self.dflt,
                 &inputs[0], &out[0])

    def run_facts(self, tuple facts, float[::1] out):
        """Execute a plan whose inputs are given as a tuple of floats (the default context)."""
        cdef double buf[16]
        cdef Py_ssize_t i
        if len(facts) != self.n_inputs or self.n_inputs > 16:
            raise ValueError(f"facts must have length {self.n_inputs} (at most 16)")
        if out.shape[0] != self.width:
            raise ValueError(f"out must have length {self.width}, got {out.shape[0]}")
        for i in range(self.n_inputs):
            buf[i] = facts[i]
        run_plan(self.kind, self.inp, self.slot, self.op_width, self.p0, self.p1, self.dflt,
                 buf, &out[0])  # with the GIL, as in run()

    def gather_run(self, dict stored, dict context, int64_t cutoff, float[::1] out):
        """Read every input from ``stored`` (name -> (value, event_time_us, ...)) or ``context``
        (name -> raw value), then execute. Stored values with event_time_us < cutoff are expired
        and read as missing."""
        cdef Py_ssize_t i, m = self.n_inputs
        cdef double* buf
        cdef object v, entry
        cdef int k
        if out.shape[0] != self.width:
            raise ValueError(f"out must have length {self.width}, got {out.shape[0]}")
        if m == 0:
            return
        buf = <double*>PyMem_Malloc(m * sizeof(double))
        if buf == NULL:
            raise MemoryError()
        try:
            for i in range(m):
                name = self.names[i]
                if self.from_context[i]:
                    v = context.get(name)
                else:
                    entry = stored.get(name)
                    if entry is None or <int64_t>entry[1] < cutoff:
                        v = None
                    else:
                        v = entry[0]
                if v is None:
                    buf[i] = NAN
                    continue
                k = self.in_kind[i]
                if k == IN_NUMBER:
                    if isinstance(v, str):
                        try:
                            buf[i] = float(v)
                        except ValueError:
                            buf[i] = NAN
                    else:
                        buf[i] = <double>v
                elif k == IN_VOCAB:
                    if not isinstance(v, str):
                        v = str(v)
                    buf[i] = (<dict>self.vocab[i]).get(v, self.oov[i])
                else:
                    if not isinstance(v, str):
                        v = str(v)
                    buf[i] = zlib.crc32((<str>v).encode()) % self.oov[i]
            run_plan(self.kind, self.inp, self.slot, self.op_width, self.p0, self.p1,
                     self.dflt, buf, &out[0])  # with the GIL, as in run()
        finally:
            PyMem_Free(buf)


# Feature types, as llmopt.features.spec.FeatureType numbers them.
cdef enum:
    T_FLOAT = 1
    T_INT = 2
    T_BOOL = 3
    T_STRING = 4
    T_CATEGORY = 5


cdef Py_ssize_t _count_invalid(dict values, dict types) except -1:
    """How many of ``values`` (name -> raw value) do not fit ``types`` (name -> FeatureType
    number): unknown names, non-numbers or non-finite numbers for FLOAT/INT, non-integral INT,
    non-bool BOOL, non-text STRING/CATEGORY."""
    cdef Py_ssize_t bad = 0
    cdef int t
    cdef double x
    for name, v in values.items():
        found = types.get(name)
        if found is None:
            bad += 1
            continue
        t = found
        if t == T_FLOAT or t == T_INT:
            if type(v) is float:
                x = v
                if not isfinite(x) or (t == T_INT and floor(x) != x):
                    bad += 1
            elif type(v) is not int:
                bad += 1
        elif t == T_BOOL:
            if type(v) is not bool:
                bad += 1
        elif type(v) is not str:
            bad += 1
    return bad


def clean_rows(object rows, dict types, object now_us, object latest_us, Py_ssize_t max_entity):
    """The fast path of validating a write: rows of (entity_id, values, event_us or None) as
    (entity_id, values, event_us) tuples with a missing time set to ``now_us``, if every row is
    clean: a text entity id of 1..``max_entity`` characters, a non-empty dict of values in
    which ``_count_invalid`` finds nothing wrong, and 0 <= event_us <= ``latest_us``. None if
    any row is not: the caller then lists every problem on its slow path."""
    cdef list out = []
    cdef long long ev, latest = latest_us
    cdef Py_ssize_t n
    for entity_id, values, event_us in rows:
        if event_us is None:
            event_us = now_us
        elif type(event_us) is not int:
            return None
        try:
            ev = event_us
        except OverflowError:
            return None
        if type(entity_id) is not str or type(values) is not dict:
            return None
        n = len(<str>entity_id)
        if (n == 0 or n > max_entity or not values or ev < 0 or ev > latest
                or _count_invalid(<dict>values, types)):
            return None
        out.append((entity_id, values, event_us))
    return out


cdef extern from "Python.h":
    int PyObject_GC_IsTracked(object)
    void PyObject_GC_UnTrack(void *)


def merge_latest(dict into, dict values, object event_us, object seq):
    """Fold one row into an entity's latest values: per feature, keep the (value, event_us,
    seq) with the greatest (event_us, seq).

    Each kept entry is a new tuple; one holding a plain value (number, text, flag) is taken off
    the cycle collector's lists at once. It can never be part of a cycle, and the collector
    would untrack it itself at its first pass, but only after walking it: a 1,000-row write of
    10 features makes ten thousand of them, and walking them was most of the collector's share
    of a feature write (12-15 % of the server's CPU at Python's default threshold)."""
    _merge_latest(into, values, event_us, seq)


cdef int _merge_latest(dict into, dict values, object event_us, object seq) except -1:
    cdef long long ev = event_us, sq = seq
    cdef tuple cur, entry
    for name, value in values.items():
        found = into.get(name)
        if found is not None:
            cur = <tuple>found
            if <long long>cur[1] > ev or (<long long>cur[1] == ev and <long long>cur[2] > sq):
                continue
        entry = (value, event_us, seq)
        if not PyObject_GC_IsTracked(value):
            PyObject_GC_UnTrack(<void *>entry)
        into[name] = entry
    return 0


def remember_rows(dict pending, object rows, object first_seq):
    """Append journaled rows (entity_id, values, event_us), the first of them with sequence
    number ``first_seq``, to their entities' uncompacted history in ``pending``, as (event_us,
    seq, values) tuples; returns the sequence number after the last.

    As in ``merge_latest``, a tuple whose values hold no container is taken off the cycle
    collector's lists at once: these tuples live until the set's next compaction (tens of
    thousands of them), and the collector walked every one at each full collection, for
    nothing. Values dicts of plain numbers, texts and flags are untracked by CPython itself."""
    cdef long long seq = first_seq
    cdef tuple entry
    cdef object history
    for entity_id, values, event_us in rows:
        entry = (event_us, seq, values)
        if not PyObject_GC_IsTracked(values):
            PyObject_GC_UnTrack(<void *>entry)
        history = pending.get(entity_id)
        if history is None:
            pending[entity_id] = [entry]
        else:
            (<list>history).append(entry)
        seq += 1
    return seq


def merge_rows(dict entities, object rows, object first_seq, object new_entity):
    """``merge_latest`` for each row (entity_id, values, event_us), the first with sequence
    number ``first_seq``, into ``entities[entity_id].values``; an entity not there yet gets
    ``new_entity()``."""
    cdef long long seq = first_seq
    for entity_id, values, event_us in rows:
        state = entities.get(entity_id)
        if state is None:
            state = entities[entity_id] = new_entity()
        _merge_latest(state.values, values, event_us, seq)
        seq += 1
