cdef void fill_default_context(double input_length, double output_code, double priority,
                               double hour, double day, double task_code,
                               double* out) noexcept nogil
