"""One loaded model version: its onnxruntime session, signature, and in-flight accounting.

A session is created once, with explicit options, and warmed up before it takes traffic. The
engine *retires* a version when it stops routing to it; the session is closed once the requests
already running on it have finished (``acquire`` / ``release`` count them).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from llmopt import errors
from llmopt.inference.signature import (
    Signature,
    signature_of_session,
    validate_inputs,
    warm_up_inputs,
)

log = logging.getLogger("llmopt.inference")

# Short names accepted by --onnx-providers -> onnxruntime execution provider.
PROVIDER_BY_NAME: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dnnl": "DnnlExecutionProvider",
}

# onnxruntime errors that mean "the request does not fit the model"; any other run error is ours,
# except a failure (e.g. a MatMul shape mismatch) on a model whose signature leaves dimensions
# other than the first open: the shape we could not check is then the likely cause.
_CALLER_ERRORS: tuple[type[Exception], ...] = (ort_state.InvalidArgument,)
_SHAPE_ERRORS: tuple[type[Exception], ...] = (ort_state.InvalidArgument, ort_state.Fail)


class RunTiming(NamedTuple):
    """Where one run's time went, in nanoseconds (``time.perf_counter_ns``)."""

    input_ns: int  # validating the inputs and choosing the outputs
    infer_ns: int  # the onnxruntime run
    output_ns: int  # naming the outputs


class ModelRunError(errors.LLMOptError):
    """onnxruntime failed on a request that passed validation: reported as INTERNAL."""


class ModelLoadError(errors.FailedPrecondition):
    """A model version could not be loaded or warmed up."""


@dataclass(frozen=True)
class SessionConfig:
    """How every session is built. Threads default to 1: lowest latency under many callers."""

    intra_op_threads: int = 1
    inter_op_threads: int = 1
    providers: tuple[str, ...] = ("cpu",)

    def __post_init__(self) -> None:
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise errors.invalid(
                "onnx threads", (self.intra_op_threads, self.inter_op_threads), ">= 0"
            )
        if not self.providers:
            raise errors.invalid("onnx_providers", "", "at least one execution provider")
        for name in self.providers:
            if name not in PROVIDER_BY_NAME:
                raise errors.invalid(
                    "onnx_providers", name, "one of " + ", ".join(sorted(PROVIDER_BY_NAME))
                )

    def ort_providers(self) -> list[str]:
        """The onnxruntime provider names, checked against this onnxruntime build."""
        available = ort.get_available_providers()
        wanted = [PROVIDER_BY_NAME[name] for name in self.providers]
        for name, provider in zip(self.providers, wanted, strict=True):
            if provider not in available:
                hint = " (install onnxruntime-gpu and a matching CUDA)" if name == "cuda" else ""
                raise errors.FailedPrecondition(
                    f"onnx_providers: {name!r} ({provider}) is not available in this "
                    f"onnxruntime build{hint}; available: {', '.join(available)}"
                )
        return wanted

    def session_options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 4  # run errors reach the caller; no stderr noise
        return options


def create_session(artifact: bytes, config: SessionConfig) -> ort.InferenceSession:
    """An onnxruntime session over the ONNX bytes, built with ``config``."""
    return ort.InferenceSession(
        artifact, config.session_options(), providers=config.ort_providers()
    )


class LoadedModel:
    """A warmed-up session for one model version, safe to call from many threads."""

    def __init__(
        self,
        model: str,
        version: int,
        artifact: bytes,
        config: SessionConfig,
        signature: Signature | None = None,
    ) -> None:
        self.model = model
        self.version = version
        try:
            session = create_session(artifact, config)
        except errors.LLMOptError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"model {model!r} version {version}: onnxruntime cannot load it: {exc}"
            ) from None
        own = signature_of_session(session)
        self.signature = own if signature is None else _checked(signature, own, model, version)
        self._session: ort.InferenceSession | None = session
        # The C++ binding's run, skipping the Python wrapper's re-validation of what ``run`` has
        # just validated (a few microseconds a call); the wrapper stays in use where its
        # execution-provider fallback matters.
        binding = getattr(session, "_sess", None)
        self._run_fn: Any = (
            binding.run if config.providers == ("cpu",) and binding is not None else session.run
        )
        self._open_dims = any(d < 0 for spec in self.signature.inputs for d in spec.shape[1:])
        self._all_outputs = list(self.signature.output_names())
        self._output_set = frozenset(self._all_outputs)
        self._lock = threading.Lock()
        self._in_flight = 0
        self._retired = False
        self.last_used = time.monotonic()
        # Never pinned: -inf (monotonic time starts at boot, so 0.0 would read "recently" on a
        # machine up for less than the idle timeout).
        self.pinned_at = -math.inf
        self.loaded_at = time.time()
        self.warm_up()

    def __repr__(self) -> str:
        return f"LoadedModel({self.model!r}, v{self.version}, closed={self.closed})"

    @property
    def closed(self) -> bool:
        return self._session is None

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def warm_up(self) -> None:
        """Run one request built from the signature so the first real one is not slow.

        A failure fails the load, except when the signature leaves dimensions other than the
        first open: then the guessed size (1) may be what the graph refuses, not the model.
        """
        try:
            self._run_session(warm_up_inputs(self.signature.inputs), self._all_outputs)
        except Exception as exc:
            if self._open_dims and isinstance(exc, _SHAPE_ERRORS):
                log.warning(
                    "model %r version %d: the guessed warm-up shape was refused, "
                    "loading without warm-up: %s",
                    self.model,
                    self.version,
                    exc,
                )
                return
            raise ModelLoadError(
                f"model {self.model!r} version {self.version}: warm-up run failed: {exc}"
            ) from None

    # -- lifetime -------------------------------------------------------------------------------

    def acquire(self) -> bool:
        """Count one request in; False once the session is closed (the caller re-routes)."""
        with self._lock:
            if self._session is None:
                return False
            self._in_flight += 1
        self.last_used = time.monotonic()
        return True

    def release(self) -> None:
        with self._lock:
            self._in_flight -= 1
            if self._retired and self._in_flight == 0:
                self._close()

    def retire(self) -> None:
        """No new traffic will be sent here; close as soon as in-flight requests finish."""
        with self._lock:
            self._retired = True
            if self._in_flight == 0:
                self._close()
        log.info("model %r version %d retired", self.model, self.version)

    def _close(self) -> None:
        """Drop the session (onnxruntime frees it with its last reference); lock held."""
        self._session = None
        self._run_fn = None

    # -- running --------------------------------------------------------------------------------

    def run(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Validate ``inputs`` against the signature and run; the caller holds ``acquire``."""
        names = self._prepare(inputs, output_names)
        return dict(zip(names, self._checked_run(inputs, names), strict=True))

    def run_timed(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
    ) -> tuple[dict[str, np.ndarray], RunTiming]:
        """``run``, and how long its input checks, onnxruntime run and outputs took."""
        clock = time.perf_counter_ns
        t0 = clock()
        names = self._prepare(inputs, output_names)
        t1 = clock()
        values = self._checked_run(inputs, names)
        t2 = clock()
        outputs = dict(zip(names, values, strict=True))
        return outputs, RunTiming(t1 - t0, t2 - t1, clock() - t2)

    def _prepare(
        self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str] | None
    ) -> list[str]:
        """Validate the inputs; the output names to run."""
        validate_inputs(self.signature.inputs, inputs)
        if not output_names:
            return self._all_outputs
        for name in output_names:
            if name not in self._output_set:
                raise errors.invalid(
                    "output_names",
                    name,
                    "unknown output; the model has " + ", ".join(map(repr, self._all_outputs)),
                )
        return list(output_names)

    def _checked_run(self, inputs: Mapping[str, np.ndarray], names: list[str]) -> list[Any]:
        try:
            return self._run_session(inputs, names)
        except _SHAPE_ERRORS as exc:
            if not (self._open_dims or isinstance(exc, _CALLER_ERRORS)):
                raise ModelRunError(
                    f"model {self.model!r} version {self.version} failed to run: {exc}"
                ) from None
            raise errors.InvalidArgument(
                f"inputs: model {self.model!r} version {self.version} refused them: {exc}"
            ) from None
        except errors.LLMOptError:
            raise
        except Exception as exc:
            raise ModelRunError(
                f"model {self.model!r} version {self.version} failed to run: {exc}"
            ) from None

    def _run_session(self, inputs: Mapping[str, np.ndarray], names: list[str]) -> list[Any]:
        run = self._run_fn
        if run is None:
            raise errors.Unavailable(
                f"model {self.model!r} version {self.version} was unloaded; retry"
            )
        return run(names, inputs, None)  # type: ignore[no-any-return]


def _checked(declared: Signature, own: Signature, model: str, version: int) -> Signature:
    """The registry's signature, refused if it names inputs the session does not have."""
    own_inputs = {s.name: s for s in own.inputs}
    for spec in declared.inputs:
        actual = own_inputs.get(spec.name)
        if actual is None or actual.dtype != spec.dtype or len(actual.shape) != len(spec.shape):
            raise ModelLoadError(
                f"model {model!r} version {version}: declared input {spec.name!r} does not match "
                f"the ONNX graph ({actual})"
            )
    if {s.name for s in declared.inputs} != set(own_inputs):
        raise ModelLoadError(
            f"model {model!r} version {version}: declared inputs "
            f"{sorted(s.name for s in declared.inputs)} differ from the graph's "
            f"{sorted(own_inputs)}"
        )
    own_outputs = {s.name for s in own.outputs}
    outputs = tuple(s for s in declared.outputs if s.name in own_outputs) or own.outputs
    return Signature(declared.inputs, outputs)
