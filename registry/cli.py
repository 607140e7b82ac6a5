"""``llmopt-registry``: manage the model registry of a running llmopt-server over gRPC.

Examples::

    llmopt-registry create-model quality --task regression
    llmopt-registry register quality model.onnx --alias challenger --metric rmse=0.12
    llmopt-registry register quality estimator.joblib --create     # exported with skl2onnx
    llmopt-registry versions quality
    llmopt-registry promote quality --reason "beats champion on holdout"
    llmopt-registry history quality --json
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from llmopt.gen.llmopt.v1 import common_pb2, registry_pb2, registry_pb2_grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"
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


def _chunks(path: Path, chunk: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while block := f.read(chunk):
            yield block


def _artifact(args: argparse.Namespace) -> tuple[Iterator[bytes], int, str]:
    """The bytes to upload: an .onnx file as is, anything else loaded as a scikit-learn
    estimator (joblib or pickle) and exported. Returns (chunks, size, note)."""
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    chunk = args.chunk_kib * 1024
    if path.suffix.lower() in ONNX_SUFFIXES:
        return _chunks(path, chunk), path.stat().st_size, ""
    import joblib
    from llmopt.registry.export import export_sklearn

    try:
        estimator = joblib.load(path)
    except Exception as exc:
        raise CliError(f"{path}: not an .onnx file, and not a joblib/pickle file ({exc})") from None
    result = export_sklearn(estimator, args.n_features, target_opset=args.opset)
    data = result.onnx_bytes
    note = (
        f"exported {type(estimator).__name__} with skl2onnx (opset {result.target_opset}, "
        f"max |onnxruntime - sklearn| {result.max_abs_error:.3g})"
    )
    return iter([data[i : i + chunk] for i in range(0, len(data), chunk)]), len(data), note


# -- output -------------------------------------------------------------------------------------


def _as_dict(msg: Message) -> dict[str, Any]:
    return MessageToDict(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _fmt_version(v: int) -> str:
    return str(v) if v else "-"


def _spec(s: registry_pb2.TensorSpec) -> str:
    names = [*s.dim_names, *[""] * len(s.shape)]
    dims = [str(d) if d >= 0 else (names[i] or "?") for i, d in enumerate(s.shape)]
    return f"{s.name}: {common_pb2.DataType.Name(s.dtype).lower()}[{', '.join(dims)}]"


def _show_model(m: registry_pb2.Model) -> str:
    aliases = ", ".join(f"@{a}={v}" for a, v in sorted(m.aliases.items())) or "-"
    tags = ", ".join(f"{k}={v}" for k, v in sorted(m.tags.items())) or "-"
    task = registry_pb2.ModelTask.Name(m.task).lower()
    return (
        f"{m.name}  task={task}  latest={_fmt_version(m.latest_version)}  "
        f"aliases: {aliases}  tags: {tags}" + (f"\n  {m.description}" if m.description else "")
    )


def _show_version(v: registry_pb2.ModelVersion) -> str:
    lines = [
        f"{v.model} version {v.version}"
        + (f" ({v.semver})" if v.semver else "")
        + (f"  aliases: {', '.join('@' + a for a in v.aliases)}" if v.aliases else ""),
        f"  sha256 {v.sha256}  {v.size_bytes} bytes  created {v.create_time.ToJsonString()}",
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


def _show_change(c: registry_pb2.AliasChange) -> str:
    who = f" by {c.actor}" if c.actor else ""
    why = f": {c.reason}" if c.reason else ""
    return (
        f"#{c.id} {c.time.ToJsonString()} {c.model} @{c.alias} "
        f"{_fmt_version(c.from_version)} -> {_fmt_version(c.to_version)} ({c.kind}){who}{why}"
    )


# -- commands -----------------------------------------------------------------------------------


class Client:
    def __init__(self, channel: grpc.Channel, args: argparse.Namespace) -> None:
        self.stub = registry_pb2_grpc.RegistryStub(channel)
        self.timeout = args.timeout
        self.metadata = (("x-llmopt-actor", args.actor),) if args.actor else ()

    def __call__(self, method: str, request: Any) -> Any:
        return getattr(self.stub, method)(request, timeout=self.timeout, metadata=self.metadata)


def cmd_create_model(c: Client, a: argparse.Namespace) -> tuple[Message, str]:
    m = c(
        "CreateModel",
        registry_pb2.CreateModelRequest(
            name=a.name,
            description=a.description,
            tags=_pairs(a.tag, "tag"),
            task=a.task.upper() if a.task else None,
        ),
    )
    return m, _show_model(m)


def cmd_model(c: Client, a: argparse.Namespace) -> tuple[Message, str]:
    m = c("GetModel", registry_pb2.GetModelRequest(name=a.name))
    return m, _show_model(m)


def cmd_models(c: Client, a: argparse.Namespace) -> tuple[Message, str]:
    out = registry_pb2.ListModelsResponse()
    token = ""
    while True:
        page = c(
            "ListModels",
            registry_pb2.ListModelsRequest(
                page=common_pb2.PageRequest(page_size=1000, page_token=token),
                tag_filter=_pairs(a.tag, "tag"),
            ),
        )
        out.models.extend(page.models)
        token = page.next_page_token
        if not token:
            break
    return out, "\n".join(_show_model(m) for m in out.models) or "(no models)"


def cmd_delete_model(c: Client, a: argparse.Namespace) -> tuple[Message, str]:
    r = c("DeleteModel", registry_pb2.DeleteModelRequest(name=a.name, force=a.force))
    return r, f"deleted model {a.name} and {r.versions_deleted} version(s)"


def cmd_register(c: Client, a: argparse.Namespace) -> tuple[Message, str]:
    chunks, size, note = _artifact(a)
    if a.create:
        try:
            c(
                "CreateModel",
                registry_pb2.CreateModelRequest(
                    name=a.model, task=a.task.upper() if a.task else None
                ),
            )
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
    meta = registry_pb2.UploadVersionMetadata(
        model=a.model,
        semver=a.semver,
        parent_version=a.parent,
        metrics=_metrics(a.metric),
        tags=_pairs(a.tag, "tag"),
        description=a.description,
        alias=a.alias,
        size_bytes=size,
    )

    def requests() -> Iterator[registry_pb2.UploadVersionRequest]:
        yield registry_pb2.UploadVersionRequest(metadata=meta)
        for block in chunks:
            yield registry_pb2.UploadVersionRequest(chunk=block)

    v = c.stub.UploadVersion(requests(), timeout=c.timeout, metadata=c.metadata)
    return v, (note + "\n" if note else "") + _show_version(v)


def cmd_versions(c: Client, a: argparse.Namespace) -> tuple[Message, str]:
    out = registry_pb2.ListVersionsResponse()
    token = ""
    while len(out.versions) < a.limit:
        page = c(
            "ListVersions",
            registry_pb2.ListVersionsRequest(
                model=a.model,
                tag_filter=_pairs(a.tag, "tag"),
                page=common_pb2.PageRequest(
                    page_size=min(1000, a.limit - len(out.versions)), page_token=token
                ),
            ),
        )
        out.versions.extend(page.versions)
        token = page.next_page_token
        if not token:
            break
    out.next_page_token = token
    lines = [
        f"{v.version:>6}  {v.semver or '-':<10} {v.size_bytes:>12} B  {v.sha256[:12]}  "
        f"{' '.join('@' + x for x in v.aliases)}"
        for v in out.versions
    ]
    return out, "\n".join(lines) or "(no versions)"


def cmd_version(c: Client, a: argparse.Namespace) -> tuple[Message, str]:
    version, alias = _ref(a.ref)
    v = c("GetVersion", registry_pb2.GetVersionRequest(model=a.model, version=version, alias=alias))
    return v, _show_version(v)


def cmd_download(c: Client, a: argparse.Namespace) -> tuple[Message, str]:
    version, alias = _ref(a.ref)
    stream = c(
        "DownloadVersion",
        registry_pb2.DownloadVersionRequest(model=a.model, version=version, alias=alias),
    )
    out = Path(a.output)
    tmp = out.with_name(out.name + ".part")
    meta = registry_pb2.ModelVersion()
    with open(tmp, "wb") as f:
        for part in stream:
            if part.WhichOneof("part") == "metadata":
                meta = part.metadata
            else:
                f.write(part.chunk)
    os.replace(tmp, out)
    return meta, f"wrote {meta.model} version {meta.version} ({meta.size_bytes} bytes) to {out}"


def cmd_delete_version(c: Client, a: argparse.Namespace) -> tuple[Message, str]:
    r = c("DeleteVersion", registry_pb2.DeleteVersionRequest(model=a.model, version=a.version))
    return r, f"deleted {a.model} version {a.version}"


def cmd_set_alias(c: Client, a: argparse.Namespace) -> tuple[Message, str]:
    r = c(
        "SetAlias",
        registry_pb2.SetAliasRequest(
            model=a.model, alias=a.alias.removeprefix("@"), version=a.version, reason=a.reason
        ),
    )
    return r, _show_change(r)


def cmd_delete_alias(c: Client, a: argparse.Namespace) -> tuple[Message, str]:
    r = c(
        "DeleteAlias",
        registry_pb2.DeleteAliasRequest(
            model=a.model, alias=a.alias.removeprefix("@"), reason=a.reason
        ),
    )
    return r, _show_change(r)


def cmd_promote(c: Client, a: argparse.Namespace) -> tuple[Message, str]:
    r = c("Promote", registry_pb2.PromoteRequest(model=a.model, reason=a.reason))
    return r, _show_change(r.champion) + "\n" + _show_change(r.challenger_removed)


def cmd_rollback(c: Client, a: argparse.Namespace) -> tuple[Message, str]:
    r = c("Rollback", registry_pb2.RollbackRequest(model=a.model, reason=a.reason))
    return r, _show_change(r)


def cmd_history(c: Client, a: argparse.Namespace) -> tuple[Message, str]:
    r = c(
        "GetAliasHistory",
        registry_pb2.GetAliasHistoryRequest(
            model=a.model,
            alias=(a.alias or "").removeprefix("@"),
            page=common_pb2.PageRequest(page_size=a.limit),
        ),
    )
    return r, "\n".join(_show_change(x) for x in r.changes) or "(no alias changes)"


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.address = getattr(args, "address", None) or os.environ.get(
        "LLMOPT_ADDRESS", DEFAULT_ADDRESS
    )
    args.actor = getattr(args, "actor", None) or os.environ.get("LLMOPT_ACTOR") or _login()
    args.json = getattr(args, "json", False)
    args.timeout = getattr(args, "timeout", None) or 60.0
    options = [
        ("grpc.max_receive_message_length", 64 << 20),
        ("grpc.max_send_message_length", 64 << 20),
    ]
    try:
        with grpc.insecure_channel(args.address, options=options) as channel:
            message, text = args.fn(Client(channel, args), args)
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)  # type: ignore[attr-defined]
        return 1
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # export failures and local file problems
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(_as_dict(message), indent=2) if args.json else text)
    return 0


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return ""


if __name__ == "__main__":
    sys.exit(main())
