# cython: language_level=3
"""The journal's record framing, defined here once, and the bandit journal's decision and
reward records, built and read in one native call each.

Framing: every journal record (``llmopt.storage.journal`` writes them with ``frame`` and replays
them with ``read_frame``) is ``length u32 | crc32 u32 | payload``, little-endian, the crc
(zlib's) over the payload. The unwritten rest of a segment is zeros, so a zero header ends it.

Why the bandit records by hand: a journaled decision used to be a tuple of its fields, two
arrays turned into bytes, the tuple pickled, a kind and sequence header packed in front, a crc
computed and a length header packed in front of that: a dozen Python calls and as many objects
per SelectArm or RecordReward, on the request path. Measured end to end, every microsecond of
Python there costs several of server CPU (benchmarks/README.md), so the request path now makes
one call that writes the whole framed record (what ``Journal.append_framed`` copies in) into one
new ``bytes``; the rows the database takes are decoded from the record later, on the writer
thread, or at replay.

Bandit payload: ``kind u8 | seq u64 | body``, all little-endian, every field at a fixed place
then the variable parts:

* DECISION (kind 3) body: ``bandit_id i64 | slot i32 | id_len u32 | n_scores u32 |
  n_context u32 | propensity f64 | time f64 | expires f64 | decision_id (utf-8) | scores f64[] |
  context f64[] | request_digest``: the digest (the request's fingerprint, kept for a caller's
  own decision id) is the rest of the payload, empty when there is none. Records written before
  it existed end after the context and read back with no digest; a reader that predates it stops
  at the context and ignores it, so the format is compatible both ways.
* REWARD (kind 4) body (an event row): ``bandit_id i64 | event_kind i32 | slot i32 |
  reward f64 | propensity f64 | time f64 | id_len u32 | n_context u32 | detail_len i32 (-1:
  none) | decision_id (utf-8) | detail (utf-8) | context f64[]``

Decoded rows are the database's: a decision ``(seq, decision_id, bandit_id, slot, propensity,
scores, context, time, expires, request_digest)`` (the digest None when empty) and an event ``(seq, bandit_id, kind, slot, decision_id,
reward, propensity, context, detail, time)``, arrays as little-endian float64 bytes.
"""

import sys
import zlib

import numpy as np

cimport numpy as cnp
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

cnp.import_array()

if sys.byteorder != "little":  # the fields are copied as the machine holds them
    raise ImportError(
        "llmopt.storage.records writes little-endian records; this machine is big-endian"
    )

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t* size) except NULL
    object PyMemoryView_FromMemory(char* mem, Py_ssize_t size, int flags)
    int PyBUF_READ

cdef enum:
    KIND_DECISION = 3
    KIND_REWARD = 4

DECISION = KIND_DECISION
REWARD = KIND_REWARD

cdef Py_ssize_t _HEADER = 8  # length u32 | crc32 u32
HEADER = _HEADER
cdef Py_ssize_t _PREFIX = 9  # kind u8 | seq u64
cdef Py_ssize_t _DECISION_FIXED = 8 + 4 + 4 + 4 + 4 + 8 + 8 + 8
cdef Py_ssize_t _REWARD_FIXED = 8 + 4 + 4 + 8 + 8 + 8 + 4 + 4 + 4

cdef object _crc32 = zlib.crc32
cdef object _F8 = np.dtype(np.float64)


cdef inline cnp.ndarray _doubles(object array):
    """``array`` as a C-contiguous 1-d array of native (little-endian) float64: itself when it
    already is one, the usual case."""
    cdef cnp.ndarray a
    if (
        cnp.PyArray_Check(array)
        and cnp.PyArray_TYPE(<cnp.ndarray>array) == cnp.NPY_DOUBLE
        and cnp.PyArray_NDIM(<cnp.ndarray>array) == 1
        and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>array)
        and cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>array)
    ):
        return <cnp.ndarray>array
    a = np.ascontiguousarray(array, dtype=_F8).reshape(-1)
    return a


cdef inline char* _put(char* p, const void* value, size_t n) noexcept:
    memcpy(p, value, n)
    return p + n


cdef bytes _framed(Py_ssize_t payload_size, uint8_t kind, uint64_t seq, char** body):
    """A new record of ``payload_size`` bytes; the caller fills the body, then ``_seal``."""
    cdef bytes record = PyBytes_FromStringAndSize(NULL, _HEADER + payload_size)
    cdef char* p = PyBytes_AS_STRING(record) + _HEADER
    p = _put(p, &kind, 1)
    body[0] = _put(p, &seq, 8)
    return record


cdef bytes _seal(bytes record):
    """Write the length and crc32 header over the filled payload."""
    cdef char* p = PyBytes_AS_STRING(record)
    cdef uint32_t length = <uint32_t>(PyBytes_GET_SIZE(record) - _HEADER)
    cdef uint32_t crc = <uint32_t>_crc32(PyMemoryView_FromMemory(p + _HEADER, length, PyBUF_READ))
    memcpy(p, &length, 4)
    memcpy(p + 4, &crc, 4)
    return record


# -- framing --------------------------------------------------------------------------------------


def frame(bytes payload):
    """The record of ``payload`` as the journal stores it: its length and crc32, then it."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
    if n > 0xFFFFFFFF:
        raise ValueError(f"journal record: a payload of {n} bytes does not fit a u32 length")
    cdef bytes record = PyBytes_FromStringAndSize(NULL, _HEADER + n)
    memcpy(PyBytes_AS_STRING(record) + _HEADER, PyBytes_AS_STRING(payload), n)
    return _seal(record)


def read_frame(bytes data, Py_ssize_t pos):
    """``(payload, offset after it)`` of the record framed at offset ``pos`` of ``data`` (a
    segment's bytes), or None where the segment's records end (a zero header, or less than a
    header left); ValueError for a record cut short or whose crc does not match (torn: the
    process died while copying it)."""
    cdef Py_ssize_t end = PyBytes_GET_SIZE(data)
    if pos < 0 or end - pos < _HEADER:
        return None
    cdef const char* p = PyBytes_AS_STRING(data) + pos
    cdef uint32_t length, crc
    memcpy(&length, p, 4)
    memcpy(&crc, p + 4, 4)
    if length == 0 and crc == 0:
        return None  # the unwritten rest of the segment
    cdef Py_ssize_t start = pos + _HEADER
    if end - start < <Py_ssize_t>length:
        raise ValueError(f"a record of {length} bytes, cut short at {end - start}")
    cdef bytes payload = PyBytes_FromStringAndSize(p + _HEADER, length)
    if <uint32_t>_crc32(payload) != crc:
        raise ValueError("the record's crc32 does not match")
    return payload, start + length


# -- bandit records -------------------------------------------------------------------------------


def decision_record(
    uint64_t seq,
    str decision_id,
    int64_t bandit_id,
    int32_t slot,
    double propensity,
    object scores,
    object context,
    double time,
    double expires,
    bytes request_digest=None,
):
    """The framed journal record of a decision (see the module docstring); ``request_digest``
    None or empty: none."""
    cdef Py_ssize_t digest_len = 0 if request_digest is None else PyBytes_GET_SIZE(request_digest)
    cdef Py_ssize_t id_len
    cdef const char* id_utf8 = PyUnicode_AsUTF8AndSize(decision_id, &id_len)
    cdef cnp.ndarray s = _doubles(scores)
    cdef cnp.ndarray x = _doubles(context)
    cdef uint32_t n_scores = <uint32_t>cnp.PyArray_DIM(s, 0)
    cdef uint32_t n_context = <uint32_t>cnp.PyArray_DIM(x, 0)
    cdef uint32_t id_size = <uint32_t>id_len
    cdef char* p
    cdef bytes record = _framed(
        _PREFIX + _DECISION_FIXED + id_len + 8 * (<Py_ssize_t>n_scores + n_context) + digest_len,
        KIND_DECISION,
        seq,
        &p,
    )
    p = _put(p, &bandit_id, 8)
    p = _put(p, &slot, 4)
    p = _put(p, &id_size, 4)
    p = _put(p, &n_scores, 4)
    p = _put(p, &n_context, 4)
    p = _put(p, &propensity, 8)
    p = _put(p, &time, 8)
    p = _put(p, &expires, 8)
    p = _put(p, id_utf8, id_len)
    p = _put(p, cnp.PyArray_DATA(s), 8 * n_scores)
    p = _put(p, cnp.PyArray_DATA(x), 8 * n_context)
    if digest_len:
        _put(p, PyBytes_AS_STRING(request_digest), digest_len)
    return _seal(record)


def reward_record(
    uint64_t seq,
    int64_t bandit_id,
    int32_t event_kind,
    int32_t slot,
    str decision_id,
    double reward,
    double propensity,
    object context,
    object detail,
    double time,
):
    """The framed journal record of a reward event; ``detail`` is a str or None."""
    cdef Py_ssize_t id_len, detail_len = 0
    cdef const char* id_utf8 = PyUnicode_AsUTF8AndSize(decision_id, &id_len)
    cdef const char* detail_utf8 = NULL
    if detail is not None:
        detail_utf8 = PyUnicode_AsUTF8AndSize(detail, &detail_len)
    cdef int32_t detail_size = <int32_t>detail_len if detail is not None else -1
    cdef cnp.ndarray x = _doubles(context)
    cdef uint32_t n_context = <uint32_t>cnp.PyArray_DIM(x, 0)
    cdef uint32_t id_size = <uint32_t>id_len
    cdef char* p
    cdef bytes record = _framed(
        _PREFIX + _REWARD_FIXED + id_len + detail_len + 8 * <Py_ssize_t>n_context,
        KIND_REWARD,
        seq,
        &p,
    )
    p = _put(p, &bandit_id, 8)
    p = _put(p, &event_kind, 4)
    p = _put(p, &slot, 4)
    p = _put(p, &reward, 8)
    p = _put(p, &propensity, 8)
    p = _put(p, &time, 8)
    p = _put(p, &id_size, 4)
    p = _put(p, &n_context, 4)
    p = _put(p, &detail_size, 4)
    p = _put(p, id_utf8, id_len)
    if detail_len:
        p = _put(p, detail_utf8, detail_len)
    _put(p, cnp.PyArray_DATA(x), 8 * n_context)
    return _seal(record)


cdef inline void _need(Py_ssize_t have, Py_ssize_t want, int kind) except *:
    if want > have:
        raise ValueError(f"journal record of kind {kind} is cut short ({have} bytes, {want} needed)")


def decode(bytes data, Py_ssize_t start=0):
    """``(kind, row)`` of the record whose payload begins at ``start`` of ``data`` (0 for a
    replayed payload, ``HEADER`` for a framed record); ValueError for an unknown kind or a
    record shorter than its own counts say."""
    cdef Py_ssize_t have = PyBytes_GET_SIZE(data) - start
    if start < 0 or have < _PREFIX:
        raise ValueError(f"journal record: {have} bytes, too short for its kind and sequence")
    cdef const char* p = PyBytes_AS_STRING(data) + start
    cdef uint8_t kind = <uint8_t>p[0]
    cdef uint64_t seq
    memcpy(&seq, p + 1, 8)
    p += _PREFIX
    have -= _PREFIX
    cdef int64_t bandit_id
    cdef int32_t slot, event_kind, detail_len
    cdef uint32_t id_len, n_scores, n_context
    cdef double propensity, time, expires, reward
    cdef object decision_id, detail, digest
    cdef Py_ssize_t used
    if kind == KIND_DECISION:
        _need(have, _DECISION_FIXED, kind)
        memcpy(&bandit_id, p, 8)
        memcpy(&slot, p + 8, 4)
        memcpy(&id_len, p + 12, 4)
        memcpy(&n_scores, p + 16, 4)
        memcpy(&n_context, p + 20, 4)
        memcpy(&propensity, p + 24, 8)
        memcpy(&time, p + 32, 8)
        memcpy(&expires, p + 40, 8)
        used = _DECISION_FIXED + id_len + 8 * (<Py_ssize_t>n_scores + n_context)
        _need(have, used, kind)
        p += _DECISION_FIXED
        decision_id = PyUnicode_DecodeUTF8(p, id_len, NULL)
        p += id_len
        scores = PyBytes_FromStringAndSize(p, 8 * n_scores)
        p += 8 * n_scores
        context = PyBytes_FromStringAndSize(p, 8 * n_context)
        p += 8 * n_context
        digest = PyBytes_FromStringAndSize(p, have - used) if have > used else None
        return kind, (
            seq, decision_id, bandit_id, slot, propensity, scores, context, time, expires, digest
        )
    if kind == KIND_REWARD:
        _need(have, _REWARD_FIXED, kind)
        memcpy(&bandit_id, p, 8)
        memcpy(&event_kind, p + 8, 4)
        memcpy(&slot, p + 12, 4)
        memcpy(&reward, p + 16, 8)
        memcpy(&propensity, p + 24, 8)
        memcpy(&time, p + 32, 8)
        memcpy(&id_len, p + 40, 4)
        memcpy(&n_context, p + 44, 4)
        memcpy(&detail_len, p + 48, 4)
        _need(
            have,
            _REWARD_FIXED + id_len + (detail_len if detail_len > 0 else 0) + 8 * <Py_ssize_t>n_context,
            kind,
        )
        p += _REWARD_FIXED
        decision_id = PyUnicode_DecodeUTF8(p, id_len, NULL)
        p += id_len
        detail = None
        if detail_len >= 0:
            detail = PyUnicode_DecodeUTF8(p, detail_len, NULL)
            p += detail_len
        context = PyBytes_FromStringAndSize(p, 8 * n_context)
        return kind, (
            seq, bandit_id, event_kind, slot, decision_id, reward, propensity, context, detail, time
        )
    raise ValueError(f"journal record: unknown kind {kind}")
