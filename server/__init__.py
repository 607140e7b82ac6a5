"""llm-optimizer-ml: the ML decision and model-serving server of an LLM optimizer.

One import package. Importing ``llmopt`` itself loads nothing else; the parts are its
sub-packages: ``llmopt.client`` (the Python client, usable without the server), the domain
packages (``llmopt.bandits``, ``llmopt.features``, ``llmopt.inference``, ``llmopt.registry``),
``llmopt.native`` (the Cython kernels), ``llmopt.api`` (the gRPC servicers) and the process
(``python -m llmopt``, ``llmopt.app``). ``docs/ARCHITECTURE.md`` is the map.
"""

__version__ = "0.1.0"
