"""Cython kernels: arm selection and updates, feature vectorization.

Each ``.pyx`` here is compiled by setup.py; Python wrappers that validate input and carry the
documentation live in the domain packages (``llmopt.features``, ``llmopt.bandits``).
"""
