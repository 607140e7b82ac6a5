"""Settings: command-line flags, then LLMOPT_* environment variables, then defaults."""

from __future__ import annotations

import argparse
import gc
import ipaddress
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NoReturn

from llmopt import __version__

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
SYNC_MODES = ("normal", "full")
ONNX_PROVIDERS = ("cpu", "cuda", "tensorrt", "rocm", "openvino", "dnnl")
REFLECTION_MODES = ("open", "auth", "off")
MODEL_CONTROL_MODES = ("none", "poll", "explicit")
LOOPBACK_HOSTS = ("localhost", "::1", "[::1]")


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 50051
    data_dir: Path = Path("data")
    workers: int = 4
    max_concurrent_rpcs: int = 256
    max_concurrent_streams: int = 32
    stream_idle_seconds: float = 30.0
    max_message_mb: int = 64
    metrics_port: int = 0
    log_level: str = "info"
    log_format: str = "text"
    grace_seconds: float = 10.0
    sqlite_sync: str = "normal"
    max_loaded_models: int = 32
    model_idle_seconds: float = 600.0
    onnx_intra_op_threads: int = 1
    onnx_inter_op_threads: int = 1
    onnx_providers: str = "cpu"
    shadow_queue_size: int = 1024
    feature_cache_entities: int = 100_000
    gc_threshold: int = 700
    demo: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    auth_tokens: Path | None = None
    auth_jwt_key: Path | None = None
    auth_jwt_issuer: str = ""
    auth_jwt_audience: str = ""
    reflection: str = "open"
    require_auth: bool = False
    model_repository: Path | None = None
    model_control_mode: str = "none"
    repository_poll_seconds: float = 15.0

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    @property
    def tls(self) -> bool:
        """Whether the server speaks TLS (``--tls-cert`` and ``--tls-key``)."""
        return self.tls_cert is not None and self.tls_key is not None

    @property
    def auth(self) -> bool:
        """Whether calls must authenticate (``--auth-tokens`` or ``--auth-jwt-key``)."""
        return self.auth_tokens is not None or self.auth_jwt_key is not None

    @property
    def loopback(self) -> bool:
        """Whether ``host`` is a loopback address (only this machine can connect)."""
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost; 0.0.0.0 and every other name or address are not."""
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class SettingsError(ValueError):
    """A setting's value is out of range or malformed."""


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise SettingsError(f"expected an integer, got {text!r}") from None
        if not lo <= value <= hi:
            raise SettingsError(f"expected an integer in [{lo}, {hi}], got {value}")
        return value

    return parse


def _float_in(lo: float, hi: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise SettingsError(f"expected a number, got {text!r}") from None
        if not lo <= value <= hi:
            raise SettingsError(f"expected a number in [{lo}, {hi}], got {value}")
        return value

    return parse


def _choice(options: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.lower()
        if value not in options:
            raise SettingsError(f"expected one of {', '.join(options)}, got {text!r}")
        return value

    return parse


def _host(text: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise SettingsError(f"expected a host name or address, got {text!r}")
    return text


def _providers(text: str) -> str:
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not names:
        raise SettingsError("expected at least one execution provider")
    for name in names:
        if name not in ONNX_PROVIDERS:
            known = ", ".join(ONNX_PROVIDERS)
            raise SettingsError(f"expected providers among {known}, got {name!r}")
    return ",".join(names)


BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _bool(text: str) -> bool:
    value = BOOL_WORDS.get(text.strip().lower())
    if value is None:
        raise SettingsError(f"expected true/false (or 1/0, yes/no), got {text!r}")
    return value


def _path(text: str) -> Path:
    if not text:
        raise SettingsError("expected a directory path, got an empty string")
    return Path(text)


def _directory(text: str) -> Path:
    """A directory that exists now."""
    path = _path(text)
    if not path.is_dir():
        raise SettingsError(f"{text}: not a directory")
    return path


def _readable_file(text: str) -> Path:
    """A file that exists and can be read now (the server reads it again when it changes)."""
    if not text:
        raise SettingsError("expected a file path, got an empty string")
    path = Path(text)
    try:
        with path.open("rb") as f:
            f.read(1)
    except IsADirectoryError:
        raise SettingsError(f"{text}: is a directory, not a file") from None
    except OSError as exc:
        raise SettingsError(f"cannot read {text}: {exc.strerror or exc}") from None
    return path


def _pem_file(text: str) -> Path:
    """A readable file holding PEM (a certificate, a key, or a CA bundle)."""
    path = _readable_file(text)
    try:
        head = path.read_bytes()
    except OSError as exc:  # pragma: no cover - readable a moment ago
        raise SettingsError(f"cannot read {text}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in head:
        raise SettingsError(f"{text}: not a PEM file (no -----BEGIN line)")
    return path


def _text(text: str) -> str:
    return text.strip()


# name -> (parser, help). Every field of Settings has one; the env var is LLMOPT_<NAME>.
_OPTIONS: dict[str, tuple[Callable[[str], Any], str]] = {
    "host": (_host, "address to listen on (0.0.0.0 in containers)"),
    "port": (_int_in(0, 65535), "gRPC port; 0 picks a free one and logs it"),
    "data_dir": (_path, "directory holding every SQLite database and model artifact"),
    "workers": (
        _int_in(1, 1024),
        "threads running unary RPCs; few is fastest, since Python runs one thread at a time and "
        "each extra thread adds hand-offs (raise it only for handlers that wait, not compute)",
    ),
    "max_concurrent_rpcs": (
        _int_in(1, 100_000),
        "unary RPCs in progress at once (running or queued for a worker); beyond it new ones get "
        "RESOURCE_EXHAUSTED instead of queueing; health and reflection are never refused",
    ),
    "max_concurrent_streams": (
        _int_in(1, 4096),
        "streaming RPCs open at once (PredictStream, streamed writes, uploads, downloads), each "
        "on a thread of its own; beyond it new ones get RESOURCE_EXHAUSTED; health and "
        "reflection run apart and are never refused",
    ),
    "stream_idle_seconds": (
        _float_in(0, 86400),
        "a stream that waits this long on its client (for its next message, or to read the "
        "last answer) ends with DEADLINE_EXCEEDED; 0 turns it off; health Watch never idles",
    ),
    "max_message_mb": (_int_in(1, 2047), "largest gRPC message accepted or sent, in MiB"),
    "metrics_port": (
        _int_in(0, 65535),
        "HTTP port of /metrics (Prometheus), /livez and /readyz (200 once every service is "
        "SERVING, else 503); 0 turns it off",
    ),
    "log_level": (_choice(LOG_LEVELS), "log level: " + ", ".join(LOG_LEVELS)),
    "log_format": (_choice(LOG_FORMATS), "log format: text for people, json for collectors"),
    "grace_seconds": (
        _float_in(0, 3600),
        "on SIGTERM/SIGINT, how long in-flight RPCs get to finish before they are cancelled",
    ),
    "sqlite_sync": (
        _choice(SYNC_MODES),
        "SQLite synchronous mode: normal survives a killed process (kill -9), "
        "full also survives power loss at the cost of an fsync per group commit "
        "(and an msync per journal record)",
    ),
    "max_loaded_models": (
        _int_in(1, 10_000),
        "model versions kept loaded; beyond it the least recently used version that is neither "
        "champion nor challenger is unloaded",
    ),
    "model_idle_seconds": (
        _float_in(0.1, 7 * 86400),
        "a loaded version that is neither champion nor challenger is unloaded after this idle time",
    ),
    "onnx_intra_op_threads": (
        _int_in(0, 256),
        "onnxruntime threads inside one operator (0: onnxruntime decides); 1 is best for latency",
    ),
    "onnx_inter_op_threads": (
        _int_in(0, 256),
        "onnxruntime threads across operators (0: onnxruntime decides)",
    ),
    "onnx_providers": (
        _providers,
        "onnxruntime execution providers in order of preference, comma-separated: "
        + ", ".join(ONNX_PROVIDERS),
    ),
    "shadow_queue_size": (
        _int_in(1, 1_000_000),
        "SHADOW traffic copies waiting for the challenger; "
        "when it is full, copies are dropped and counted",
    ),
    "feature_cache_entities": (
        _int_in(1, 100_000_000),
        "entities per feature set whose latest values stay in memory; beyond it the earliest "
        "added are dropped and read back from SQLite when next needed",
    ),
    "gc_threshold": (
        _int_in(100, 10_000_000),
        "container objects allocated between two young-generation runs of Python's cycle "
        "collector (Python's default); 10000 made decisions (SelectArm) a few percent slower; "
        "objects alive at start-up are frozen out of its scans",
    ),
    "demo": (
        _bool,
        "on first start (empty data dir) seed a demo: bandit llm-router, model quality-predictor "
        "with champion, challenger and a traffic split, feature set request-context",
    ),
    "tls_cert": (
        _pem_file,
        "PEM certificate (chain) the server presents; with --tls-key the server speaks TLS only; "
        "re-read when the file changes, without dropping RPCs in progress",
    ),
    "tls_key": (_pem_file, "PEM private key of --tls-cert"),
    "tls_client_ca": (
        _pem_file,
        "PEM CA certificate(s): turns on mTLS, every client must present a certificate signed "
        "by one of them (needs --tls-cert)",
    ),
    "auth_tokens": (
        _readable_file,
        "token file, one line per token: <sha256 of the token, hex> <principal> "
        "<scope>[,<scope>...] (or subject:<client cert CN> in place of the hash); # comments; "
        "re-read when it changes; turns auth on",
    ),
    "auth_jwt_key": (
        _readable_file,
        "JWT verification key: an HS256 secret, an RS256/ES256 PEM public key or a JWKS JSON "
        "file; turns auth on",
    ),
    "auth_jwt_issuer": (_text, "the JWT issuer (iss) accepted; empty: iss is not checked"),
    "auth_jwt_audience": (_text, "the JWT audience (aud) accepted; empty: aud is not checked"),
    "reflection": (
        _choice(REFLECTION_MODES),
        "server reflection: open to anyone, auth (any valid principal), or off (not registered)",
    ),
    "require_auth": (
        _bool,
        "refuse to start unless both TLS (--tls-cert, --tls-key) and auth (--auth-tokens or "
        "--auth-jwt-key) are configured",
    ),
    "model_repository": (
        _directory,
        "Triton-layout model repository read into the registry: <model>/<version>/model.onnx "
        "with an optional <model>/config.pbtxt; the same bytes give the same version, the "
        "highest version becomes champion; bad files are logged and skipped",
    ),
    "model_control_mode": (
        _choice(MODEL_CONTROL_MODES),
        "how the model repository is read, as Triton: none (once at start-up), poll (also "
        "every --repository-poll-seconds), explicit (only what RepositoryModelLoad names)",
    ),
    "repository_poll_seconds": (
        _float_in(0.1, 86400),
        "with --model-control-mode poll, seconds between two scans of the model repository",
    ),
}


def tune_gc(settings: Settings) -> None:
    """Once start-up is done: move every object alive now out of the collector's scans, and let
    ``gc_threshold`` allocations pass between young collections (the older generations keep
    Python's ratios: 10 young runs per middle one, 10 middle per old).

    The default stays Python's 700. Raising it to 10,000 once made 1,000-row feature writes
    about a fifth faster (the collector had 12-15 % of the server's CPU walking the ten
    thousand tuples each write makes), but in interleaved A/B runs SelectArm was 3-7 % slower
    (its young objects no longer fit the caches when a collection walks them). Those tuples
    are now created off the collector's lists (``llmopt.native.features.merge_latest``), which gave
    the writes the same gain at 700.
    """
    gc.freeze()
    gc.set_threshold(settings.gc_threshold, 10, 10)


def env_name(field: str) -> str:
    return "LLMOPT_" + field.upper()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(prog: str = "llmopt-server") -> argparse.ArgumentParser:
    defaults = Settings()
    parser = _Parser(
        prog=prog,
        description="ML decision and model-serving server of an LLM optimizer (gRPC).",
        epilog="Each flag can also be set through the environment variable named beside it; "
        "a flag wins over the environment, which wins over the default.",
    )
    for name, (parse, help_text) in _OPTIONS.items():

        def checked(text: str, parse: Callable[[str], Any] = parse) -> Any:
            try:
                return parse(text)
            except SettingsError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None

        shown = shown_default(getattr(defaults, name))
        # a boolean flag alone means true: --demo is --demo true
        extra: dict[str, Any] = {"nargs": "?", "const": "true"} if parse is _bool else {}
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=checked,
            default=None,
            metavar=name.upper(),
            **extra,
            help=f"{help_text} [env {env_name(name)}, default {shown}]",
        )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def parse_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Parse flags and environment into Settings; exits with code 2 and one line on a bad value."""
    parser = build_parser()
    args = parser.parse_args(argv)
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        flag_value = getattr(args, f.name)
        if flag_value is not None:
            values[f.name] = flag_value
            continue
        raw = environ.get(env_name(f.name))
        if raw is not None:
            try:
                values[f.name] = _OPTIONS[f.name][0](raw)
            except SettingsError as exc:
                parser.error(f"environment variable {env_name(f.name)}: {exc}")
    settings = Settings(**values)
    problem = _inconsistency(settings)
    if problem:
        parser.error(problem)
    return settings


def _inconsistency(settings: Settings) -> str:
    """What makes these settings unusable together, "" when nothing."""
    if (settings.tls_cert is None) != (settings.tls_key is None):
        given, missing = (
            ("--tls-cert", "--tls-key") if settings.tls_key is None else ("--tls-key", "--tls-cert")
        )
        return f"{given} needs {missing} too"
    if settings.tls_client_ca is not None and not settings.tls:
        return "--tls-client-ca (mTLS) needs --tls-cert and --tls-key"
    if settings.require_auth and not (settings.tls and settings.auth):
        missing_parts = [
            *([] if settings.tls else ["TLS (--tls-cert and --tls-key)"]),
            *([] if settings.auth else ["auth (--auth-tokens or --auth-jwt-key)"]),
        ]
        return "--require-auth: refusing to start without " + " and ".join(missing_parts)
    if settings.model_control_mode != "none" and settings.model_repository is None:
        return f"--model-control-mode {settings.model_control_mode} needs --model-repository"
    return ""


def shown_default(value: Any) -> str:
    """A default as the help and the README show it: an unset path or text is "none"."""
    return "none" if value is None or value == "" else str(value)


def settings_table() -> list[tuple[str, str, str, str]]:
    """(flag, env var, default, help) of every setting; the README table is checked against it."""
    defaults = Settings()
    return [
        (
            "--" + name.replace("_", "-"),
            env_name(name),
            shown_default(getattr(defaults, name)),
            help_text,
        )
        for name, (_, help_text) in _OPTIONS.items()
    ]


if __name__ == "__main__":  # pragma: no cover
    print(parse_settings(sys.argv[1:]))
