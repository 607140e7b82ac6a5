"""The model repository: Triton's on-disk layout, read into the registry (``--model-repository``).

Layout: ``<root>/<model>/<version>/model.onnx``, versions positive integers, with an optional
``<root>/<model>/config.pbtxt`` (text format of ``inference.ModelConfig``, parsed into
``llmopt.gen.inference.model_config_pb2``; fields this server does not use are ignored). Of the
config it honours ``name`` (must be the directory's), ``platform``/``backend`` (ONNX Runtime's
only), ``default_model_filename``, ``version_policy`` (which versions are registered: Triton's
default is the latest one), the input and output names (checked against the ONNX graph's), and
``max_batch_size`` with ``dynamic_batching`` (``batching(model)``, for the engine).

Landing a model is idempotent: each version file's sha256 is looked up among the model's versions
(``Registry.find_version``) and only bytes the registry does not hold yet are uploaded, numbered
as their directory when that number is free (above every number the model used), else the next
one; the directory number is kept in the version's ``repository.version`` tag. The highest
allowed version becomes champion when the model has no champion, when that version has just been
registered, or when the champion is not among the versions the policy allows; a champion an
operator moved to another allowed version stays. Moving the alias is the registry's, so the
engine swaps versions as for Promote (load, warm, then switch).

Bad files (not ONNX, a failing check, a version directory that is not a number, a config.pbtxt
that does not parse or contradicts the graph) are kept per model in ``problems()`` and logged;
the rest of the model, and every other model, still lands.

Modes, as Triton's ``--model-control-mode``: ``none`` reads the directory once at start-up,
``poll`` also rescans every ``poll_seconds`` on a thread of its own (only models whose files
changed are read again), ``explicit`` reads nothing at start-up and lands a model when
``load(name)`` asks (RepositoryModelLoad). A model directory that disappears stays in the registry.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format

from llmopt import errors, naming
from llmopt.gen.inference import model_config_pb2
from llmopt.registry import CHAMPION, Registry
from llmopt.registry.types import ModelVersion, VersionMetadata

log = logging.getLogger("llmopt.model_repository")

MODES = ("none", "poll", "explicit")
CONFIG_FILE = "config.pbtxt"
DEFAULT_MODEL_FILENAME = "model.onnx"
PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"
VERSION_TAG = "repository.version"
ACTOR = "model-repository"

# (max_batch_size, max_queue_delay_microseconds, preferred batch sizes)
Batching = tuple[int, int, tuple[int, ...]]
# (relative path, mtime ns, size) of every entry of a model directory, two levels deep
_Fingerprint = tuple[tuple[str, int, int], ...]


class ConfigError(ValueError):
    """A config.pbtxt that cannot be used; the model is not landed."""


@dataclass
class _Landing:
    """What reading one model directory found, before and after it landed."""

    config: model_config_pb2.ModelConfig | None = None
    problems: list[str] = field(default_factory=list)
    # directory version -> registry version, of the versions that landed
    landed: dict[int, ModelVersion] = field(default_factory=dict)
    registered: set[int] = field(default_factory=set)


class ModelRepository:
    """Triton's model repository layout, landed in ``registry`` (see the module docstring).

    A ``Component``: ``warm_up`` reads the directory (none, poll) and starts polling (poll);
    ``close`` stops polling. ``prepare(model)``, when given (or set before ``warm_up``), is
    called for each model landed at start-up so that it is loaded and warm before the server
    reports SERVING; ``removed(model)``, when set, for each model whose directory disappeared
    (as Triton's poll mode, the server unloads it; its versions stay in the registry).
    """

    def __init__(
        self,
        registry: Registry,
        path: Path,
        mode: str = "none",
        poll_seconds: float = 15.0,
        *,
        prepare: Callable[[str], object] | None = None,
    ) -> None:
        if mode not in MODES:
            raise errors.invalid("model_control_mode", mode, "one of " + ", ".join(MODES))
        if poll_seconds <= 0:
            raise errors.invalid("repository_poll_seconds", poll_seconds, "a positive number")
        self.registry = registry
        self.root = Path(path)
        self.mode = mode
        self.poll_seconds = poll_seconds
        self.prepare = prepare
        # Called for each model whose directory disappears (poll): the server unloads it.
        self.removed: Callable[[str], object] | None = None
        self._lock = threading.Lock()  # one landing at a time (poll thread, load calls)
        self._problems: dict[str, str] = {}
        self._configs: dict[str, model_config_pb2.ModelConfig] = {}
        self._seen: dict[str, _Fingerprint] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- Component ------------------------------------------------------------------------------

    def warm_up(self) -> None:
        if not self.root.is_dir():
            log.error("model repository %s: not a directory; no model read from it", self.root)
        elif self.mode != "explicit":
            landed = self.scan()
            log.info("model repository %s: %d model(s) landed", self.root, len(landed))
            for name in landed:
                self._warm(name)
        if self.mode == "poll" and self._thread is None:
            self._thread = threading.Thread(
                target=self._poll, name="model-repository-poll", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    # -- what callers ask -----------------------------------------------------------------------

    def problems(self) -> dict[str, str]:
        """Each model directory's problems at its last reading ("; "-separated); none: absent."""
        with self._lock:
            return dict(self._problems)

    def config(self, model: str) -> model_config_pb2.ModelConfig | None:
        """The model's parsed config.pbtxt at its last reading, None without one."""
        with self._lock:
            found = self._configs.get(model)
        if found is None:
            return None
        copy = model_config_pb2.ModelConfig()
        copy.CopyFrom(found)
        return copy

    def batching(self, model: str) -> Batching | None:
        """(max_batch_size, max_queue_delay_us, preferred sizes) when the model's config asks
        for dynamic batching, else None."""
        config = self._configs.get(model)
        if config is None or config.max_batch_size <= 0:
            return None
        if config.WhichOneof("scheduling_choice") != "dynamic_batching":
            return None
        dyn = config.dynamic_batching
        return (
            int(config.max_batch_size),
            int(dyn.max_queue_delay_microseconds),
            tuple(int(n) for n in dyn.preferred_batch_size),
        )

    def models(self) -> list[str]:
        """The model directories in the repository now, sorted."""
        return [p.name for p in self._model_dirs()]

    def load(self, model: str) -> bool:
        """Read ``<root>/<model>`` again and land it (RepositoryModelLoad; every mode).

        False when the repository has no such directory (the registry's own model, if any, is
        the caller's to load); FailedPrecondition naming the problems when no version landed.
        """
        directory = self.root / model
        if not model or model.startswith(".") or "/" in model or not directory.is_dir():
            return False
        with self._lock:
            landing = self._land(model, directory)
        if not landing.landed:
            problem = "; ".join(landing.problems) or "no version to serve"
            raise errors.FailedPrecondition(f"model_name: failed to load {model!r}: {problem}")
        return True

    def scan(self) -> list[str]:
        """Land every model directory whose files changed since its last reading (all of them
        the first time); returns the names of those read."""
        read: list[str] = []
        present: set[str] = set()
        for directory in self._model_dirs():
            name = directory.name
            present.add(name)
            with self._lock:
                if self._fingerprint(directory) == self._seen.get(name):
                    continue
                self._land(name, directory)
            read.append(name)
        with self._lock:
            gone = sorted(set(self._seen) - present)
            for name in gone:
                log.warning(
                    "model repository: %s/%s is gone; unloading it (the registry keeps its "
                    "versions)",
                    self.root,
                    name,
                )
                self._seen.pop(name, None)
                self._problems.pop(name, None)
                self._configs.pop(name, None)
        for name in gone:
            self._remove(name)
        return read

    def _remove(self, name: str) -> None:
        if self.removed is None:
            return
        try:
            self.removed(name)
        except Exception as exc:
            log.error("model %r: could not be unloaded: %s", name, exc)

    # -- reading and landing --------------------------------------------------------------------

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                for name in self.scan():
                    self._warm(name)  # a new model is loaded now, not at its first request
            except Exception:
                log.exception("model repository %s: poll failed", self.root)

    def _warm(self, name: str) -> None:
        if self.prepare is None:
            return
        try:
            self.prepare(name)
        except Exception as exc:
            log.error("model %r: could not be prepared at start: %s", name, exc)

    def _model_dirs(self) -> list[Path]:
        try:
            entries = sorted(self.root.iterdir())
        except OSError:
            return []
        return [p for p in entries if p.is_dir() and not p.name.startswith(".")]

    @staticmethod
    def _fingerprint(directory: Path) -> _Fingerprint:
        stamps: list[tuple[str, int, int]] = []
        try:
            for entry in directory.iterdir():
                st = entry.stat()
                stamps.append((entry.name, st.st_mtime_ns, st.st_size))
                if entry.is_dir():
                    for inner in entry.iterdir():
                        ist = inner.stat()
                        stamps.append((f"{entry.name}/{inner.name}", ist.st_mtime_ns, ist.st_size))
        except OSError:
            pass  # a directory changing under us: the next scan sees it settled
        return tuple(sorted(stamps))

    def _land(self, name: str, directory: Path) -> _Landing:
        """Read one model directory and land it; records its problems. Holds ``_lock``."""
        fingerprint = self._fingerprint(directory)
        landing = _Landing()
        try:
            landing.config = read_config(directory, name)
            self._land_versions(name, directory, landing)
        except (ConfigError, errors.LLMOptError, OSError) as exc:
            landing.problems.append(_reason(exc))
        except Exception as exc:  # one model's surprise must not stop the others
            log.exception("model repository: landing %s failed", directory)
            landing.problems.append(f"cannot land it: {_reason(exc)}")
        self._seen[name] = fingerprint
        if landing.config is not None:
            self._configs[name] = landing.config
        else:
            self._configs.pop(name, None)
        if landing.problems:
            self._problems[name] = "; ".join(landing.problems)
            log.error("model repository: %s: %s", directory, "; ".join(landing.problems))
        else:
            self._problems.pop(name, None)
        return landing

    @staticmethod
    def _filename(landing: _Landing) -> str:
        config = landing.config
        return (config.default_model_filename if config else "") or DEFAULT_MODEL_FILENAME

    def _land_versions(self, name: str, directory: Path, landing: _Landing) -> None:
        config = landing.config
        versions: list[int] = []
        for entry in sorted(p for p in directory.iterdir() if p.is_dir()):
            if entry.name.startswith("."):
                continue
            number = _version_number(entry.name)
            if number is None:
                landing.problems.append(
                    f"{entry.name}: not a version (version directories are positive integers)"
                )
            else:
                versions.append(number)
        if not versions:
            landing.problems.append(
                f"no version directory (<version>/{self._filename(landing)}, versions from 1)"
            )
            return
        allowed = _allowed(config, versions)
        if not allowed:
            landing.problems.append(
                f"version_policy: allows none of the versions present ({_listed(versions)})"
            )
            return
        filename = self._filename(landing)
        try:
            naming.check("model", name)
        except errors.LLMOptError as exc:
            landing.problems.append(str(exc))
            return
        for number in sorted(allowed):
            try:
                mv, new = self._land_version(
                    name, directory / str(number) / filename, number, config
                )
            except (errors.LLMOptError, OSError, ConfigError) as exc:
                landing.problems.append(f"version {number}: {_reason(exc)}")
                continue
            landing.landed[number] = mv
            if new:
                landing.registered.add(number)
        if landing.landed:
            self._crown(name, landing)

    def _ensure_model(self, name: str) -> bool:
        """Create the model when the registry has none of that name; whether it did."""
        try:
            self.registry.get_model(name)
            return False
        except errors.NotFound:
            try:
                self.registry.create_model(
                    name, f"from the model repository {self.root}", tags={"source": ACTOR}
                )
            except errors.AlreadyExists:  # made meanwhile
                return False
            return True

    def _land_version(
        self, name: str, file: Path, number: int, config: model_config_pb2.ModelConfig | None
    ) -> tuple[ModelVersion, bool]:
        """The registry version holding ``file``'s bytes, uploading them when new (and when
        the config's names are the graph's)."""
        if not file.is_file():
            raise ConfigError(f"no {file.name} in {file.parent}")
        data = file.read_bytes()
        try:
            found = self.registry.find_version(name, hashlib.sha256(data).hexdigest())
        except errors.NotFound:
            found = None  # no such model yet
        if found is not None:
            if config is not None:
                _check_names(
                    config, [s.name for s in found.inputs], [s.name for s in found.outputs]
                )
            return found, False
        if config is not None and (config.input or config.output):
            names = _graph_names(data)
            if names is not None:  # else the upload says why it is not ONNX
                _check_names(config, *names)
        created = self._ensure_model(name)
        last = self.registry.get_model(name).latest_version
        try:
            mv = self.registry.upload_version(
                name,
                data,
                VersionMetadata(
                    tags={VERSION_TAG: str(number)},
                    description=f"{file} in the model repository",
                ),
                actor=ACTOR,
                number=number if number > last else None,
            )
        except BaseException:
            if created and self.registry.get_model(name).latest_version == 0:
                self.registry.delete_model(name)  # leave no empty model behind
            raise
        if mv.version != number:
            log.warning(
                "model %r: repository version %d registered as version %d (numbers up to %d "
                "were used already)",
                name,
                number,
                mv.version,
                last,
            )
        else:
            log.info("model %r: repository version %d registered", name, number)
        return mv, True

    def _crown(self, name: str, landing: _Landing) -> None:
        """Point champion at the highest version landed, unless an operator chose another
        allowed one (see the module docstring)."""
        top = max(landing.landed)
        target = landing.landed[top].version
        current = self.registry.aliases(name).get(CHAMPION)
        allowed = {mv.version for mv in landing.landed.values()}
        if current == target:
            return
        if current is not None and top not in landing.registered and current in allowed:
            return
        self.registry.set_alias(
            name,
            CHAMPION,
            target,
            reason=f"model repository: {self.root / name / str(top)}",
            actor=ACTOR,
        )
        log.info("model %r: champion is version %d (repository version %d)", name, target, top)


def read_config(directory: Path, name: str) -> model_config_pb2.ModelConfig | None:
    """The model's config.pbtxt, parsed and checked; None when there is none."""
    path = directory / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{CONFIG_FILE}: cannot read it ({exc})") from None
    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(_colon_lists(text), config, allow_unknown_field=True)
    except text_format.ParseError as exc:
        raise ConfigError(f"{CONFIG_FILE}: does not parse ({exc})") from None
    if config.name and config.name != name:
        raise ConfigError(
            f"{CONFIG_FILE}: name {config.name!r} is not the model directory's name {name!r}"
        )
    filename = config.default_model_filename
    if filename and (Path(filename).name != filename or filename in (".", "..")):
        raise ConfigError(
            f"{CONFIG_FILE}: default_model_filename {filename!r}: a file name in the version "
            "directory, not a path"
        )
    if config.platform and config.platform != PLATFORM:
        raise ConfigError(f"{CONFIG_FILE}: platform {config.platform!r}: only {PLATFORM!r}")
    if config.backend and config.backend != BACKEND:
        raise ConfigError(f"{CONFIG_FILE}: backend {config.backend!r}: only {BACKEND!r}")
    if config.max_batch_size < 0:
        raise ConfigError(f"{CONFIG_FILE}: max_batch_size {config.max_batch_size}: at least 0")
    if config.WhichOneof("scheduling_choice") == "dynamic_batching":
        if config.max_batch_size == 0:
            raise ConfigError(
                f"{CONFIG_FILE}: dynamic_batching needs max_batch_size > 0 (the batch dimension)"
            )
        for size in config.dynamic_batching.preferred_batch_size:
            if not 1 <= size <= config.max_batch_size:
                raise ConfigError(
                    f"{CONFIG_FILE}: dynamic_batching.preferred_batch_size {size}: "
                    f"from 1 to max_batch_size ({config.max_batch_size})"
                )
    policy = config.version_policy
    if policy.WhichOneof("policy_choice") == "latest" and policy.latest.num_versions < 1:
        raise ConfigError(f"{CONFIG_FILE}: version_policy.latest.num_versions: at least 1")
    return config


# A quoted string (left as it is), or a field name followed by a list without a colon
_STRING_OR_BARE_LIST = re.compile(
    r""""(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|#[^\n]*|\b([A-Za-z_]\w*)(\s*)\["""
)


def _colon_lists(text: str) -> str:
    """``field [ {...} ]`` written as ``field: [ {...} ]``: the same in the text format, but
    protobuf skips an unknown field (``instance_group [ ... ]``, common in Triton's configs)
    only in the second form."""
    return _STRING_OR_BARE_LIST.sub(
        lambda m: f"{m.group(1)}:{m.group(2)}[" if m.group(1) else m.group(0), text
    )


def _version_number(text: str) -> int | None:
    if not text.isascii() or not text.isdigit():
        return None
    number = int(text)
    return number if number > 0 else None


def _allowed(config: model_config_pb2.ModelConfig | None, versions: Iterable[int]) -> list[int]:
    """The versions the config's version policy serves (Triton's default: the latest one)."""
    present = sorted(set(versions))
    policy = config.version_policy if config is not None else None
    choice = policy.WhichOneof("policy_choice") if policy is not None else None
    if policy is not None and choice == "all":
        return present
    if policy is not None and choice == "specific":
        wanted = set(policy.specific.versions)
        return [v for v in present if v in wanted]
    keep = policy.latest.num_versions if policy is not None and choice == "latest" else 1
    return present[-keep:] if present else []


def _graph_names(data: bytes) -> tuple[list[str], list[str]] | None:
    """The ONNX graph's (input, output) names, initializers left out; None when not ONNX."""
    import onnx  # as the registry's check does: only when a file is read

    try:
        graph = onnx.load_model_from_string(data).graph
    except Exception:
        return None
    initializers = {t.name for t in graph.initializer}
    inputs = [v.name for v in graph.input if v.name not in initializers]
    return inputs, [v.name for v in graph.output]


def _check_names(
    config: model_config_pb2.ModelConfig, inputs: list[str], outputs: list[str]
) -> None:
    """The config's input and output names are the graph's."""
    for kind, declared, actual in (
        ("input", [i.name for i in config.input], inputs),
        ("output", [o.name for o in config.output], outputs),
    ):
        missing = [n for n in declared if n not in actual]
        if missing:
            raise ConfigError(
                f"{CONFIG_FILE} {kind} {', '.join(repr(n) for n in missing)} not in the "
                f"ONNX graph, whose {kind}s are {', '.join(repr(n) for n in actual) or 'none'}"
            )


def _listed(numbers: Iterable[int]) -> str:
    return ", ".join(str(n) for n in sorted(numbers))


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
