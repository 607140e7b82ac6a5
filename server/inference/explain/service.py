"""The Explain and GetFeatureImportance domain service: which version, which method, what it says.

``Explainer.explain`` resolves the version exactly as a prediction would (the engine's
``serving``: a pinned version or alias, else champion or challenger by the traffic policy,
sticky by routing key), runs the model on the rows for their predictions, and explains one
output column of them: ``AUTO`` takes the exact linear explanation when the graph is affine in
its input, else exact TreeSHAP when it is a tree ensemble, else KernelSHAP. The explainers of a
(version, output) are built once, from the version's ONNX graph and background sample in the
registry, and kept in a bounded cache (versions never change, so nothing goes stale).

Global importance (``feature_importance``) is a version's mean |contribution| per feature over
the rows it served recently: the engine hands every prediction's inputs to the explainer's
``TrafficSample`` (``traffic.py``; the last ``importance_rows`` rows per version, in memory),
and the sample is explained with the version's own explainer when asked. Rows sent to Explain
are not folded in: they are the ones somebody chose to look at, not the traffic, and one
source of rows keeps one meaning of "rows".
"""

from __future__ import annotations

import enum
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from llmopt import errors
from llmopt.inference.explain import kernel
from llmopt.inference.explain.linear import LinearExplainer
from llmopt.inference.explain.traffic import TrafficSample
from llmopt.inference.explain.trees import TreeExplainer
from llmopt.inference.signature import IOSpec, validate_inputs

if TYPE_CHECKING:
    from llmopt.inference.session import LoadedModel
    from llmopt.ports import ExplainSource, ServingVersions

FEATURE_NAMES_TAG = "feature_names"
CHAMPION = "champion"
MAX_SEED = 2**64 - 1
IMPORTANCE_SEED = 0  # KernelSHAP's coalitions and its choice of rows, for global importance
IMPORTANCE_SAMPLES = 512  # KernelSHAP coalitions per row for global importance (a mean over rows)


class Method(enum.Enum):
    AUTO = "auto"
    LINEAR = "linear"
    TREE_SHAP = "tree_shap"
    KERNEL_SHAP = "kernel_shap"


class ExactExplainer(Protocol):
    """What the exact explainers (``linear``, ``trees``) answer."""

    method: str

    def explain(self, X: np.ndarray) -> tuple[np.ndarray, float]: ...


# The exact methods, tried in this order by AUTO: each builder answers None for a graph that is
# not of its kind.
EXACT_BUILDERS: dict[Method, Any] = {
    Method.LINEAR: LinearExplainer,
    Method.TREE_SHAP: TreeExplainer,
}
_NOT_OF_KIND = {
    Method.LINEAR: "is not affine in its input (an exact linear explanation needs a graph of "
    "MatMul/Gemm/Add/... only)",
    Method.TREE_SHAP: "is not a sum of TreeEnsemble trees",
}


@dataclass(frozen=True)
class ExplainerConfig:
    """Bounds of the explain service; validated here once."""

    max_rows: int = 1000  # rows per Explain request
    # KernelSHAP's model runs per request: rows x samples x background rows (at the default
    # 2048 samples and 100 background rows, 81 rows; at 65536 samples, 2).
    max_kernel_evaluations: int = 1 << 24
    kernel_background: int = kernel.MAX_BACKGROUND
    cache_size: int = 64  # (version, output) explainers kept
    # Global importance: the served rows kept per version, how many versions keep them, and how
    # long an answer is reused while the sample does not double (see feature_importance).
    importance_rows: int = 1000
    importance_versions: int = 256
    importance_seconds: float = 10.0
    # KernelSHAP's model runs for one importance answer (a seeded choice of the served rows at
    # IMPORTANCE_SAMPLES coalitions each): an answer stays a second or so for any model.
    importance_kernel_evaluations: int = 1 << 20

    def __post_init__(self) -> None:
        for name in (
            "max_rows",
            "max_kernel_evaluations",
            "kernel_background",
            "cache_size",
            "importance_rows",
            "importance_versions",
            "importance_kernel_evaluations",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise errors.invalid(name, value, "a positive integer")
        seconds = self.importance_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
            raise errors.invalid("importance_seconds", seconds, "a number of seconds >= 0")


@dataclass(frozen=True, eq=False)
class Explanation:
    """Per-feature contributions of one output to the predictions of some rows:
    ``base_values[i] + contributions[i].sum()`` is ``predictions[i]``."""

    model: str
    version: int
    method: str
    feature_names: tuple[str, ...]
    contributions: np.ndarray  # [rows, features] float64
    base_values: np.ndarray  # [rows]
    predictions: np.ndarray  # [rows], from the model's own run
    output_name: str
    output_index: int
    samples: int  # KernelSHAP's coalitions per row (0 for exact methods)
    seed: int
    background_rows: int


@dataclass(frozen=True)
class FeatureImportance:
    model: str
    version: int
    rows: int  # the served rows averaged over (0: none yet)
    # (feature, mean |contribution|), largest first (ties in column order).
    features: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class _Answer:
    """A computed importance, and what it was computed from."""

    importance: FeatureImportance
    served: int  # rows the version had served when it was computed
    held: int  # rows its sample held then
    at: float  # time.monotonic()


@dataclass
class _Explainers:
    """What one (version, output) needs to be explained, built once and kept."""

    model: str
    version: int
    output_name: str
    output_index: int
    tags: dict[str, str]
    background: np.ndarray | None
    graph: Any = None  # the parsed ONNX model, while an exact method may still be built
    exact: dict[Method, ExactExplainer | None] = field(default_factory=dict)
    kernel: kernel.KernelExplainer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class Explainer:
    """Explanations of model versions' predictions; safe from many threads.

    ``engine`` resolves and holds the version a request runs on (``ServingVersions``), and
    hands the rows it serves to ``traffic``, the sample global importance is computed over;
    ``registry`` gives a version's ONNX bytes, tags and background sample (``ExplainSource``).
    """

    def __init__(
        self,
        engine: ServingVersions,
        registry: ExplainSource,
        config: ExplainerConfig | None = None,
    ) -> None:
        self.config = config or ExplainerConfig()
        self._engine = engine
        self._registry = registry
        self._cache: OrderedDict[tuple[str, int, str, int], _Explainers] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.traffic = TrafficSample(self.config.importance_rows, self.config.importance_versions)
        self._answers: dict[tuple[str, int], _Answer] = {}
        self._importance_lock = threading.Lock()
        engine.sample_served_rows(self.traffic)

    # -- Explain --------------------------------------------------------------------------------

    def explain(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        version: int = 0,
        alias: str = "",
        method: Method = Method.AUTO,
        output_name: str = "",
        output_index: int = 0,
        samples: int = 0,
        seed: int = 0,
        routing_key: str = "",
    ) -> Explanation:
        """Contributions of each input feature to ``output_name`` (column ``output_index``) of
        the predictions of ``inputs`` (the model's one float input, ``[rows, features]``)."""
        if not isinstance(method, Method):
            raise errors.invalid("method", method, "auto, linear, tree_shap or kernel_shap")
        budget = kernel.check_samples(samples)
        if isinstance(output_index, bool) or output_index < 0:
            raise errors.invalid("output_index", output_index, ">= 0 (a column of the output)")
        if not 0 <= seed <= MAX_SEED:
            raise errors.invalid("seed", seed, f"0 to {MAX_SEED}")
        serving = self._engine.serving(model, version=version, alias=alias, routing_key=routing_key)
        with serving as (loaded, _):
            spec = _float_input(loaded)
            X = self._rows(spec, inputs)
            output = _output_of(loaded, output_name)
            predict = _predictor(loaded, spec, output, output_index)
            predictions = predict(X)
            entry = self._entry(loaded, output, output_index)
            background = _background_of(entry)
            chosen = self._choose(entry, method, background)
            if chosen is None:
                explainer = self._kernel(entry, background, predict)
                used_rows = len(explainer.background_)
                if len(X) * budget * used_rows > self.config.max_kernel_evaluations:
                    raise errors.invalid(
                        "inputs",
                        f"{len(X)} rows at {budget} samples over {used_rows} background rows",
                        f"at most {self.config.max_kernel_evaluations} model evaluations (rows x "
                        "samples x background rows) per KernelSHAP request; send fewer rows or "
                        "lower samples",
                    )
                contributions, base = explainer.explain(
                    X, samples=budget, seed=seed, predictions=predictions, predict=predict
                )
                used, rows_used, samples_used = explainer.method, len(explainer.background_), budget
            else:
                contributions, base = chosen.explain(X.astype(np.float64))
                used, rows_used, samples_used = chosen.method, len(background), 0
        contributions = np.asarray(contributions, dtype=np.float64)
        return Explanation(
            model=loaded.model,
            version=loaded.version,
            method=used,
            feature_names=feature_names(entry.tags, X.shape[1]),
            contributions=contributions,
            base_values=np.full(len(X), float(base)),
            predictions=predictions,
            output_name=output,
            output_index=output_index,
            samples=samples_used,
            seed=seed if samples_used else 0,
            background_rows=rows_used,
        )

    def _rows(self, spec: IOSpec, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        validate_inputs((spec,), inputs)
        X = inputs[spec.name]
        if not 1 <= len(X) <= self.config.max_rows:
            raise errors.invalid(
                f"inputs[{spec.name!r}].shape",
                list(X.shape),
                f"1 to {self.config.max_rows} rows to explain",
            )
        if not np.isfinite(X).all():
            row, col = np.argwhere(~np.isfinite(X))[0]
            raise errors.invalid(
                f"inputs[{spec.name!r}]",
                f"{X[row, col]} at row {row}, column {col}",
                "finite values to explain",
            )
        return X

    def _entry(self, loaded: LoadedModel, output: str, index: int) -> _Explainers:
        key = (loaded.model, loaded.version, output, index)
        with self._cache_lock:
            entry = self._cache.get(key)
            if entry is not None:
                self._cache.move_to_end(key)
                return entry
        mv = self._registry.get_version(loaded.model, version=loaded.version)
        background = self._registry.background(loaded.model, version=loaded.version)
        entry = _Explainers(loaded.model, loaded.version, output, index, dict(mv.tags), background)
        with self._cache_lock:
            entry = self._cache.setdefault(key, entry)
            self._cache.move_to_end(key)
            while len(self._cache) > self.config.cache_size:
                self._cache.popitem(last=False)
        return entry

    def _choose(
        self, entry: _Explainers, method: Method, background: np.ndarray
    ) -> ExactExplainer | None:
        """The exact explainer the method asks for (None: KernelSHAP)."""
        if method is Method.KERNEL_SHAP:
            return None
        wanted = list(EXACT_BUILDERS) if method is Method.AUTO else [method]
        for kind in wanted:
            built = self._exact(entry, kind, background)
            if built is not None:
                return built
        if method is Method.AUTO:
            return None
        raise errors.FailedPrecondition(
            f"method: {method.name} cannot explain model {entry.model!r} version "
            f"{entry.version}: output {entry.output_name!r} {_NOT_OF_KIND[method]}; use AUTO "
            "or KERNEL_SHAP"
        )

    def _exact(
        self, entry: _Explainers, kind: Method, background: np.ndarray
    ) -> ExactExplainer | None:
        with entry.lock:
            if kind not in entry.exact:
                if entry.graph is None:
                    entry.graph = _parse(self._registry.read_artifact(entry.model, entry.version))
                built = EXACT_BUILDERS[kind].from_onnx(
                    entry.graph, background, entry.output_name, entry.output_index
                )
                entry.exact[kind] = built
                if len(entry.exact) == len(EXACT_BUILDERS):
                    entry.graph = None  # every exact method is decided: the graph is not needed
            return entry.exact[kind]

    def _kernel(
        self, entry: _Explainers, background: np.ndarray, predict: kernel.Predict
    ) -> kernel.KernelExplainer:
        with entry.lock:
            if entry.kernel is None:
                sample = kernel.subsample(background, self.config.kernel_background)
                entry.kernel = kernel.KernelExplainer(predict, sample)
            return entry.kernel

    # -- importance -----------------------------------------------------------------------------

    def feature_importance(
        self, model: str, *, version: int = 0, alias: str = ""
    ) -> FeatureImportance:
        """The version's mean |contribution| per feature over the rows it served recently
        (version 0 and no alias: the champion), by the method AUTO picks for it; ``rows`` 0
        and zeros before any. KernelSHAP explains a seeded choice of the rows, as many as
        ``importance_kernel_evaluations`` allows at IMPORTANCE_SAMPLES coalitions (at least
        one).

        An answer is cached per version and recomputed only once the version has served new
        rows and either ``importance_seconds`` have passed or its sample has more than doubled
        since: a dashboard polling it costs a lookup, not 1,000 rows explained per call, and the
        first rows are answered at once rather than after the first poll's zeros expire.
        FAILED_PRECONDITION when the version has no background sample.
        """
        mv = self._importance_version(model, version, alias)
        key = (model, int(mv.version))
        with self._importance_lock:
            served, held = self.traffic.counts(*key)
            answer = self._answers.get(key)
            now = time.monotonic()
            if answer is not None and (
                answer.served == served
                or (now - answer.at < self.config.importance_seconds and held <= 2 * answer.held)
            ):
                return answer.importance
            sample = self.traffic.recent(*key)
            if sample is None:
                importance = self._no_importance(mv)
                served, held = 0, 0
            else:
                served, rows = sample
                held = len(rows)
                importance = self._importance_of(model, int(mv.version), rows)
            self._answers.pop(key, None)
            while len(self._answers) >= self.config.importance_versions:
                del self._answers[next(iter(self._answers))]
            self._answers[key] = _Answer(importance, served, held, now)
            return importance

    def _importance_version(self, model: str, version: int, alias: str) -> Any:
        if version and alias:
            raise errors.invalid("version", version, "name a version or an alias, not both")
        if version < 0:
            raise errors.invalid("version", version, "a version number >= 1 (0: the champion)")
        if version:
            return self._registry.get_version(model, version=version)
        if alias:
            return self._registry.get_version(model, alias=alias)
        champion = self._registry.aliases(model).get(CHAMPION)
        if champion is None:
            raise errors.FailedPrecondition(
                f"model: {model!r} has no champion; name a version or an alias"
            )
        return self._registry.get_version(model, version=champion)

    def _importance_of(self, model: str, version: int, rows: np.ndarray) -> FeatureImportance:
        """Explain the served ``rows`` (finite ones) and average their |contributions|."""
        X = rows[np.isfinite(rows).all(axis=1)]
        with self._engine.serving(model, version=version) as (loaded, _):
            spec = _float_input(loaded)
            output = _output_of(loaded, "")
            predict = _predictor(loaded, spec, output, 0)
            entry = self._entry(loaded, output, 0)
            background = _background_of(entry)
            names = feature_names(entry.tags, rows.shape[1])
            if not len(X):
                return _importance(model, version, names, 0, np.zeros(rows.shape[1]))
            chosen = self._choose(entry, Method.AUTO, background)
            if chosen is None:
                explainer = self._kernel(entry, background, predict)
                budget = IMPORTANCE_SAMPLES
                most = self.config.importance_kernel_evaluations // (
                    budget * len(explainer.background_)
                )
                if len(X) > max(most, 1):
                    rng = np.random.default_rng(IMPORTANCE_SEED)
                    X = X[np.sort(rng.choice(len(X), size=max(most, 1), replace=False))]
                contributions, _ = explainer.explain(
                    X, samples=budget, seed=IMPORTANCE_SEED, predict=predict
                )
            else:
                contributions, _ = chosen.explain(X)
        means = np.abs(np.asarray(contributions, dtype=np.float64)).mean(axis=0)
        return _importance(model, version, names, len(X), means)

    def _no_importance(self, mv: Any) -> FeatureImportance:
        """The answer for a version that served no row here: zeros, when it could be explained."""
        background = self._registry.background(mv.model, version=mv.version)
        if background is None:
            raise errors.FailedPrecondition(_no_background(mv.model, mv.version))
        width = self._width_of(mv, background)
        return _importance(mv.model, mv.version, feature_names(mv.tags, width), 0, np.zeros(width))

    @staticmethod
    def _width_of(mv: Any, background: np.ndarray) -> int:
        """Features of a version: its input's width, else its background's."""
        if len(mv.inputs) == 1 and len(mv.inputs[0].shape) == 2 and mv.inputs[0].shape[1] >= 0:
            return int(mv.inputs[0].shape[1])
        return int(background.shape[1])


def _importance(
    model: str, version: int, names: tuple[str, ...], rows: int, means: np.ndarray
) -> FeatureImportance:
    order = sorted(range(len(means)), key=lambda i: -means[i])
    features = tuple((names[i], float(means[i])) for i in order)
    return FeatureImportance(model, version, rows, features)


def feature_names(tags: Mapping[str, str], width: int) -> tuple[str, ...]:
    """The tag ``feature_names`` (comma-separated) when it names ``width`` features, else
    x0 .. x{width-1}.

    >>> feature_names({"feature_names": "age, income"}, 2)
    ('age', 'income')
    >>> feature_names({"feature_names": "age"}, 2)
    ('x0', 'x1')
    """
    text = tags.get(FEATURE_NAMES_TAG, "")
    names = tuple(part.strip() for part in text.split(",")) if text else ()
    if len(names) == width and all(names):
        return names
    return tuple(f"x{i}" for i in range(width))


def _float_input(loaded: LoadedModel) -> IOSpec:
    specs = loaded.signature.inputs
    if len(specs) != 1 or len(specs[0].shape) != 2 or specs[0].dtype.kind != "f":
        raise errors.FailedPrecondition(
            f"model: {loaded.model!r} version {loaded.version} does not take one float input "
            "of shape [rows, features]; only such models can be explained"
        )
    return specs[0]


def _output_of(loaded: LoadedModel, name: str) -> str:
    """The output explained: ``name``, or the first float output (labels are not)."""
    outputs = loaded.signature.outputs
    if name:
        for spec in outputs:
            if spec.name == name:
                if spec.dtype.kind != "f":
                    raise errors.invalid(
                        "output_name", name, f"a float output (it is {spec.dtype.name})"
                    )
                return name
        known = ", ".join(repr(s.name) for s in outputs)
        raise errors.invalid("output_name", name, f"an output of the model: {known}")
    for spec in outputs:
        if spec.dtype.kind == "f":
            return spec.name
    raise errors.FailedPrecondition(
        f"output_name: model {loaded.model!r} version {loaded.version} has no float output "
        "to explain"
    )


def _predictor(
    loaded: LoadedModel, spec: IOSpec, output: str, index: int
) -> Callable[[np.ndarray], np.ndarray]:
    """Rows -> column ``index`` of ``output``, as float64, through the loaded session."""

    def predict(rows: np.ndarray) -> np.ndarray:
        feed = {spec.name: np.ascontiguousarray(rows, dtype=spec.dtype)}
        values = np.asarray(loaded.run(feed, [output])[output])
        flat = values.reshape(len(rows), -1) if values.ndim != 1 else values[:, None]
        if index >= flat.shape[1]:
            raise errors.invalid(
                "output_index",
                index,
                f"a column of output {output!r}, which has {flat.shape[1]} per row",
            )
        return flat[:, index].astype(np.float64)

    return predict


def _background_of(entry: _Explainers) -> np.ndarray:
    if entry.background is None:
        raise errors.FailedPrecondition(_no_background(entry.model, entry.version))
    return entry.background


def _no_background(model: str, version: int) -> str:
    return (
        f"background: model {model!r} version {version} has no background sample, the "
        "baseline of explanations; upload the version with one (metadata.background, or "
        "register_sklearn_model's sample)"
    )


def _parse(artifact: bytes) -> Any:
    import onnx

    return onnx.load_from_string(artifact)
