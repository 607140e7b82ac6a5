# cython: language_level=3
"""The default 10-dim request context vector (DESIGN.md), as a nogil kernel.

Python (``llmopt.features.context``) owns validation, its messages and the tables that map
strings and enums to codes; this module does the arithmetic, in double precision, in the order
the reference definition gives so that results are bit-for-bit those of the reference formula.
``context_vector`` is the request path's one call: it reads a context's facts, checks their
ranges (a fact out of range is left to Python's ``validate`` to name) and looks codes up in the
tables it is given.
"""

cimport numpy as cnp
from libc.math cimport cos, fmin, log, sin, M_PI
from libc.time cimport gmtime_r, time as c_time, time_t, tm

cnp.import_array()

cdef enum:
    DIM = 10

DEFAULT_CONTEXT_DIM = DIM


cdef void fill_default_context(double input_length, double output_code, double priority,
                               double hour, double day, double task_code,
                               double* out) noexcept nogil:
    cdef double hour_angle = 2.0 * M_PI * hour / 24.0
    cdef double day_angle = 2.0 * M_PI * day / 7.0
    out[0] = fmin(log(input_length + 1.0) / 10.0, 1.0)
    out[1] = output_code
    out[2] = priority / 10.0
    out[3] = cos(hour_angle)
    out[4] = sin(hour_angle)
    out[5] = cos(day_angle)
    out[6] = sin(day_angle)
    out[7] = task_code
    out[8] = 1.0
    out[9] = 0.0


def default_context_vector(double input_length, double output_code, double priority,
                           double hour, double day, double task_code, double[::1] out):
    """Write one context vector into ``out`` (length 10)."""
    if out.shape[0] != DEFAULT_CONTEXT_DIM:
        raise ValueError(f"out must have length {DEFAULT_CONTEXT_DIM}, got {out.shape[0]}")
    fill_default_context(input_length, output_code, priority, hour, day, task_code, &out[0])


def default_context_matrix(const double[:, ::1] facts, double[:, ::1] out):
    """Vectorize many requests at once.

    ``facts`` has one row per request and six columns: input_length, output_code, priority,
    hour, day, task_code. ``out`` has the same number of rows and 10 columns.
    """
    cdef Py_ssize_t i, n = facts.shape[0]
    if facts.shape[1] != 6:
        raise ValueError(f"facts must have 6 columns, got {facts.shape[1]}")
    if out.shape[0] != n or out.shape[1] != DEFAULT_CONTEXT_DIM:
        raise ValueError(
            f"out must have shape ({n}, {DEFAULT_CONTEXT_DIM}), got ({out.shape[0]}, {out.shape[1]})")
    with nogil:
        for i in range(n):
            fill_default_context(facts[i, 0], facts[i, 1], facts[i, 2], facts[i, 3],
                                 facts[i, 4], facts[i, 5], &out[i, 0])


def context_vector(object ctx, dict task_codes, double other_task_code, tuple output_codes):
    """``llmopt.features.context.default_context`` of a RequestContext in one call (the
    request path's: no facts tuple, no array allocated from Python): a new float64 array, or None
    when a fact is out of range (the caller's ``validate`` then names it). An unset hour or day
    of week is read from the clock in UTC, as ``RequestContext.facts`` reads it."""
    cdef double input_length = ctx.input_length
    cdef double priority = ctx.priority
    cdef Py_ssize_t output = ctx.output_length
    cdef object hour_of_day = ctx.hour_of_day
    cdef object day_of_week = ctx.day_of_week
    cdef double hour, day
    cdef time_t now
    cdef tm utc
    if not (input_length >= 0 and 1 <= priority <= 10 and 0 <= output < len(output_codes)):
        return None
    if hour_of_day is None or day_of_week is None:
        now = c_time(NULL)
        gmtime_r(&now, &utc)
    hour = utc.tm_hour if hour_of_day is None else hour_of_day
    day = (utc.tm_wday + 6) % 7 if day_of_week is None else day_of_week  # Monday = 0
    if not (0 <= hour <= 23 and 0 <= day <= 6):
        return None
    task = task_codes.get(ctx.task_type)
    if task is None:
        task = task_codes.get(ctx.task_type.strip().lower(), other_task_code)
    cdef cnp.npy_intp dim = DIM
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, &dim, cnp.NPY_DOUBLE, 0)
    fill_default_context(
        input_length, output_codes[output], priority, hour, day, task, <double*>cnp.PyArray_DATA(out)
    )
    return out
