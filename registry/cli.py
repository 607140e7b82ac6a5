"""``llmopt-registry``: manage the model registry of a running llmopt-server over gRPC.

Examples::

    llmopt-registry create-model quality --task regression
    llmopt-registry register quality model.onnx --alias challenger --metric rmse=0.12
    llmopt-registry register quality estimator.joblib --create     # exported with skl2onnx
    llmopt-registry versions quality
    llmopt-registry promote quality --reason "beats champion on holdout"
    llmopt-registry history quality --json
    llmopt-registry --tls-ca ca.pem audit --method /llmopt.v1.Registry/Promote --since 2026-01-01
    llmopt-registry decisions doc-router --since 2026-01-01 > decisions.jsonl

Over TLS, ``--tls-ca`` names the CA that signed the server's certificate (``--tls-cert`` and
``--tls-key``: the client's certificate for mTLS); ``--token`` (better: env ``LLMOPT_TOKEN``,
which keeps it out of the process list) is sent as ``authorization: Bearer <token>``.

It talks to the server only through the Python client (``llmopt.client.Client``); ``--json``
prints the server's answer as the proto JSON mapping (field names as in the .proto).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import getpass
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

from llmopt.client import (
    DEFAULT_ADDRESS,
    AliasChange,
    AlreadyExists,
    AuditEntry,
    Client,
    ClientError,
    Model,
    ModelVersion,
    TensorSpec,
)
from llmopt.client import types as ct

TASKS = ("regression", "classification", "ranking", "policy", "other")
ONNX_SUFFIXES = (".onnx",)


class CliError(Exception):
    """A problem with the command line or a local file (exit status 2)."""


# -- argument helpers ---------------------------------------------------------------------------


def _pairs(items: Sequence[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--{what} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _metrics(items: Sequence[str] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in _pairs(items, "metric").items():
        try:
            out[key] = float(value)
        except ValueError:
            raise CliError(f"--metric {key}={value!r}: the value must be a number") from None
    return out


def _ref(text: str) -> tuple[int, str]:
    """ "3" -> version 3; "@champion" or "champion" -> alias."""
    if text.isdigit():
        return int(text), ""
    return 0, text.removeprefix("@")


def _time_arg(text: str | None, flag: str) -> float | None:
    """Seconds since the epoch from a number of seconds or an ISO 8601 time (UTC when it names
    no zone): "1767225600", "2026-01-01", "2026-01-01T12:00:00Z"."""
    if text is None:
        return None
    with contextlib.suppress(ValueError):
        return float(text)
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"{flag} {text!r}: expected seconds since the epoch or ISO 8601") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def _artifact(args: argparse.Namespace) -> tuple[bytes | Path, str]:
    """What to upload: an .onnx file as is (streamed from disk), anything else loaded as a
    scikit-learn estimator (joblib or pickle) and exported. Returns (file or bytes, note)."""
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    if path.suffix.lower() in ONNX_SUFFIXES:
        return path, ""
    import joblib

    from llmopt.registry.export import export_sklearn

    try:
        estimator = joblib.load(path)
    except Exception as exc:
        raise CliError(f"{path}: not an .onnx file, and not a joblib/pickle file ({exc})") from None
    result = export_sklearn(estimator, args.n_features, target_opset=args.opset)
    note = (
        f"exported {type(estimator).__name__} with skl2onnx (opset {result.target_opset}, "
        f"max |onnxruntime - sklearn| {result.max_abs_error:.3g})"
    )
    return result.onnx_bytes, note


# -- output -------------------------------------------------------------------------------------

# Client value type -> its proto message, for ``--json`` (the proto JSON mapping of the answer).
_MESSAGES: dict[type, Callable[[Any], Any]] = {
    Model: ct.to_model,
    ModelVersion: ct.to_version,
    AliasChange: ct.to_alias_change,
    AuditEntry: ct.to_audit_entry,
}


def _as_dict(value: Any) -> Any:
    """The JSON of an answer: a client value as its message's JSON (every field, names as in the
    .proto, int64 as strings), inside the dicts and lists that stand for the response message."""
    to_message = _MESSAGES.get(type(value))
    if to_message is not None:
        return MessageToDict(
            to_message(value),
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
    if isinstance(value, dict):
        return {k: _as_dict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_dict(v) for v in value]
    return value


def _fmt_version(v: int | None) -> str:
    return str(v) if v else "-"


def _when(seconds: float) -> str:
    return ct.to_timestamp(seconds).ToJsonString()


def _spec(s: TensorSpec) -> str:
    names = [*s.dim_names, *[""] * len(s.shape)]
    dims = [str(d) if d >= 0 else (names[i] or "?") for i, d in enumerate(s.shape)]
    dtype = s.dtype if s.dtype != "unknown" else "data_type_unspecified"
    return f"{s.name}: {dtype}[{', '.join(dims)}]"


def _show_model(m: Model) -> str:
    aliases = ", ".join(f"@{a}={v}" for a, v in sorted(m.aliases.items())) or "-"
    tags = ", ".join(f"{k}={v}" for k, v in sorted(m.tags.items())) or "-"
    task = m.task or "model_task_unspecified"
    return (
        f"{m.name}  task={task}  latest={_fmt_version(m.latest_version)}  "
        f"aliases: {aliases}  tags: {tags}" + (f"\n  {m.description}" if m.description else "")
    )


def _show_version(v: ModelVersion) -> str:
    lines = [
        f"{v.model} version {v.version}"
        + (f" ({v.semver})" if v.semver else "")
        + (f"  aliases: {', '.join('@' + a for a in v.aliases)}" if v.aliases else ""),
        f"  sha256 {v.sha256}  {v.size_bytes} bytes  created {_when(v.create_time)}",
        f"  inputs:  {'; '.join(_spec(s) for s in v.inputs)}",
        f"  outputs: {'; '.join(_spec(s) for s in v.outputs)}",
    ]
    if v.parent_version:
        lines.append(f"  parent version {v.parent_version}")
    if v.metrics:
        lines.append("  metrics: " + ", ".join(f"{k}={x:g}" for k, x in sorted(v.metrics.items())))
    if v.tags:
        lines.append("  tags: " + ", ".join(f"{k}={x}" for k, x in sorted(v.tags.items())))
    if v.description:
        lines.append(f"  {v.description}")
    return "\n".join(lines)


def _show_change(c: AliasChange) -> str:
    who = f" by {c.actor}" if c.actor else ""
    why = f": {c.reason}" if c.reason else ""
    return (
        f"#{c.id} {_when(c.time)} {c.model} @{c.alias} "
        f"{_fmt_version(c.from_version)} -> {_fmt_version(c.to_version)} ({c.kind}){who}{why}"
    )


def _show_entry(e: AuditEntry) -> str:
    who = e.principal or "-"
    return f"{_when(e.time)} {who} {e.method} {e.target or '-'} {e.code}"


# -- commands -----------------------------------------------------------------------------------
# Each returns (the answer for --json, the text to print).

Answer = tuple[Any, str]


def cmd_create_model(c: Client, a: argparse.Namespace) -> Answer:
    m = c.create_model(
        a.name, description=a.description, task=a.task or "", tags=_pairs(a.tag, "tag")
    )
    return m, _show_model(m)


def cmd_model(c: Client, a: argparse.Namespace) -> Answer:
    m = c.get_model(a.name)
    return m, _show_model(m)


def cmd_models(c: Client, a: argparse.Namespace) -> Answer:
    models = c.list_models(_pairs(a.tag, "tag"))
    text = "\n".join(_show_model(m) for m in models) or "(no models)"
    return {"models": models, "next_page_token": ""}, text


def cmd_delete_model(c: Client, a: argparse.Namespace) -> Answer:
    n = c.delete_model(a.name, force=a.force)
    return {"versions_deleted": str(n)}, f"deleted model {a.name} and {n} version(s)"


def cmd_register(c: Client, a: argparse.Namespace) -> Answer:
    artifact, note = _artifact(a)
    if a.create:
        with contextlib.suppress(AlreadyExists):
            c.create_model(a.model, task=a.task or "")
    v = c.upload_onnx(
        a.model,
        artifact,
        semver=a.semver,
        parent_version=a.parent,
        metrics=_metrics(a.metric),
        tags=_pairs(a.tag, "tag"),
        description=a.description,
        alias=a.alias,
        chunk_size=a.chunk_kib * 1024,
        background=_load_npy(a.background) if a.background else None,
    )
    return v, (note + "\n" if note else "") + _show_version(v)


def _load_npy(path: str) -> Any:
    """A background sample saved with numpy.save (no pickles)."""
    import numpy as np

    return np.load(path, allow_pickle=False)


def cmd_versions(c: Client, a: argparse.Namespace) -> Answer:
    versions: list[ModelVersion] = []
    tags = _pairs(a.tag, "tag")
    token = ""
    while len(versions) < a.limit:
        page = c.list_versions_page(
            a.model,
            page_size=min(1000, a.limit - len(versions)),
            page_token=token,
            tag_filter=tags,
        )
        versions.extend(page.items)
        token = page.next_page_token
        if not token:
            break
    lines = [
        f"{v.version:>6}  {v.semver or '-':<10} {v.size_bytes:>12} B  {v.sha256[:12]}  "
        f"{' '.join('@' + x for x in v.aliases)}"
        for v in versions
    ]
    return {"versions": versions, "next_page_token": token}, "\n".join(lines) or "(no versions)"


def cmd_version(c: Client, a: argparse.Namespace) -> Answer:
    version, alias = _ref(a.ref)
    v = c.get_version(a.model, version, alias=alias)
    return v, _show_version(v)


def cmd_download(c: Client, a: argparse.Namespace) -> Answer:
    version, alias = _ref(a.ref)
    out = Path(a.output)
    v = c.download_to_file(a.model, out, version, alias=alias)
    return v, f"wrote {v.model} version {v.version} ({v.size_bytes} bytes) to {out}"


def cmd_delete_version(c: Client, a: argparse.Namespace) -> Answer:
    c.delete_version(a.model, a.version)
    return {}, f"deleted {a.model} version {a.version}"


def cmd_set_alias(c: Client, a: argparse.Namespace) -> Answer:
    r = c.set_alias(a.model, a.alias.removeprefix("@"), a.version, reason=a.reason)
    return r, _show_change(r)


def cmd_delete_alias(c: Client, a: argparse.Namespace) -> Answer:
    r = c.delete_alias(a.model, a.alias.removeprefix("@"), reason=a.reason)
    return r, _show_change(r)


def cmd_promote(c: Client, a: argparse.Namespace) -> Answer:
    r = c.promote_challenger(a.model, reason=a.reason)
    answer = {"champion": r.champion, "challenger_removed": r.challenger_removed}
    return answer, _show_change(r.champion) + "\n" + _show_change(r.challenger_removed)


def cmd_rollback(c: Client, a: argparse.Namespace) -> Answer:
    r = c.rollback(a.model, reason=a.reason)
    return r, _show_change(r)


def cmd_history(c: Client, a: argparse.Namespace) -> Answer:
    page = c.alias_history_page(a.model, (a.alias or "").removeprefix("@"), page_size=a.limit)
    text = "\n".join(_show_change(x) for x in page.items) or "(no alias changes)"
    return {"changes": page.items, "next_page_token": page.next_page_token}, text


def cmd_audit(c: Client, a: argparse.Namespace) -> Answer:
    page = c.get_audit_log(
        principal=a.principal,
        method=a.method,
        target=a.target,
        since=_time_arg(a.since, "--since"),
        until=_time_arg(a.until, "--until"),
        page_size=a.limit,
        page_token=a.page_token,
    )
    text = "\n".join(_show_entry(e) for e in page.items) or "(no audit entries)"
    if page.next_page_token:
        text += f"\n(more: --page-token {page.next_page_token})"
    return {"entries": page.items, "next_page_token": page.next_page_token}, text


_STREAMED = object()  # a command that printed its own output (``decisions``)


def _plain_json(value: Any) -> Any:
    """A client value as JSON-ready data: dataclasses as dicts, tuples as lists, and NaN and
    the infinities as the strings protobuf's JSON mapping uses ("NaN", "Infinity",
    "-Infinity"), so that every line is strict JSON."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    return value


def cmd_decisions(c: Client, a: argparse.Namespace) -> Answer:
    """Every decision of a bandit in the range as JSON lines, printed page by page as they
    come (one object per decision: every field, explanation included)."""
    for d in c.iter_decisions(
        a.bandit,
        start_time=_time_arg(a.since, "--since"),
        end_time=_time_arg(a.until, "--until"),
        page_size=a.page_size,
    ):
        sys.stdout.write(json.dumps(_plain_json(d), separators=(",", ":")) + "\n")
    sys.stdout.flush()
    return _STREAMED, ""


# -- parser -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--address",
        default=argparse.SUPPRESS,
        help=f"server address [env LLMOPT_ADDRESS, default {DEFAULT_ADDRESS}]",
    )
    common.add_argument(
        "--actor",
        default=argparse.SUPPRESS,
        help="who makes the change, recorded in alias history "
        "[env LLMOPT_ACTOR, default the login name]",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the server's answer as JSON",
    )
    common.add_argument(
        "--tls-ca",
        default=argparse.SUPPRESS,
        metavar="PEM",
        help="talk TLS, verifying the server against this CA certificate file",
    )
    common.add_argument(
        "--tls-cert",
        default=argparse.SUPPRESS,
        metavar="PEM",
        help="client certificate file for mTLS (with --tls-key; implies TLS)",
    )
    common.add_argument(
        "--tls-key", default=argparse.SUPPRESS, metavar="PEM", help="key of --tls-cert"
    )
    common.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help="bearer token sent with every call [env LLMOPT_TOKEN, which keeps it out of ps]",
    )
    common.add_argument(
        "--timeout",
        type=float,
        default=argparse.SUPPRESS,
        help="seconds to wait for each call [default 60]",
    )
    parser = argparse.ArgumentParser(
        prog="llmopt-registry",
        parents=[common],
        description="Manage the model registry of a running llmopt-server.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[..., Any], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(fn=fn)
        return p

    p = add("create-model", cmd_create_model, "register a new model name")
    p.add_argument("name")
    p.add_argument("--description", default="")
    p.add_argument("--task", choices=TASKS)
    p.add_argument("--tag", action="append", metavar="KEY=VALUE")

    p = add("models", cmd_models, "list models")
    p.add_argument("--tag", action="append", metavar="KEY=VALUE", help="only models with the tag")

    p = add("model", cmd_model, "show one model, with its aliases")
    p.add_argument("name")

    p = add("delete-model", cmd_delete_model, "delete a model (--force: with its versions)")
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="also delete its versions and aliases")

    p = add(
        "register",
        cmd_register,
        "upload a new version: an .onnx file, or a joblib/pickle scikit-learn estimator "
        "(exported to ONNX with skl2onnx and checked against scikit-learn first; loading a "
        "pickle runs its code, so register only files you trust)",
    )
    p.add_argument("model")
    p.add_argument("file")
    p.add_argument("--create", action="store_true", help="create the model if it does not exist")
    p.add_argument("--task", choices=TASKS, help="task of the model created by --create")
    p.add_argument("--semver", default="")
    p.add_argument("--parent", type=int, default=0, help="parent version (lineage)")
    p.add_argument("--metric", action="append", metavar="NAME=NUMBER")
    p.add_argument("--tag", action="append", metavar="KEY=VALUE")
    p.add_argument("--description", default="")
    p.add_argument("--alias", default="", help="point this alias at the new version")
    p.add_argument("--n-features", type=int, help="estimator input width (default: n_features_in_)")
    p.add_argument("--opset", type=int, default=17, help="ONNX target opset for exports")
    p.add_argument("--chunk-kib", type=int, default=1024, help="upload chunk size in KiB")
    p.add_argument(
        "--background",
        metavar="FILE.npy",
        help="rows of the model's input (at most 1,000) kept as the baseline of Explain",
    )

    p = add("versions", cmd_versions, "list a model's versions, newest first")
    p.add_argument("model")
    p.add_argument("--tag", action="append", metavar="KEY=VALUE", help="only versions with the tag")
    p.add_argument("--limit", type=int, default=100)

    p = add("version", cmd_version, "show one version (a number, or @alias)")
    p.add_argument("model")
    p.add_argument("ref", metavar="VERSION|@ALIAS")

    p = add("download", cmd_download, "download a version's ONNX file")
    p.add_argument("model")
    p.add_argument("ref", metavar="VERSION|@ALIAS")
    p.add_argument("-o", "--output", required=True)

    p = add("delete-version", cmd_delete_version, "delete a version no alias points at")
    p.add_argument("model")
    p.add_argument("version", type=int)

    p = add("set-alias", cmd_set_alias, "point an alias (champion, challenger, ...) at a version")
    p.add_argument("model")
    p.add_argument("alias")
    p.add_argument("version", type=int)
    p.add_argument("--reason", default="")

    p = add("delete-alias", cmd_delete_alias, "remove an alias")
    p.add_argument("model")
    p.add_argument("alias")
    p.add_argument("--reason", default="")

    p = add("promote", cmd_promote, "make the challenger the champion (challenger is removed)")
    p.add_argument("model")
    p.add_argument("--reason", default="")

    p = add("rollback", cmd_rollback, "move the champion back to its previous version")
    p.add_argument("model")
    p.add_argument("--reason", default="")

    p = add("history", cmd_history, "show alias changes, newest first")
    p.add_argument("model")
    p.add_argument("--alias", help="only this alias")
    p.add_argument("--limit", type=int, default=100)

    p = add("audit", cmd_audit, "show the audit trail of admin calls, newest first (admin scope)")
    p.add_argument("--principal", default="", help="only this principal's calls")
    p.add_argument("--method", default="", help="only this RPC, e.g. /llmopt.v1.Registry/Promote")
    p.add_argument("--target", default="", help="only calls about this model, bandit, ...")
    p.add_argument("--since", help="from this time on (ISO 8601, UTC by default, or epoch s)")
    p.add_argument("--until", help="before this time (ISO 8601, UTC by default, or epoch s)")
    p.add_argument("--limit", type=int, default=100, help="entries per page (at most 1000)")
    p.add_argument("--page-token", default="", help="next_page_token of a previous page")

    p = add(
        "decisions",
        cmd_decisions,
        "export a bandit's decisions, oldest first, as JSON lines (one per decision, with its "
        "context, scores, explanation, reward and outcome)",
    )
    p.add_argument("bandit")
    p.add_argument(
        "--since", help="made at or after this time (ISO 8601, UTC by default, or epoch s)"
    )
    p.add_argument("--until", help="made before this time (ISO 8601, UTC by default, or epoch s)")
    p.add_argument("--page-size", type=int, default=1000, help="decisions per call (at most 1000)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.address = getattr(args, "address", None) or os.environ.get(
        "LLMOPT_ADDRESS", DEFAULT_ADDRESS
    )
    args.actor = getattr(args, "actor", None) or os.environ.get("LLMOPT_ACTOR") or _login()
    args.json = getattr(args, "json", False)
    args.timeout = getattr(args, "timeout", None) or 60.0
    token = getattr(args, "token", None) or os.environ.get("LLMOPT_TOKEN") or None
    try:
        with _connect(args, token) as client:
            answer, text = args.fn(client, args)
    except ClientError as exc:
        print(f"error: {exc.code.name}: {exc.message}", file=sys.stderr)
        return 1
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # export failures and local file problems
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if answer is _STREAMED:
        return 0
    print(json.dumps(_as_dict(answer), indent=2) if args.json else text)
    return 0


def _connect(args: argparse.Namespace, token: str | None) -> Client:
    """The client of the command line's address, TLS files and token; a TLS file that can not
    be read, or a certificate without its key, is a CliError naming it."""
    try:
        return Client(
            args.address,
            timeout=args.timeout,
            upload_timeout=args.timeout,
            actor=args.actor,
            tls_ca=getattr(args, "tls_ca", None),
            tls_cert=getattr(args, "tls_cert", None),
            tls_key=getattr(args, "tls_key", None),
            token=token,
        )
    except OSError as exc:
        raise CliError(f"{exc.filename}: {exc.strerror}") from None
    except ValueError as exc:
        raise CliError(str(exc).replace("tls_", "--tls-")) from None


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return ""


if __name__ == "__main__":
    sys.exit(main())
