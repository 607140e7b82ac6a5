"""Conversion between the inference protos (llmopt.v1.Inference and the Open Inference Protocol)
and the domain types of ``llmopt.inference``: ``to_x`` / ``from_x`` pairs over lookup tables.

Every reader validates what it reads and raises InvalidArgument naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from llmopt import errors
from llmopt.api.convert import from_request_context, from_tensor, tensor_shape, to_tensor
from llmopt.api.wire import predict_answer as native_predict_answer
from llmopt.features.context import RequestContext
from llmopt.gen.inference import grpc_service_pb2 as oip_pb2
from llmopt.gen.inference import model_config_pb2
from llmopt.gen.llmopt.v1 import common_pb2, inference_pb2
from llmopt.inference import (
    IndexEntry,
    ModelDescription,
    ModelStats,
    Prediction,
    TrafficMode,
    TrafficPolicy,
    Variant,
    VersionStatistics,
)
from llmopt.inference.batching import BatchingConfig
from llmopt.inference.explain import Explanation, FeatureImportance, Method
from llmopt.inference.signature import IOSpec
from llmopt.inference.stats import Duration
from llmopt.tensors import DTYPE_BY_NUMPY, INT64_MAX, NUMPY_BY_DTYPE

# -- llmopt.v1.Inference ---------------------------------------------------------------------------

MODE_BY_PROTO: dict[int, TrafficMode] = {
    inference_pb2.TRAFFIC_MODE_UNSPECIFIED: TrafficMode.OFF,
    inference_pb2.OFF: TrafficMode.OFF,
    inference_pb2.SPLIT: TrafficMode.SPLIT,
    inference_pb2.SHADOW: TrafficMode.SHADOW,
}
PROTO_BY_MODE: dict[TrafficMode, int] = {
    TrafficMode.OFF: inference_pb2.OFF,
    TrafficMode.SPLIT: inference_pb2.SPLIT,
    TrafficMode.SHADOW: inference_pb2.SHADOW,
}
PROTO_BY_VARIANT: dict[Variant, int] = {
    Variant.CHAMPION: inference_pb2.CHAMPION,
    Variant.CHALLENGER: inference_pb2.CHALLENGER,
    Variant.PINNED: inference_pb2.PINNED,
    Variant.SHADOW: inference_pb2.SHADOW_COPY,
}


class PredictCall(NamedTuple):
    """A validated Predict request, ready for ``InferenceEngine.predict``."""

    model: str
    inputs: dict[str, np.ndarray]
    version: int
    alias: str
    output_names: tuple[str, ...]
    routing_key: str


_FAST_DIMS = 8  # beyond this, or with an empty dimension, the full check of ``tensor_shape``


def input_array(msg: common_pb2.Tensor, field: str) -> np.ndarray:
    """``convert.from_tensor`` with a fast path for the well-formed tensor (the hot path); any
    doubt goes through ``from_tensor``, which raises the precise error."""
    dtype = NUMPY_BY_DTYPE.get(msg.dtype)
    shape = tuple(msg.shape)
    if (
        dtype is None
        or (shape and (min(shape) <= 0 or len(shape) > _FAST_DIMS))  # 0 or -1 next to 2**62
        or math.prod(shape) * dtype.itemsize != len(msg.raw_data)
    ):
        return from_tensor(msg, field)
    return np.frombuffer(msg.raw_data, dtype=dtype).reshape(shape)


def put_tensor(tensors: Any, array: np.ndarray, name: str) -> None:
    """Append ``array`` to a repeated Tensor field: ``convert.to_tensor`` with a fast path for
    contiguous little-endian arrays, built in place (no finished message copied in)."""
    code = DTYPE_BY_NUMPY.get(array.dtype)
    if code is None or not array.flags.c_contiguous or array.dtype.byteorder == ">":
        tensors.append(to_tensor(array, name))
    else:
        tensors.add(name=name, dtype=code, shape=array.shape, raw_data=array.tobytes())


def _named_inputs(arrays: Sequence[tuple[str, np.ndarray]], field: str) -> dict[str, np.ndarray]:
    inputs: dict[str, np.ndarray] = {}
    for i, (name, array) in enumerate(arrays):
        if not name:
            raise errors.invalid(f"{field}[{i}].name", name, "every input tensor needs its name")
        if name in inputs:
            raise errors.invalid(f"{field}[{i}].name", name, "each input may appear only once")
        inputs[name] = array
    return inputs


def uses_features(msg: inference_pb2.PredictRequest) -> bool:
    """Whether the request predicts from request facts (feature set, context) not tensors."""
    return bool(msg.feature_set or msg.entity_ids or msg.HasField("context"))


def from_predict_context(msg: inference_pb2.PredictRequest) -> RequestContext | None:
    return from_request_context(msg.context) if msg.HasField("context") else None


def from_predict_request(msg: inference_pb2.PredictRequest) -> PredictCall:
    if not msg.model:
        raise errors.invalid("model", msg.model, "a registered model name")
    if uses_features(msg):
        if msg.inputs:
            raise errors.invalid(
                "inputs", f"{len(msg.inputs)} tensors", "none when feature_set or context is set"
            )
        return PredictCall(
            msg.model, {}, msg.version, msg.alias, tuple(msg.output_names), msg.routing_key
        )
    if not msg.inputs:
        raise errors.invalid("inputs", [], "at least one input tensor, or a feature_set/context")
    arrays = [(t.name, input_array(t, f"inputs[{i}]")) for i, t in enumerate(msg.inputs)]
    return PredictCall(
        model=msg.model,
        inputs=_named_inputs(arrays, "inputs"),
        version=msg.version,
        alias=msg.alias,
        output_names=tuple(msg.output_names),
        routing_key=msg.routing_key,
    )


def to_predict_response(prediction: Prediction, id: str = "") -> inference_pb2.PredictResponse:
    msg = inference_pb2.PredictResponse(
        id=id,
        model=prediction.model,
        version=prediction.version,
        variant=PROTO_BY_VARIANT[prediction.variant],  # type: ignore[arg-type]
        request_id=prediction.request_id,
    )
    for name, array in prediction.outputs.items():
        put_tensor(msg.outputs, array, name)
    return msg


def predict_answer(prediction: Prediction, id: str = "") -> bytes:
    """``to_predict_response`` serialized, written natively (``llmopt.api.wire``) when every
    output is a contiguous little-endian array of a tensor dtype (what onnxruntime returns);
    otherwise through the message."""
    outputs = []
    for name, array in prediction.outputs.items():
        code = DTYPE_BY_NUMPY.get(array.dtype)
        if code is None or not array.flags.c_contiguous or array.dtype.byteorder == ">":
            return to_predict_response(prediction, id).SerializeToString()
        outputs.append((name, code, array))
    return native_predict_answer(
        id,
        prediction.model,
        prediction.version,
        PROTO_BY_VARIANT[prediction.variant],
        outputs,
        prediction.request_id,
    )


def from_traffic_policy(msg: inference_pb2.TrafficPolicy) -> TrafficPolicy:
    mode = MODE_BY_PROTO.get(msg.mode)
    if mode is None:
        raise errors.invalid("policy.mode", msg.mode, "OFF, SPLIT or SHADOW")
    b = msg.batching
    sizes = tuple(b.preferred_batch_sizes)
    batching = BatchingConfig(b.max_batch_size, b.max_queue_delay_us, sizes)
    return TrafficPolicy(msg.model, mode, msg.challenger_percent, batching)


def to_traffic_policy(policy: TrafficPolicy) -> inference_pb2.TrafficPolicy:
    msg = inference_pb2.TrafficPolicy(
        model=policy.model,
        mode=PROTO_BY_MODE[policy.mode],  # type: ignore[arg-type]
        challenger_percent=policy.challenger_buckets / 100,
    )
    b = policy.batching
    if b.enabled:  # off: left unset, as before batching existed
        msg.batching.CopyFrom(
            inference_pb2.DynamicBatching(
                max_batch_size=b.max_batch_size,
                max_queue_delay_us=b.max_queue_delay_us,
                preferred_batch_sizes=b.preferred_batch_sizes,
            )
        )
    return msg


def to_model_stats(stats: ModelStats) -> inference_pb2.ModelStats:
    s = stats.shadow
    return inference_pb2.ModelStats(
        model=stats.model,
        variants=[
            inference_pb2.VariantStats(
                version=v.version,
                variant=PROTO_BY_VARIANT[v.variant],  # type: ignore[arg-type]
                requests=v.requests,
                rows=v.rows,
                errors=v.errors,
                latency=inference_pb2.LatencySummary(
                    p50_ms=v.latency.p50_ms, p95_ms=v.latency.p95_ms, p99_ms=v.latency.p99_ms
                ),
            )
            for v in stats.variants
        ],
        shadow=inference_pb2.ShadowStats(
            compared=s.compared,
            dropped=s.dropped,
            errors=s.errors,
            label_agreement=s.label_agreement,
            mean_abs_diff=s.mean_abs_diff,
            max_abs_diff=s.max_abs_diff,
        ),
        load_failures=[
            inference_pb2.LoadFailure(version=f.version, alias=f.alias, message=f.message)
            for f in stats.load_failures
        ],
    )


# -- Explain ---------------------------------------------------------------------------------------

METHOD_BY_PROTO: dict[int, Method] = {
    inference_pb2.EXPLAIN_METHOD_AUTO: Method.AUTO,
    inference_pb2.LINEAR: Method.LINEAR,
    inference_pb2.TREE_SHAP: Method.TREE_SHAP,
    inference_pb2.KERNEL_SHAP: Method.KERNEL_SHAP,
}


class ExplainCall(NamedTuple):
    """A converted Explain request, ready for ``Explainer.explain``."""

    model: str
    inputs: dict[str, np.ndarray]
    version: int
    alias: str
    method: Method
    output_name: str
    output_index: int
    samples: int
    seed: int
    routing_key: str


def from_explain_request(msg: inference_pb2.ExplainRequest) -> ExplainCall:
    if not msg.model:
        raise errors.invalid("model", msg.model, "a registered model name")
    if len(msg.inputs) != 1:
        raise errors.invalid(
            "inputs", f"{len(msg.inputs)} tensors", "one float input of shape [rows, features]"
        )
    method = METHOD_BY_PROTO.get(msg.method)
    if method is None:
        raise errors.invalid("method", msg.method, "AUTO, LINEAR, TREE_SHAP or KERNEL_SHAP")
    arrays = [(t.name, input_array(t, f"inputs[{i}]")) for i, t in enumerate(msg.inputs)]
    return ExplainCall(
        model=msg.model,
        inputs=_named_inputs(arrays, "inputs"),
        version=msg.version,
        alias=msg.alias,
        method=method,
        output_name=msg.output_name,
        output_index=msg.output_index,
        samples=msg.samples,
        seed=msg.seed,
        routing_key=msg.routing_key,
    )


def to_explain_response(explanation: Explanation) -> inference_pb2.ExplainResponse:
    e = explanation
    return inference_pb2.ExplainResponse(
        model=e.model,
        version=e.version,
        method=e.method,
        feature_names=e.feature_names,
        rows=[
            inference_pb2.RowExplanation(
                contributions=contributions.tolist(), base_value=base, prediction=prediction
            )
            for contributions, base, prediction in zip(
                e.contributions, e.base_values.tolist(), e.predictions.tolist(), strict=True
            )
        ],
        output_name=e.output_name,
        output_index=e.output_index,
        samples=e.samples,
        seed=e.seed,
        background_rows=e.background_rows,
    )


def to_feature_importance(importance: FeatureImportance) -> inference_pb2.FeatureImportance:
    return inference_pb2.FeatureImportance(
        model=importance.model,
        version=importance.version,
        rows=importance.rows,
        features=[
            inference_pb2.FeatureImportanceEntry(feature=name, mean_abs_contribution=value)
            for name, value in importance.features
        ],
    )


# -- Open Inference Protocol -----------------------------------------------------------------------

# Datatype names of the specification <-> numpy dtype (little-endian). BYTES has no fixed width.
NUMPY_BY_DATATYPE: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
DATATYPE_BY_NUMPY: dict[np.dtype, str] = {
    v.newbyteorder("="): k for k, v in NUMPY_BY_DATATYPE.items()
}
# Which InferTensorContents field carries each datatype (FP16 travels only as raw bytes).
CONTENTS_FIELD_BY_DATATYPE: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
# The element type of each typed contents field (INT8 travels in int_contents: a value may not fit).
_CONTENTS_DTYPE: dict[str, np.dtype] = {
    "bool_contents": np.dtype("?"),
    "uint_contents": np.dtype("u4"),
    "uint64_contents": np.dtype("u8"),
    "int_contents": np.dtype("i4"),
    "int64_contents": np.dtype("i8"),
    "fp32_contents": np.dtype("f4"),
    "fp64_contents": np.dtype("f8"),
}
PLATFORM = "onnxruntime_onnx"
_ROUTING_KEY_PARAMETER = "routing_key"


def datatype_of(dtype: np.dtype) -> str:
    if dtype.kind == "O":
        return "BYTES"
    name = DATATYPE_BY_NUMPY.get(dtype.newbyteorder("="))
    if name is None:
        raise errors.invalid("datatype", dtype.name, "has no Open Inference Protocol name")
    return name


def _split_raw_bytes(raw: bytes, count: int, field: str) -> list[bytes]:
    """Triton's raw BYTES layout: each element a 4-byte little-endian length, then its bytes."""
    items: list[bytes] = []
    at, end = 0, len(raw)
    while at < end:
        if end - at < 4:
            raise errors.invalid(
                f"{field} raw_input_contents", f"{end - at} trailing bytes", "a 4-byte length"
            )
        size = int.from_bytes(raw[at : at + 4], "little")
        at += 4
        if size > end - at:
            raise errors.invalid(
                f"{field} raw_input_contents",
                f"element {len(items)} of {size} bytes",
                f"at most the {end - at} bytes left",
            )
        items.append(raw[at : at + size])
        at += size
        if len(items) > count:
            break
    if len(items) != count:
        raise errors.invalid(
            f"{field} raw_input_contents",
            f"{len(items)}{'+' if len(items) > count else ''} elements",
            f"the shape needs {count}, each a 4-byte little-endian length and its bytes",
        )
    return items


def _from_bytes_input(
    msg: oip_pb2.ModelInferRequest.InferInputTensor, raw: bytes | None, field: str
) -> np.ndarray:
    """A BYTES tensor as the object array of str an ONNX string input takes (UTF-8 text)."""
    shape = tensor_shape(msg.shape, 1, f"{field}.shape")
    count = math.prod(shape)
    if raw is not None:
        items = _split_raw_bytes(raw, count, field)
        where = f"{field} raw_input_contents"
    else:
        items = list(msg.contents.bytes_contents)
        where = f"{field}.contents.bytes_contents"
        if len(items) != count:
            raise errors.invalid(
                where, f"{len(items)} values", f"shape {list(shape)} needs {count}"
            )
    array = np.empty(count, dtype=object)
    for i, item in enumerate(items):
        try:
            array[i] = item.decode("utf-8")
        except UnicodeDecodeError:
            raise errors.invalid(where, f"element {i}", "UTF-8 text (string tensors)") from None
    return array.reshape(shape)


def _from_infer_input(
    msg: oip_pb2.ModelInferRequest.InferInputTensor, raw: bytes | None, field: str
) -> np.ndarray:
    if msg.datatype == "BYTES":
        return _from_bytes_input(msg, raw, field)
    dtype = NUMPY_BY_DATATYPE.get(msg.datatype)
    if dtype is None:
        raise errors.invalid(
            f"{field}.datatype", msg.datatype, "one of " + ", ".join(NUMPY_BY_DATATYPE)
        )
    shape = tensor_shape(msg.shape, dtype.itemsize, f"{field}.shape")
    count = math.prod(shape)
    if raw is not None:
        expected = count * dtype.itemsize
        if len(raw) != expected:
            raise errors.invalid(
                f"{field} raw_input_contents",
                f"{len(raw)} bytes",
                f"shape {list(shape)} of {msg.datatype} needs {expected} bytes",
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    contents_field = CONTENTS_FIELD_BY_DATATYPE.get(msg.datatype)
    if contents_field is None:
        raise errors.invalid(
            f"{field}.contents",
            msg.datatype,
            "raw_input_contents: this datatype has no typed contents field",
        )
    values = getattr(msg.contents, contents_field)
    if len(values) != count:
        raise errors.invalid(
            f"{field}.contents.{contents_field}",
            f"{len(values)} values",
            f"shape {list(shape)} needs {count}",
        )
    wide = np.asarray(values, dtype=_CONTENTS_DTYPE[contents_field])
    array = wide.astype(dtype)
    if dtype != wide.dtype and not np.array_equal(array, wide):
        raise errors.invalid(
            f"{field}.contents.{contents_field}",
            f"{len(values)} values",
            f"every value must fit {msg.datatype}",
        )
    return array.reshape(shape)


@dataclass(frozen=True)
class InferCall:
    model: str
    version: int
    id: str
    inputs: dict[str, np.ndarray]
    output_names: tuple[str, ...]
    routing_key: str


def parse_version(text: str, field: str = "model_version") -> int:
    """ "" (routed) -> 0; otherwise a positive integer that fits int64, as version numbers do."""
    if not text:
        return 0
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= INT64_MAX:
        raise errors.invalid(field, text, f"empty (routed) or a version number in 1..{INT64_MAX}")
    return int(text)


def from_infer_request(msg: oip_pb2.ModelInferRequest) -> InferCall:
    if not msg.model_name:
        raise errors.invalid("model_name", msg.model_name, "a registered model name")
    if not msg.inputs:
        raise errors.invalid("inputs", [], "at least one input tensor")
    raw = msg.raw_input_contents
    if raw and len(raw) != len(msg.inputs):
        raise errors.invalid(
            "raw_input_contents",
            f"{len(raw)} entries",
            f"one per input ({len(msg.inputs)}), or none to use typed contents",
        )
    arrays = [
        (t.name, _from_infer_input(t, raw[i] if raw else None, f"inputs[{i}]"))
        for i, t in enumerate(msg.inputs)
    ]
    key = msg.parameters.get(_ROUTING_KEY_PARAMETER)
    return InferCall(
        model=msg.model_name,
        version=parse_version(msg.model_version),
        id=msg.id,
        inputs=_named_inputs(arrays, "inputs"),
        output_names=tuple(o.name for o in msg.outputs),
        routing_key=key.string_param if key is not None else "",
    )


def to_infer_response(prediction: Prediction, id: str = "") -> oip_pb2.ModelInferResponse:
    outputs = []
    raw = []
    for name, array in prediction.outputs.items():
        datatype = datatype_of(array.dtype)
        if datatype == "BYTES":
            data = b"".join(
                len(b).to_bytes(4, "little") + b for b in (_as_bytes(v) for v in array.ravel())
            )
        else:
            data = np.ascontiguousarray(array, NUMPY_BY_DATATYPE[datatype]).tobytes()
        outputs.append(
            oip_pb2.ModelInferResponse.InferOutputTensor(
                name=name, datatype=datatype, shape=array.shape
            )
        )
        raw.append(data)
    response = oip_pb2.ModelInferResponse(
        model_name=prediction.model,
        model_version=str(prediction.version),
        id=id,
        outputs=outputs,
        raw_output_contents=raw,
    )
    response.parameters["variant"].string_param = prediction.variant.value
    response.parameters["request_id"].string_param = prediction.request_id
    return response


def _as_bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _tensor_metadata(
    spec: IOSpec,
) -> oip_pb2.ModelMetadataResponse.TensorMetadata:
    return oip_pb2.ModelMetadataResponse.TensorMetadata(
        name=spec.name, datatype=datatype_of(spec.dtype), shape=spec.shape
    )


def to_model_metadata(desc: ModelDescription) -> oip_pb2.ModelMetadataResponse:
    """``versions``: every servable version (the registry's), and those served now."""
    versions = {*desc.servable, *desc.versions, desc.version}
    return oip_pb2.ModelMetadataResponse(
        name=desc.model,
        versions=[str(v) for v in sorted(versions)],
        platform=PLATFORM,
        inputs=[_tensor_metadata(s) for s in desc.signature.inputs],
        outputs=[_tensor_metadata(s) for s in desc.signature.outputs],
    )


def to_repository_index(
    entries: Sequence[IndexEntry], ready_only: bool = False
) -> oip_pb2.RepositoryIndexResponse:
    return oip_pb2.RepositoryIndexResponse(
        models=[
            oip_pb2.RepositoryIndexResponse.ModelIndex(
                name=e.model,
                version=str(e.version) if e.version else "",
                state=e.state,
                reason=e.reason,
            )
            for e in entries
            if not ready_only or e.state == "READY"
        ]
    )


# -- ModelStatistics -------------------------------------------------------------------------------


def _duration(d: Duration) -> oip_pb2.StatisticDuration:
    return oip_pb2.StatisticDuration(count=d.count, ns=d.ns)


def to_model_statistics(stats: VersionStatistics) -> oip_pb2.ModelStatistics:
    return oip_pb2.ModelStatistics(
        name=stats.model,
        version=str(stats.version),
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
        inference_stats=oip_pb2.InferStatistics(
            success=_duration(stats.success),
            fail=_duration(stats.fail),
            queue=_duration(stats.queue),
            compute_input=_duration(stats.compute_input),
            compute_infer=_duration(stats.compute_infer),
            compute_output=_duration(stats.compute_output),
        ),
        batch_stats=[
            oip_pb2.InferBatchStatistics(
                batch_size=b.batch_size,
                compute_input=_duration(b.compute_input),
                compute_infer=_duration(b.compute_infer),
                compute_output=_duration(b.compute_output),
            )
            for b in stats.batches
        ],
    )


def to_statistics_response(
    stats: Sequence[VersionStatistics],
) -> oip_pb2.ModelStatisticsResponse:
    return oip_pb2.ModelStatisticsResponse(model_stats=[to_model_statistics(s) for s in stats])


# -- ModelConfig -----------------------------------------------------------------------------------

BACKEND = "onnxruntime"
CONFIG_TYPE_BY_DATATYPE: dict[str, int] = {
    "BOOL": model_config_pb2.TYPE_BOOL,
    "UINT8": model_config_pb2.TYPE_UINT8,
    "UINT16": model_config_pb2.TYPE_UINT16,
    "UINT32": model_config_pb2.TYPE_UINT32,
    "UINT64": model_config_pb2.TYPE_UINT64,
    "INT8": model_config_pb2.TYPE_INT8,
    "INT16": model_config_pb2.TYPE_INT16,
    "INT32": model_config_pb2.TYPE_INT32,
    "INT64": model_config_pb2.TYPE_INT64,
    "FP16": model_config_pb2.TYPE_FP16,
    "FP32": model_config_pb2.TYPE_FP32,
    "FP64": model_config_pb2.TYPE_FP64,
    "BYTES": model_config_pb2.TYPE_STRING,
}


class BatchingSettings(NamedTuple):
    """What ModelConfig reports of a model's dynamic batching (off: max_batch_size 0)."""

    max_batch_size: int = 0
    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()


def batching_settings(batching: object | None) -> BatchingSettings:
    """The engine's batching settings (the traffic policy's ``batching``: any object with
    ``max_batch_size``, ``max_queue_delay_us`` or ``max_queue_delay`` seconds, and
    ``preferred_batch_sizes``), or off."""
    if batching is None:
        return BatchingSettings()
    size = int(getattr(batching, "max_batch_size", 0) or 0)
    delay_us = getattr(batching, "max_queue_delay_us", None)
    if delay_us is None:
        delay_us = round(float(getattr(batching, "max_queue_delay", 0.0) or 0.0) * 1e6)
    preferred = tuple(int(n) for n in getattr(batching, "preferred_batch_sizes", ()) or ())
    return BatchingSettings(max(size, 0), int(delay_us), preferred)


def _batch_dimension(desc: ModelDescription, batching: BatchingSettings) -> bool:
    """Whether ModelConfig declares a batch dimension: batching is on and every input's first
    dimension is open."""
    inputs = desc.signature.inputs
    return (
        batching.max_batch_size > 0
        and bool(inputs)
        and all(s.shape and s.shape[0] < 0 for s in inputs)
    )


def to_model_config(
    desc: ModelDescription, batching: object | None = None
) -> oip_pb2.ModelConfigResponse:
    """The model's configuration, as Triton reports it.

    The batch dimension rule (Triton's): ``max_batch_size`` > 0 only when dynamic batching is on
    for the model and every input's first dimension is open (-1); then it is the batching
    ``max_batch_size`` and every input's and output's ``dims`` leave that first dimension out.
    Otherwise ``max_batch_size`` is 0 and ``dims`` are the whole shapes (-1: any size).
    ``version_policy`` is ``specific``: the versions served now.
    """
    settings = batching_settings(batching)
    batched = _batch_dimension(desc, settings)

    def dims(spec: IOSpec) -> list[int]:
        shape = list(spec.shape)
        return shape[1:] if batched and shape else shape

    config = model_config_pb2.ModelConfig(
        name=desc.model,
        platform=PLATFORM,
        backend=BACKEND,
        max_batch_size=settings.max_batch_size if batched else 0,
        version_policy=model_config_pb2.ModelVersionPolicy(
            specific=model_config_pb2.ModelVersionPolicy.Specific(
                versions=sorted({*desc.versions, desc.version})
            )
        ),
        input=[
            model_config_pb2.ModelInput(
                name=s.name,
                data_type=CONFIG_TYPE_BY_DATATYPE[datatype_of(s.dtype)],  # type: ignore[arg-type]
                dims=dims(s),
            )
            for s in desc.signature.inputs
        ],
        output=[
            model_config_pb2.ModelOutput(
                name=s.name,
                data_type=CONFIG_TYPE_BY_DATATYPE[datatype_of(s.dtype)],  # type: ignore[arg-type]
                dims=dims(s),
            )
            for s in desc.signature.outputs
        ],
    )
    if settings.max_batch_size > 0:
        config.dynamic_batching.CopyFrom(
            model_config_pb2.ModelDynamicBatching(
                preferred_batch_size=settings.preferred_batch_sizes,
                max_queue_delay_microseconds=settings.max_queue_delay_us,
            )
        )
    return oip_pb2.ModelConfigResponse(config=config)
