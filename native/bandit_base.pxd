"""Declarations shared by the bandit kernel modules (see bandit_base.pyx)."""

cimport numpy as cnp
from numpy.random cimport bitgen_t


cdef Py_ssize_t _uniform_index(bitgen_t* rng, Py_ssize_t m) noexcept nogil
cdef Py_ssize_t _argmax_ties(const double* s, const unsigned char* allowed, Py_ssize_t k,
                             bitgen_t* rng, Py_ssize_t* tied, double* propensity) noexcept nogil
cdef Py_ssize_t _first_argmax(const double* s, const unsigned char* allowed,
                              Py_ssize_t k) noexcept nogil
cdef double _normal_propensity(const double* mean, const double* sd,
                               const unsigned char* allowed, Py_ssize_t k, Py_ssize_t chosen,
                               Py_ssize_t rounds, bitgen_t* rng, double* work) noexcept nogil
cdef void _tie_probability(const double* s, const unsigned char* allowed, Py_ssize_t k,
                           double* probability) noexcept nogil


# Rows of the block an explanation is written into (``Kernel._explain``): one per-slot quantity
# each, in the order of ``bandit_base.EXPLAIN_ROWS``.
cdef enum:
    EX_EXPLOITATION = 0
    EX_EXPLORATION = 1
    EX_MEAN = 2
    EX_POSTERIOR_MEAN = 3
    EX_POSTERIOR_SD = 4
    EX_PROBABILITY = 5
    EX_PULLS = 6
    EX_ROWS = 7


cdef class Kernel:
    cdef object bit_generator
    cdef bitgen_t* rng
    cdef readonly Py_ssize_t k
    cdef readonly Py_ssize_t dim
    cdef dict arrays
    cdef tuple per_arm
    cdef Py_ssize_t[::1] tied
    cdef double[::1] work

    cdef void _bind(self)
    cdef Py_ssize_t _select(self, const double* x, const unsigned char* allowed, double* scores,
                            double* propensity) noexcept nogil
    cdef void _update(self, Py_ssize_t arm, double reward, const double* x,
                      double propensity) noexcept nogil
    cdef void _explain(self, const double* x, const unsigned char* allowed, const double* scores,
                       Py_ssize_t arm, double propensity, double* out,
                       double* theta_x) noexcept nogil
    cdef _install(self, dict arrays)
    cdef const unsigned char* _mask(self, cnp.ndarray allowed) except NULL
    cdef const double* _context(self, object x) except? NULL


cdef class ContextKernel(Kernel):
    pass
