"""Cython kernels, and only kernels: arm selection, updates and explanations (``bandit_*``),
default context vectors (``context``), feature vectorization (``features``) and exact
path-dependent TreeSHAP over tree ensembles (``treeshap``).

Each ``.pyx`` here is compiled by setup.py; Python wrappers that validate input and carry the
documentation live in the domain packages (``llmopt.features``, ``llmopt.bandits``,
``llmopt.inference.explain``). Native code
that encodes a layer's own data sits with that layer: the protobuf answers in
``llmopt.api.wire``, the journal's record framing in ``llmopt.storage.records``.
"""
