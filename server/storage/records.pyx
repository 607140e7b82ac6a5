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

  The decision log's extension (what GetDecision returns beside the choice) is a second
  optional trailer after the digest, written only when there is something in it (a request
  context, an explanation, or the degraded flag): ``request_context | explanation |
  context_len u32 (0: none) | explanation_len i32 (-1: none) | flags u32 (bit 0: degraded; bit
  1: the explanation is bytes, else utf-8 text) | digest_len u32 | EXTENSION_MAGIC u32``. A
  reader finds it from the end: the payload's rest is at least the 20-byte tail, ends with the
  magic, and its lengths add up; otherwise the rest is all digest (the digests the service writes are 1 or 16 bytes, shorter than the tail, so an
  old record is never taken for an extended one). A record without the extension is byte for
  byte the format before it. A reader that predates the extension reads the digest and the
  extension together as the digest: it loses the extension, and a retry of a caller's own id
  made before a downgrade is refused as a reused id (only across a downgrade with an unflushed
  journal: a clean close leaves none).

  The request context is the caller's ``RequestContext`` written field by field
  (``encode_context``, read back by ``decode_context``): ``input_length i64 | priority i64 |
  output_length i32 | hour_of_day i32 (-1: unset) | day_of_week i32 (-1: unset) | n_metadata u32
  | n_features u32 | user_id | task_type | region | language | (key, value)[n_metadata] | (key,
  f64)[n_features]``, each string a ``u32`` length then utf-8.
* REWARD (kind 4) body (an event row): ``bandit_id i64 | event_kind i32 | slot i32 |
  reward f64 | propensity f64 | time f64 | id_len u32 | n_context u32 | detail_len i32 (-1:
  none) | decision_id (utf-8) | detail (utf-8) | context f64[]``

Decoded rows are the database's: a decision ``(seq, decision_id, bandit_id, slot, propensity,
scores, context, time, expires, request_digest, request_context, explanation, degraded)`` (the
digest, context and explanation None when absent, degraded 0 or 1) and an event ``(seq,
bandit_id, kind, slot, decision_id, reward, propensity, context, detail, time)``, arrays as
little-endian float64 bytes.
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

import struct

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
cdef Py_ssize_t _EXTENSION_TAIL = 4 + 4 + 4 + 4 + 4
cdef uint32_t _EXTENSION_MAGIC = 0x3158444C  # b"LDX1" little-endian
EXTENSION_MAGIC = _EXTENSION_MAGIC
cdef Py_ssize_t _CONTEXT_FIXED = 8 + 8 + 4 + 4 + 4 + 4 + 4

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
    object request_context=None,
    object explanation=None,
    bint degraded=False,
):
    """The framed journal record of a decision (see the module docstring); ``request_digest``
    None or empty: none. ``request_context`` (a ``RequestContext``, read by attribute) and
    ``explanation`` (``bytes``, or ``str`` kept as utf-8; read back as the same type) are kept
    in the extension, which is written only when one of them is given or ``degraded`` is
    true."""
    cdef Py_ssize_t digest_len = 0 if request_digest is None else PyBytes_GET_SIZE(request_digest)
    cdef bytes ctx_blob = None
    cdef Py_ssize_t ctx_len = 0, expl_len = 0, ext_len = 0
    cdef const char* expl_utf8 = NULL
    cdef int32_t expl_size = -1
    cdef uint32_t flags = 1 if degraded else 0
    cdef uint32_t u32
    if request_context is not None or explanation is not None or degraded:
        if request_context is not None:
            ctx_blob = _encode_context(request_context)
            ctx_len = PyBytes_GET_SIZE(ctx_blob)
        if isinstance(explanation, bytes):
            expl_utf8 = PyBytes_AS_STRING(explanation)
            expl_len = PyBytes_GET_SIZE(explanation)
            expl_size = <int32_t>expl_len
            flags |= 2
        elif explanation is not None:
            expl_utf8 = PyUnicode_AsUTF8AndSize(<str?>explanation, &expl_len)
            expl_size = <int32_t>expl_len
        ext_len = ctx_len + expl_len + _EXTENSION_TAIL
    cdef Py_ssize_t id_len
    cdef const char* id_utf8 = PyUnicode_AsUTF8AndSize(decision_id, &id_len)
    cdef cnp.ndarray s = _doubles(scores)
    cdef cnp.ndarray x = _doubles(context)
    cdef uint32_t n_scores = <uint32_t>cnp.PyArray_DIM(s, 0)
    cdef uint32_t n_context = <uint32_t>cnp.PyArray_DIM(x, 0)
    cdef uint32_t id_size = <uint32_t>id_len
    cdef char* p
    cdef bytes record = _framed(
        _PREFIX + _DECISION_FIXED + id_len + 8 * (<Py_ssize_t>n_scores + n_context) + digest_len
        + ext_len,
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
        p = _put(p, PyBytes_AS_STRING(request_digest), digest_len)
    if ext_len:
        if ctx_len:
            p = _put(p, PyBytes_AS_STRING(ctx_blob), ctx_len)
        if expl_len:
            p = _put(p, expl_utf8, expl_len)
        u32 = <uint32_t>ctx_len
        p = _put(p, &u32, 4)
        p = _put(p, &expl_size, 4)
        p = _put(p, &flags, 4)
        u32 = <uint32_t>digest_len
        p = _put(p, &u32, 4)
        _put(p, &_EXTENSION_MAGIC, 4)
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


cdef tuple _decision_rest(const char* p, Py_ssize_t rest):
    """(digest, request_context, explanation, degraded) of a decision record's rest after its
    context vector (see the module docstring)."""
    cdef uint32_t magic, ctx_len, flags, digest_len
    cdef int32_t expl_len
    cdef const char* tail
    if rest >= _EXTENSION_TAIL:
        tail = p + rest - _EXTENSION_TAIL
        memcpy(&ctx_len, tail, 4)
        memcpy(&expl_len, tail + 4, 4)
        memcpy(&flags, tail + 8, 4)
        memcpy(&digest_len, tail + 12, 4)
        memcpy(&magic, tail + 16, 4)
        if magic == _EXTENSION_MAGIC and expl_len >= -1 and (
            <Py_ssize_t>digest_len + ctx_len + (expl_len if expl_len > 0 else 0) + _EXTENSION_TAIL
            == rest
        ):
            digest = PyBytes_FromStringAndSize(p, digest_len) if digest_len else None
            p += digest_len
            ctx = PyBytes_FromStringAndSize(p, ctx_len) if ctx_len else None
            p += ctx_len
            if expl_len < 0:
                expl = None
            elif flags & 2:
                expl = PyBytes_FromStringAndSize(p, expl_len)
            else:
                expl = PyUnicode_DecodeUTF8(p, expl_len, NULL)
            return digest, ctx, expl, <int>(flags & 1)
    return (PyBytes_FromStringAndSize(p, rest) if rest > 0 else None), None, None, 0


# -- request contexts -----------------------------------------------------------------------------


_CONTEXT_FIELDS = (
    "user_id", "task_type", "input_length", "output_length", "priority", "region",
    "hour_of_day", "day_of_week", "language", "metadata", "features",
)  # fmt: skip


cdef inline Py_ssize_t _str_size(object text) except -1:
    cdef Py_ssize_t n
    PyUnicode_AsUTF8AndSize(text, &n)
    return 4 + n


cdef inline char* _put_str(char* p, object text) except NULL:
    cdef Py_ssize_t n
    cdef const char* utf8 = PyUnicode_AsUTF8AndSize(text, &n)
    cdef uint32_t size = <uint32_t>n
    p = _put(p, &size, 4)
    return _put(p, utf8, n)


cdef bytes _encode_context(object ctx):
    # On the request path of every SelectArm that sends a context: a dataclass's fields are read
    # from its __dict__ (a dict lookup each, where an attribute read first searches the type).
    cdef object fields = getattr(ctx, "__dict__", None)
    if type(fields) is not dict or "features" not in <dict>fields:
        fields = {name: getattr(ctx, name) for name in _CONTEXT_FIELDS}
    cdef dict f = <dict>fields
    cdef object user_id = f["user_id"], task_type = f["task_type"]
    cdef object region = f["region"], language = f["language"]
    cdef object metadata = f["metadata"], features = f["features"]
    cdef object hour = f["hour_of_day"], day = f["day_of_week"]
    cdef int64_t input_length = f["input_length"], priority = f["priority"]
    cdef int32_t output_length = f["output_length"]  # an IntEnum: an int
    cdef int32_t hour_v = -1 if hour is None else <int32_t>hour
    cdef int32_t day_v = -1 if day is None else <int32_t>day
    cdef uint32_t n_meta = <uint32_t>len(metadata) if metadata else 0
    cdef uint32_t n_feat = <uint32_t>len(features) if features else 0
    cdef Py_ssize_t size = (
        _CONTEXT_FIXED + _str_size(user_id) + _str_size(task_type) + _str_size(region)
        + _str_size(language)
    )
    cdef double value
    if n_meta:
        metadata = list(metadata.items())
        for k, v in metadata:
            size += _str_size(k) + _str_size(v)
    if n_feat:
        features = list(features.items())
        for k, _ in features:
            size += _str_size(k) + 8
    cdef bytes blob = PyBytes_FromStringAndSize(NULL, size)
    cdef char* p = PyBytes_AS_STRING(blob)
    p = _put(p, &input_length, 8)
    p = _put(p, &priority, 8)
    p = _put(p, &output_length, 4)
    p = _put(p, &hour_v, 4)
    p = _put(p, &day_v, 4)
    p = _put(p, &n_meta, 4)
    p = _put(p, &n_feat, 4)
    p = _put_str(p, user_id)
    p = _put_str(p, task_type)
    p = _put_str(p, region)
    p = _put_str(p, language)
    if n_meta:
        for k, v in metadata:
            p = _put_str(p, k)
            p = _put_str(p, v)
    if n_feat:
        for k, x in features:
            p = _put_str(p, k)
            value = x
            p = _put(p, &value, 8)
    return blob


def encode_context(ctx):
    """The bytes a decision record keeps of a request context (see the module docstring)."""
    return _encode_context(ctx)


_CONTEXT_HEAD = struct.Struct("<qqiiiII")
_U32 = struct.Struct("<I")
_F64 = struct.Struct("<d")


def decode_context(bytes blob):
    """The fields of an ``encode_context`` blob, as a dict of ``RequestContext``'s field names
    (``output_length`` its integer value); ValueError when the blob is malformed."""
    try:
        input_length, priority, output_length, hour, day, n_meta, n_feat = (
            _CONTEXT_HEAD.unpack_from(blob, 0)
        )
        pos = _CONTEXT_HEAD.size

        def text():
            nonlocal pos
            (n,) = _U32.unpack_from(blob, pos)
            if pos + 4 + n > len(blob):
                raise ValueError("a string runs past the end")
            out = blob[pos + 4 : pos + 4 + n].decode()
            pos += 4 + n
            return out

        user_id, task_type, region, language = text(), text(), text(), text()
        metadata = {}
        for _ in range(n_meta):
            k = text()
            metadata[k] = text()
        features = {}
        for _ in range(n_feat):
            k = text()
            (features[k],) = _F64.unpack_from(blob, pos)
            pos += 8
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"request context record: {exc}") from None
    if pos != len(blob):
        raise ValueError(f"request context record: {len(blob) - pos} bytes left over")
    return {
        "user_id": user_id,
        "task_type": task_type,
        "input_length": input_length,
        "output_length": output_length,
        "priority": priority,
        "region": region,
        "hour_of_day": None if hour < 0 else hour,
        "day_of_week": None if day < 0 else day,
        "language": language,
        "metadata": metadata,
        "features": features,
    }


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
        return kind, (
            seq, decision_id, bandit_id, slot, propensity, scores, context, time, expires,
            *_decision_rest(p, have - used),
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
