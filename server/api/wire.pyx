# cython: language_level=3
"""The answers of the hottest RPCs, SelectArm's ``llmopt.v1.Decision`` (with its
``llmopt.v1.Explanation`` when asked), RecordReward's ``llmopt.v1.RecordRewardResponse`` and
Predict's ``llmopt.v1.PredictResponse``, written as protobuf wire bytes in one call each.

Why by hand, when protobuf's own serializer is everywhere else: each answer was a message built
field by field from Python (a Timestamp, a copied Arm, one ArmScore per arm; a Tensor per
output) then serialized, a dozen calls into the protobuf runtime per request; measured end to
end, every microsecond of Python on the request path costs several of server CPU
(benchmarks/README.md). Here nested messages that never change come in already serialized (the
Arm, by protobuf, cached per arm), and the rest are scalar fields and lists: written in field
order with proto3's rules (empty strings and zero numbers left out, set sub-messages always
present, repeated integers packed), so the bytes equal ``SerializeToString()`` of the same
message built by protobuf; the tests hold them to that.

The field numbers are not written down here: at import the module reads them from the generated
descriptors and checks that every field is what its encoder writes (type, repeated or not,
implicit presence, numbers in the order written, a tag of one byte, no field of the message left
unwritten unless named so), raising ImportError naming the field otherwise. ``TAGS`` is the
table it built: ``(number << 3) | wire type`` by the field's full name.
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.math cimport floor, isnan, nearbyint
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy

from types import MappingProxyType

import numpy as np
from google.protobuf.descriptor import FieldDescriptor
from llmopt.gen.llmopt.v1 import bandits_pb2, inference_pb2

cimport numpy as cnp

cnp.import_array()

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t* size) except NULL

# -- tags, from the descriptors ------------------------------------------------------------------

_STRING = FieldDescriptor.TYPE_STRING
_BYTES = FieldDescriptor.TYPE_BYTES
_MESSAGE = FieldDescriptor.TYPE_MESSAGE
_DOUBLE = FieldDescriptor.TYPE_DOUBLE
_INT64 = FieldDescriptor.TYPE_INT64
_INT32 = FieldDescriptor.TYPE_INT32
_ENUM = FieldDescriptor.TYPE_ENUM

# What the encoders write a field of each type as: its name (for errors) and wire type (0 varint,
# 1 fixed64, 2 length-delimited; a packed repeated number is length-delimited too).
_WIRE = {
    _STRING: ("string", 2),
    _BYTES: ("bytes", 2),
    _MESSAGE: ("message", 2),
    _DOUBLE: ("double", 1),
    _INT64: ("int64", 0),
    _INT32: ("int32", 0),
    _ENUM: ("enum", 0),
}


def field_tag(message, str name, int field_type, bint repeated=False):
    """The tag of field ``name`` of ``message`` (a message descriptor), checked to be a field
    that an encoder here writes as ``field_type`` (repeated or not) in one tag byte; ImportError
    naming the field otherwise."""
    where = f"{message.full_name}.{name}"
    field = message.fields_by_name.get(name)
    if field is None:
        raise ImportError(f"llmopt.api.wire writes {where}, which the descriptors do not have")
    kind, wire_type = _WIRE[field_type]
    if field.type != field_type or field.is_repeated != repeated:
        raise ImportError(
            f"{where} is not the {'repeated ' if repeated else ''}{kind} field that"
            " llmopt.api.wire writes"
        )
    if field_type != _MESSAGE:
        if repeated and not field.is_packed:
            raise ImportError(f"{where} is not packed; llmopt.api.wire writes it packed")
        if not repeated and field.has_presence:
            raise ImportError(
                f"{where} has explicit presence; llmopt.api.wire leaves its zero value out"
            )
        if repeated:
            wire_type = 2
    tag = (field.number << 3) | wire_type
    if tag > 0x7F:
        raise ImportError(
            f"{where}: field number {field.number} needs a tag of more than one byte, and"
            " llmopt.api.wire writes one-byte tags"
        )
    return tag


def message_tags(message, list written, tuple left_out=()):
    """``{field name: tag}`` of the fields ``written`` of ``message`` (``(name, type[,
    repeated])``, in the order the encoder writes them, which must be protobuf's: by number);
    every other field of it must be named in ``left_out`` (the encoder never writes those).
    ImportError naming the field otherwise."""
    tags = {}
    last = 0
    for spec in written:
        tag = field_tag(message, *spec)
        if tag >> 3 <= last:
            raise ImportError(
                f"{message.full_name}.{spec[0]}: field number {tag >> 3} is not above the one"
                " written before it; llmopt.api.wire writes fields in number order"
            )
        last = tag >> 3
        tags[spec[0]] = tag
    for field in message.fields:
        if field.name not in tags and field.name not in left_out:
            raise ImportError(f"llmopt.api.wire does not write {field.full_name}")
    return tags


_decision = bandits_pb2.Decision.DESCRIPTOR
_decision_tags = message_tags(
    _decision,
    [
        ("decision_id", _STRING),
        ("bandit", _STRING),
        ("arm", _MESSAGE),  # comes serialized
        ("propensity", _DOUBLE),
        ("scores", _MESSAGE, True),
        ("time", _MESSAGE),
        ("explanation", _MESSAGE),  # comes serialized (explanation_message), when asked
    ],
)
_score = _decision.fields_by_name["scores"].message_type
_score_tags = message_tags(_score, [("arm_id", _STRING), ("score", _DOUBLE)])
_timestamp = _decision.fields_by_name["time"].message_type
_timestamp_tags = message_tags(_timestamp, [("seconds", _INT64), ("nanos", _INT32)])
_reward = bandits_pb2.RecordRewardResponse.DESCRIPTOR
_reward_tags = message_tags(
    _reward, [("decision_id", _STRING), ("arm_id", _STRING), ("reward", _DOUBLE)]
)
_response = inference_pb2.PredictResponse.DESCRIPTOR
_response_tags = message_tags(
    _response,
    [
        ("id", _STRING),
        ("model", _STRING),
        ("version", _INT64),
        ("variant", _ENUM),
        ("outputs", _MESSAGE, True),
        ("request_id", _STRING),
    ],
    left_out=("error",),  # predict_answer writes answers without one
)
_tensor_message = _response.fields_by_name["outputs"].message_type
_tensor_tags = message_tags(
    _tensor_message,
    [("name", _STRING), ("dtype", _ENUM), ("shape", _INT64, True), ("raw_data", _BYTES)],
)
_explanation = bandits_pb2.Explanation.DESCRIPTOR
_explanation_tags = message_tags(
    _explanation,
    [
        ("policy", _STRING),
        ("exploration_kind", _STRING),
        ("chosen_arm_id", _STRING),
        ("propensity", _DOUBLE),
        ("reason", _STRING),
        ("arms", _MESSAGE, True),
    ],
)
# The eight numbers of an arm, in the order of llmopt.bandits.explain.ExplanationColumns.numbers.
ARM_NUMBERS = (
    "score", "exploitation", "exploration", "mean", "posterior_mean", "posterior_sd",
    "probability", "pulls",
)  # fmt: skip
_arm_explanation = _explanation.fields_by_name["arms"].message_type
_arm_explanation_tags = message_tags(
    _arm_explanation,
    [
        ("arm_id", _STRING),
        ("status", _ENUM),
        *((name, _DOUBLE) for name in ARM_NUMBERS),
        ("contributions", _MESSAGE, True),
    ],
)
_contribution_message = _arm_explanation.fields_by_name["contributions"].message_type
_contribution_tags = message_tags(
    _contribution_message, [("name", _STRING), ("value", _DOUBLE), ("contribution", _DOUBLE)]
)

TAGS = MappingProxyType(
    {
        f"{message.full_name}.{name}": tag
        for message, tags in (
            (_decision, _decision_tags),
            (_score, _score_tags),
            (_timestamp, _timestamp_tags),
            (_reward, _reward_tags),
            (_response, _response_tags),
            (_tensor_message, _tensor_tags),
            (_explanation, _explanation_tags),
            (_arm_explanation, _arm_explanation_tags),
            (_contribution_message, _contribution_tags),
        )
        for name, tag in tags.items()
    }
)

# The tags the encoders write, as C ints.
cdef int DECISION_ID = _decision_tags["decision_id"]
cdef int BANDIT = _decision_tags["bandit"]
cdef int ARM = _decision_tags["arm"]
cdef int PROPENSITY = _decision_tags["propensity"]
cdef int SCORES = _decision_tags["scores"]
cdef int TIME = _decision_tags["time"]
cdef int SCORE_ARM_ID = _score_tags["arm_id"]
cdef int SCORE_VALUE = _score_tags["score"]
cdef int SECONDS = _timestamp_tags["seconds"]
cdef int NANOS = _timestamp_tags["nanos"]
cdef int REWARD_DECISION_ID = _reward_tags["decision_id"]
cdef int REWARD_ARM_ID = _reward_tags["arm_id"]
cdef int REWARD_VALUE = _reward_tags["reward"]
cdef int RESPONSE_ID = _response_tags["id"]
cdef int RESPONSE_MODEL = _response_tags["model"]
cdef int RESPONSE_VERSION = _response_tags["version"]
cdef int RESPONSE_VARIANT = _response_tags["variant"]
cdef int RESPONSE_OUTPUTS = _response_tags["outputs"]
cdef int RESPONSE_REQUEST_ID = _response_tags["request_id"]
cdef int TENSOR_NAME = _tensor_tags["name"]
cdef int TENSOR_DTYPE = _tensor_tags["dtype"]
cdef int TENSOR_SHAPE = _tensor_tags["shape"]  # packed
cdef int TENSOR_RAW = _tensor_tags["raw_data"]
cdef int EXPLANATION = _decision_tags["explanation"]
cdef int EXPL_POLICY = _explanation_tags["policy"]
cdef int EXPL_KIND = _explanation_tags["exploration_kind"]
cdef int EXPL_CHOSEN = _explanation_tags["chosen_arm_id"]
cdef int EXPL_PROPENSITY = _explanation_tags["propensity"]
cdef int EXPL_REASON = _explanation_tags["reason"]
cdef int EXPL_ARMS = _explanation_tags["arms"]
cdef int ARM_ID = _arm_explanation_tags["arm_id"]
cdef int ARM_STATUS = _arm_explanation_tags["status"]
cdef int ARM_CONTRIBUTIONS = _arm_explanation_tags["contributions"]
cdef int ARM_NUMBER_TAGS[8]
for _i, _name in enumerate(ARM_NUMBERS):
    ARM_NUMBER_TAGS[_i] = _arm_explanation_tags[_name]
cdef int CONTRIBUTION_NAME = _contribution_tags["name"]
cdef int CONTRIBUTION_VALUE = _contribution_tags["value"]
cdef int CONTRIBUTION_PART = _contribution_tags["contribution"]

cdef enum:
    ARMS_ON_STACK = 64  # more arms than this: their entries go on the heap


cdef struct ScoreEntry:
    const char* arm_id
    Py_ssize_t arm_id_len
    Py_ssize_t size  # of the ArmScore message
    double score


cdef inline Py_ssize_t _varint_size(uint64_t v) noexcept:
    cdef Py_ssize_t n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


cdef inline char* _varint(char* p, uint64_t v) noexcept:
    while v >= 0x80:
        p[0] = <char>((v & 0x7F) | 0x80)
        v >>= 7
        p += 1
    p[0] = <char>v
    return p + 1


cdef inline Py_ssize_t _bytes_field_size(Py_ssize_t n) noexcept:
    """A length-delimited field of ``n`` bytes, tag included (tags here are one byte)."""
    return 1 + _varint_size(<uint64_t>n) + n


cdef inline char* _bytes_field(char* p, int tag, const char* data, Py_ssize_t n) noexcept:
    p[0] = <char>tag
    p = _varint(p + 1, <uint64_t>n)
    memcpy(p, data, n)
    return p + n


cdef inline bint _nonzero(double v) noexcept:
    """proto3 leaves a double out when all its bits are zero (-0.0 is written)."""
    cdef uint64_t bits
    memcpy(&bits, &v, 8)
    return bits != 0


cdef inline char* _double_field(char* p, int tag, double v) noexcept:
    p[0] = <char>tag
    memcpy(p + 1, &v, 8)
    return p + 9


def decision_answer(
    str decision_id,
    str bandit,
    bytes arm,
    double propensity,
    tuple arm_ids,
    cnp.ndarray scores,
    double time,
    bytes explanation=None,
):
    """The serialized Decision: ``arm`` is the serialized Arm; ``scores`` (float64, one per arm
    id, possibly fewer) lists the arms whose score is not NaN; ``time`` in seconds since the
    epoch becomes a Timestamp as ``convert_bandits.to_timestamp`` makes it; ``explanation``
    (None: none) the serialized Explanation (``explanation_message``)."""
    if (
        cnp.PyArray_TYPE(scores) != cnp.NPY_DOUBLE
        or cnp.PyArray_NDIM(scores) != 1
        or not cnp.PyArray_ISNOTSWAPPED(scores)
    ):
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    cdef Py_ssize_t n = min(len(arm_ids), cnp.PyArray_SIZE(scores))
    cdef ScoreEntry on_stack[ARMS_ON_STACK]
    cdef ScoreEntry* entries = on_stack
    cdef ScoreEntry* e
    cdef Py_ssize_t did_len, bandit_len, i, k = 0
    cdef const char* did_utf8 = PyUnicode_AsUTF8AndSize(decision_id, &did_len)
    cdef const char* bandit_utf8 = PyUnicode_AsUTF8AndSize(bandit, &bandit_len)
    cdef Py_ssize_t arm_len = PyBytes_GET_SIZE(arm)
    cdef double v
    cdef int64_t total, seconds, nanos
    cdef Py_ssize_t ts_len = 0, size
    cdef bytes out
    cdef char* p
    if n > ARMS_ON_STACK:
        entries = <ScoreEntry*>PyMem_Malloc(n * sizeof(ScoreEntry))
        if entries == NULL:
            raise MemoryError()
    try:
        # Timestamp: seconds and nanos of round(time * 1e9), floored as Python's divmod.
        total = <int64_t>nearbyint(time * 1e9)
        seconds = <int64_t>floor(<double>total / 1e9)
        nanos = total - seconds * 1_000_000_000
        if nanos < 0:
            seconds -= 1
            nanos += 1_000_000_000
        elif nanos >= 1_000_000_000:
            seconds += 1
            nanos -= 1_000_000_000
        if seconds != 0:
            ts_len += 1 + _varint_size(<uint64_t>seconds)
        if nanos != 0:
            ts_len += 1 + _varint_size(<uint64_t>nanos)

        size = _bytes_field_size(arm_len) + _bytes_field_size(ts_len)
        if explanation is not None:
            size += _bytes_field_size(PyBytes_GET_SIZE(explanation))
        if did_len:
            size += _bytes_field_size(did_len)
        if bandit_len:
            size += _bytes_field_size(bandit_len)
        if _nonzero(propensity):
            size += 9
        for i in range(n):
            v = (<double*>cnp.PyArray_GETPTR1(scores, i))[0]
            if isnan(v):
                continue
            e = &entries[k]
            e.arm_id = PyUnicode_AsUTF8AndSize(arm_ids[i], &e.arm_id_len)
            e.score = v
            e.size = (_bytes_field_size(e.arm_id_len) if e.arm_id_len else 0) + (
                9 if _nonzero(v) else 0
            )
            size += _bytes_field_size(e.size)
            k += 1

        out = PyBytes_FromStringAndSize(NULL, size)
        p = PyBytes_AS_STRING(out)
        if did_len:
            p = _bytes_field(p, DECISION_ID, did_utf8, did_len)
        if bandit_len:
            p = _bytes_field(p, BANDIT, bandit_utf8, bandit_len)
        p = _bytes_field(p, ARM, PyBytes_AS_STRING(arm), arm_len)
        if _nonzero(propensity):
            p = _double_field(p, PROPENSITY, propensity)
        for i in range(k):
            e = &entries[i]
            p[0] = <char>SCORES
            p = _varint(p + 1, <uint64_t>e.size)
            if e.arm_id_len:
                p = _bytes_field(p, SCORE_ARM_ID, e.arm_id, e.arm_id_len)
            if _nonzero(e.score):
                p = _double_field(p, SCORE_VALUE, e.score)
        p[0] = <char>TIME
        p = _varint(p + 1, <uint64_t>ts_len)
        if seconds != 0:
            p[0] = <char>SECONDS
            p = _varint(p + 1, <uint64_t>seconds)
        if nanos != 0:
            p[0] = <char>NANOS
            p = _varint(p + 1, <uint64_t>nanos)
        if explanation is not None:
            _bytes_field(
                p, EXPLANATION, PyBytes_AS_STRING(explanation), PyBytes_GET_SIZE(explanation)
            )
        return out
    finally:
        if entries != on_stack:
            PyMem_Free(entries)


def reward_answer(str decision_id, str arm_id, double reward):
    """The serialized RecordRewardResponse."""
    cdef Py_ssize_t id_len, arm_len
    cdef const char* id_utf8 = PyUnicode_AsUTF8AndSize(decision_id, &id_len)
    cdef const char* arm_utf8 = PyUnicode_AsUTF8AndSize(arm_id, &arm_len)
    cdef Py_ssize_t size = (
        (_bytes_field_size(id_len) if id_len else 0)
        + (_bytes_field_size(arm_len) if arm_len else 0)
        + (9 if _nonzero(reward) else 0)
    )
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    cdef char* p = PyBytes_AS_STRING(out)
    if id_len:
        p = _bytes_field(p, REWARD_DECISION_ID, id_utf8, id_len)
    if arm_len:
        p = _bytes_field(p, REWARD_ARM_ID, arm_utf8, arm_len)
    if _nonzero(reward):
        _double_field(p, REWARD_VALUE, reward)
    return out


# -- llmopt.v1.PredictResponse and its Tensor outputs --------------------------------------------


cdef inline Py_ssize_t _string_size(str s) except -1:
    cdef Py_ssize_t n
    PyUnicode_AsUTF8AndSize(s, &n)
    return _bytes_field_size(n) if n else 0


cdef inline char* _string(char* p, int tag, str s) except NULL:
    cdef Py_ssize_t n
    cdef const char* utf8 = PyUnicode_AsUTF8AndSize(s, &n)
    return _bytes_field(p, tag, utf8, n) if n else p


cdef inline Py_ssize_t _int_size(int64_t v) noexcept:
    return 1 + _varint_size(<uint64_t>v) if v != 0 else 0


cdef inline char* _int(char* p, int tag, int64_t v) noexcept:
    if v == 0:
        return p
    p[0] = <char>tag
    return _varint(p + 1, <uint64_t>v)


cdef Py_ssize_t _shape_size(cnp.ndarray a) noexcept:
    cdef Py_ssize_t n = 0, i
    for i in range(cnp.PyArray_NDIM(a)):
        n += _varint_size(<uint64_t>cnp.PyArray_DIM(a, i))
    return n


cdef Py_ssize_t _tensor_size(str name, int64_t dtype, cnp.ndarray a) except -1:
    cdef Py_ssize_t shape = _shape_size(a)
    cdef Py_ssize_t raw = cnp.PyArray_NBYTES(a)
    return (
        _string_size(name)
        + _int_size(dtype)
        + (_bytes_field_size(shape) if shape else 0)
        + (_bytes_field_size(raw) if raw else 0)
    )


cdef char* _tensor(char* p, str name, int64_t dtype, cnp.ndarray a) except NULL:
    cdef Py_ssize_t i, shape = _shape_size(a)
    cdef Py_ssize_t raw = cnp.PyArray_NBYTES(a)
    p = _string(p, TENSOR_NAME, name)
    p = _int(p, TENSOR_DTYPE, dtype)
    if shape:
        p[0] = <char>TENSOR_SHAPE
        p = _varint(p + 1, <uint64_t>shape)
        for i in range(cnp.PyArray_NDIM(a)):
            p = _varint(p, <uint64_t>cnp.PyArray_DIM(a, i))
    if raw:
        p = _bytes_field(p, TENSOR_RAW, <const char*>cnp.PyArray_DATA(a), raw)
    return p


def predict_answer(
    str id, str model, int64_t version, int64_t variant, list outputs, str request_id
):
    """The serialized PredictResponse (no ``error``). ``outputs`` holds ``(name, dtype code,
    array)`` per output tensor; every array must be C-contiguous and little-endian (its bytes
    are the tensor's ``raw_data`` as they are), else ValueError."""
    cdef Py_ssize_t size = (
        _string_size(id) + _string_size(model) + _int_size(version) + _int_size(variant)
        + _string_size(request_id)
    )
    cdef Py_ssize_t tensor
    cdef cnp.ndarray a
    for name, dtype, array in outputs:
        a = <cnp.ndarray?>array
        if not cnp.PyArray_IS_C_CONTIGUOUS(a) or not cnp.PyArray_ISNOTSWAPPED(a):
            raise ValueError(f"output {name!r}: the array must be C-contiguous and little-endian")
        size += _bytes_field_size(_tensor_size(name, dtype, a))
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    cdef char* p = PyBytes_AS_STRING(out)
    p = _string(p, RESPONSE_ID, id)
    p = _string(p, RESPONSE_MODEL, model)
    p = _int(p, RESPONSE_VERSION, version)
    p = _int(p, RESPONSE_VARIANT, variant)
    for name, dtype, array in outputs:
        tensor = _tensor_size(name, dtype, array)
        p[0] = <char>RESPONSE_OUTPUTS
        p = _varint(p + 1, <uint64_t>tensor)
        p = _tensor(p, name, dtype, array)
    _string(p, RESPONSE_REQUEST_ID, request_id)
    return out


# -- llmopt.v1.Explanation -----------------------------------------------------------------------


cdef struct NameEntry:
    const char* utf8
    Py_ssize_t n
    Py_ssize_t field  # the name's field, tag included (0: an empty name, left out)


cdef inline cnp.ndarray _float64(object a):
    """``a`` as a C-contiguous native float64 array (itself when it already is one)."""
    cdef cnp.ndarray arr
    if isinstance(a, cnp.ndarray):
        arr = <cnp.ndarray>a
        if (
            cnp.PyArray_TYPE(arr) == cnp.NPY_DOUBLE
            and cnp.PyArray_IS_C_CONTIGUOUS(arr)
            and cnp.PyArray_ISNOTSWAPPED(arr)
        ):
            return arr
    return np.ascontiguousarray(a, dtype=np.float64)


cdef inline Py_ssize_t _contribution_size(
    Py_ssize_t name_field, double value, double part
) noexcept:
    return name_field + (9 if _nonzero(value) else 0) + (9 if _nonzero(part) else 0)


cdef inline char* _contribution(
    char* p, const char* name, Py_ssize_t name_len, Py_ssize_t size, double value, double part
) noexcept:
    p[0] = <char>ARM_CONTRIBUTIONS
    p = _varint(p + 1, <uint64_t>size)
    if name_len:
        p = _bytes_field(p, CONTRIBUTION_NAME, name, name_len)
    if _nonzero(value):
        p = _double_field(p, CONTRIBUTION_VALUE, value)
    if _nonzero(part):
        p = _double_field(p, CONTRIBUTION_PART, part)
    return p


def explanation_message(
    str policy,
    str exploration_kind,
    str chosen_arm_id,
    double propensity,
    str reason,
    tuple arm_ids not None,
    bytes status not None,
    object numbers,
    tuple slot_names=(),
    object x=None,
    object theta_x=None,
    object per_arm=None,
):
    """The serialized Explanation, from an explanation's columns
    (``llmopt.bandits.explain.ExplanationColumns``): ``status`` one ArmStatus value per arm id;
    ``numbers`` float64 (8, arms), the ``ARM_NUMBERS`` by arm; the contributions either shared
    (``slot_names``, ``x`` float64 (slots,), ``theta_x`` float64 (arms, slots): arm i's are
    ``(slot_names[j], x[j], theta_x[i, j])``), or per arm (``per_arm``: per arm a sequence of
    ``(name, value, contribution)``), or none. ValueError when the sizes disagree."""
    cdef Py_ssize_t k = len(arm_ids), d = 0, i, j, n, size, total, c_size, name_len
    cdef cnp.ndarray nums = _float64(numbers)
    cdef cnp.ndarray xs_arr = None, tx_arr = None
    cdef const double* num
    cdef const double* xs = NULL
    cdef const double* tx = NULL
    cdef const unsigned char* st = <const unsigned char*>PyBytes_AS_STRING(status)
    cdef const char* name
    cdef object label
    cdef double value, part
    cdef Py_ssize_t* arm_sizes = NULL
    cdef NameEntry* names = NULL
    cdef NameEntry* e
    cdef bytes out
    cdef char* p
    cdef bint shared = theta_x is not None
    if PyBytes_GET_SIZE(status) != k or cnp.PyArray_SIZE(nums) != 8 * k:
        raise ValueError(
            f"explanation: {len(status)} statuses and {cnp.PyArray_SIZE(nums)} numbers for {k}"
            " arms (one status and eight numbers each)"
        )
    num = <const double*>cnp.PyArray_DATA(nums)
    if shared:
        d = len(slot_names)
        xs_arr = _float64(x)
        tx_arr = _float64(theta_x)
        if cnp.PyArray_SIZE(xs_arr) != d or cnp.PyArray_SIZE(tx_arr) != k * d:
            raise ValueError(
                f"explanation: {cnp.PyArray_SIZE(xs_arr)} values and"
                f" {cnp.PyArray_SIZE(tx_arr)} contributions for {k} arms over {d} slots"
            )
        xs = <const double*>cnp.PyArray_DATA(xs_arr)
        tx = <const double*>cnp.PyArray_DATA(tx_arr)
    elif per_arm is not None:
        # Frozen first: both passes must see the same contributions.
        per_arm = tuple([tuple([tuple(c) for c in row]) for row in per_arm])
        if len(per_arm) != k:
            raise ValueError(f"explanation: {len(per_arm)} rows of contributions for {k} arms")
    arm_sizes = <Py_ssize_t*>PyMem_Malloc((k + 1) * sizeof(Py_ssize_t))
    names = <NameEntry*>PyMem_Malloc((d + 1) * sizeof(NameEntry))
    if arm_sizes == NULL or names == NULL:
        PyMem_Free(arm_sizes)
        PyMem_Free(names)
        raise MemoryError()
    try:
        for j in range(d):
            e = &names[j]
            e.utf8 = PyUnicode_AsUTF8AndSize(slot_names[j], &e.n)
            e.field = _bytes_field_size(e.n) if e.n else 0
        total = (
            _string_size(policy) + _string_size(exploration_kind) + _string_size(chosen_arm_id)
            + (9 if _nonzero(propensity) else 0) + _string_size(reason)
        )
        for i in range(k):
            size = _string_size(arm_ids[i]) + (1 + _varint_size(st[i]) if st[i] else 0)
            for j in range(8):
                if _nonzero(num[j * k + i]):
                    size += 9
            if shared:
                for j in range(d):
                    c_size = _contribution_size(names[j].field, xs[j], tx[i * d + j])
                    size += 1 + _varint_size(<uint64_t>c_size) + c_size
            elif per_arm is not None:
                for c in per_arm[i]:
                    label, value, part = c
                    PyUnicode_AsUTF8AndSize(label, &name_len)
                    c_size = _contribution_size(
                        _bytes_field_size(name_len) if name_len else 0, value, part
                    )
                    size += 1 + _varint_size(<uint64_t>c_size) + c_size
            arm_sizes[i] = size
            total += _bytes_field_size(size)

        out = PyBytes_FromStringAndSize(NULL, total)
        p = PyBytes_AS_STRING(out)
        p = _string(p, EXPL_POLICY, policy)
        p = _string(p, EXPL_KIND, exploration_kind)
        p = _string(p, EXPL_CHOSEN, chosen_arm_id)
        if _nonzero(propensity):
            p = _double_field(p, EXPL_PROPENSITY, propensity)
        p = _string(p, EXPL_REASON, reason)
        for i in range(k):
            p[0] = <char>EXPL_ARMS
            p = _varint(p + 1, <uint64_t>arm_sizes[i])
            p = _string(p, ARM_ID, arm_ids[i])
            if st[i]:
                p[0] = <char>ARM_STATUS
                p = _varint(p + 1, st[i])
            for j in range(8):
                value = num[j * k + i]
                if _nonzero(value):
                    p = _double_field(p, ARM_NUMBER_TAGS[j], value)
            if shared:
                for j in range(d):
                    e = &names[j]
                    value, part = xs[j], tx[i * d + j]
                    c_size = _contribution_size(e.field, value, part)
                    p = _contribution(p, e.utf8, e.n, c_size, value, part)
            elif per_arm is not None:
                for c in per_arm[i]:
                    label, value, part = c
                    name = PyUnicode_AsUTF8AndSize(label, &name_len)
                    c_size = _contribution_size(
                        _bytes_field_size(name_len) if name_len else 0, value, part
                    )
                    p = _contribution(p, name, name_len, c_size, value, part)
        return out
    finally:
        PyMem_Free(arm_sizes)
        PyMem_Free(names)
