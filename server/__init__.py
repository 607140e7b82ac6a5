"""llm-optimizer-ml: the ML decision and model-serving server of an LLM optimizer."""

__version__ = "0.1.0"
