# cython: language_level=3
"""The default 10-dim request context vector (DESIGN.md), as a nogil kernel.

Python (``server.features.context``) owns validation and the mapping of strings to codes; this
module only does arithmetic, in double precision, in the order the reference definition gives so
that results are bit-for-bit those of the reference formula.
"""

from libc.math cimport cos, fmin, log, sin, M_PI

DEFAULT_CONTEXT_DIM = 10


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
