"""Send the fuzzer's payloads to a running server and judge every answer.

A finding is an INTERNAL or UNKNOWN status (an exception that escaped the one error mapping), the
server process gone, or a batch of requests that were all rejected but changed stored state
(``state.snapshot`` before and after each batch of requests to one method). Each finding carries
the method and the payloads' hex, and the seed with the payload's index regenerates it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc

from tests.fuzz import fixture, state
from tests.fuzz.generator import Fuzzer
from tests.fuzz.services import Method

FORBIDDEN = frozenset({"INTERNAL", "UNKNOWN"})  # an exception escaped the error mapping
OK = "OK"
ENDED_BY_US = "ENDED_BY_CLIENT"  # a server stream the runner stopped reading: no verdict
UNSETTLED = frozenset({ENDED_BY_US, "DEADLINE_EXCEEDED", "CANCELLED", "PARTIAL"})  # took effect?
# The client's own channel refused the answer's status as too big: the error never reached it.
UNDELIVERED = "metadata size exceeds"
# Request streams whose contract keeps the messages before a refused one (features.proto: "the
# messages before it stay written"): refused, such a stream of several messages may still have
# changed state, so its batch is not judged.
PER_MESSAGE_STREAMS = frozenset({"/llmopt.v1.Features/WriteFeaturesStream"})
BATCH = 8
TIMEOUT = 10.0
STREAM_ANSWERS = {"/grpc.health.v1.Health/Watch": 1}  # endless streams: read this many answers
MAX_STREAM_ANSWERS = 10_000
HEX_SHOWN = 1_000


@dataclass
class Finding:
    index: int
    method: str
    problem: str
    payloads: list[bytes]

    def __str__(self) -> str:
        parts = []
        for p in self.payloads:
            shown = p[:HEX_SHOWN].hex()
            parts.append(shown + (f"... ({len(p)} bytes)" if len(p) > HEX_SHOWN else ""))
        return (
            f"message #{self.index} {self.method}: {self.problem}\n    hex: "
            + "\n    hex: ".join(parts or ["(empty stream)"])
        )


@dataclass
class Report:
    seed: int
    messages: int = 0
    calls: int = 0
    judged_batches: int = 0
    restores: int = 0
    seconds: float = 0.0
    slowest: tuple[float, str] = (0.0, "")
    codes: Counter[str] = field(default_factory=Counter)
    by_method: Counter[tuple[str, str]] = field(default_factory=Counter)
    example: dict[tuple[str, str], str] = field(default_factory=dict)  # one detail per pair
    findings: list[Finding] = field(default_factory=list)

    def summary(self) -> str:
        codes = ", ".join(f"{k} {v}" for k, v in self.codes.most_common())
        return (
            f"fuzz seed {self.seed}: {self.messages} messages in {self.calls} calls, "
            f"{self.seconds:.1f} s, {self.judged_batches} rejected batches checked for state "
            f"changes, fixture restored {self.restores}x; slowest call {self.slowest[0]:.2f} s "
            f"({self.slowest[1]}); codes: {codes}"
        )

    def table(self) -> str:
        """Per method, the codes it answered, with one message of each."""
        return "\n".join(
            f"{path} {code} x{n}: {self.example[path, code]}"
            for (path, code), n in sorted(self.by_method.items())
        )


def call(channel: grpc.Channel, method: Method, payload: bytes | list[bytes]) -> tuple[str, str]:
    """(status code name, details) of one call with raw payload bytes."""
    path = method.path
    try:
        if method.client_streaming:
            requests = iter(payload if isinstance(payload, list) else [payload])
            if method.server_streaming:
                answers = channel.stream_stream(path)(requests, timeout=TIMEOUT)
            else:
                channel.stream_unary(path)(requests, timeout=TIMEOUT)
                return OK, ""
        elif method.server_streaming:
            answers = channel.unary_stream(path)(payload, timeout=TIMEOUT)
        else:
            channel.unary_unary(path)(payload, timeout=TIMEOUT)
            return OK, ""
        limit = STREAM_ANSWERS.get(path, MAX_STREAM_ANSWERS)
        for n, _ in enumerate(answers, 1):
            if n >= limit:
                answers.cancel()
                return ENDED_BY_US, ""
        return OK, ""
    except grpc.RpcError as err:
        return err.code().name, err.details() or ""


def run(
    channel: grpc.Channel,
    fuzzer: Fuzzer,
    methods: Sequence[Method],
    messages: int,
    alive: Callable[[], bool],
) -> Report:
    """Send about ``messages`` messages in batches of ``BATCH`` calls to one random method."""
    report = Report(seed=fuzzer.seed)
    start = time.monotonic()
    before = state.snapshot(channel)
    while report.messages < messages:
        method = fuzzer.rng.choice(methods)
        batch: list[tuple[int, bytes | list[bytes]]] = []
        outcomes = []
        for _ in range(BATCH):
            payload = fuzzer.payloads(method)
            index = report.messages
            report.messages += len(payload) if isinstance(payload, list) else 1
            report.calls += 1
            began = time.monotonic()
            code, details = call(channel, method, payload)
            took = time.monotonic() - began
            if took > report.slowest[0]:
                report.slowest = (took, f"#{index} {method.path} {code}")
            report.codes[code] += 1
            report.by_method[method.path, code] += 1
            report.example.setdefault((method.path, code), details[:160])
            batch.append((index, payload))
            partial = method.path in PER_MESSAGE_STREAMS and len(_as_list(payload)) > 1
            outcomes.append("PARTIAL" if partial and code != OK else code)
            if code in FORBIDDEN or UNDELIVERED in details:
                report.findings.append(
                    Finding(index, method.path, f"{code}: {details}", _as_list(payload))
                )
        if not alive():
            report.findings.append(
                Finding(
                    batch[0][0],
                    method.path,
                    "the server process died in this batch",
                    [p for _, pl in batch for p in _as_list(pl)],
                )
            )
            break
        try:
            after = state.snapshot(channel)
        except grpc.RpcError as err:
            report.findings.append(
                Finding(
                    batch[0][0],
                    method.path,
                    f"reading the state back after this batch failed: {err.code().name} "
                    f"{err.details()}",
                    [p for _, pl in batch for p in _as_list(pl)],
                )
            )
            break
        if all(code != OK and code not in UNSETTLED for code in outcomes):
            report.judged_batches += 1
            changes = state.diff(before, after)
            if changes:
                first = batch[0][0]
                report.findings.append(
                    Finding(
                        first,
                        method.path,
                        f"{len(batch)} rejected requests ({', '.join(outcomes)}) changed "
                        "stored state:\n      " + "\n      ".join(changes[:10]),
                        [p for _, pl in batch for p in _as_list(pl)],
                    )
                )
        missing = _missing_parts(after)
        if missing:
            fixture.setup(channel, missing)
            report.restores += 1
            after = state.snapshot(channel)
        if fixture.MODEL not in missing and fixture.reload_if_unloaded(channel):
            report.restores += 1  # a fuzzed RepositoryModelUnload: serve the model again
        before = after
    report.seconds = time.monotonic() - start
    return report


def _as_list(payload: bytes | list[bytes]) -> list[bytes]:
    return payload if isinstance(payload, list) else [payload]


def _missing_parts(snap: dict) -> tuple[str, ...]:
    missing = []
    if fixture.FEATURE_SET not in snap["feature_sets"]:
        missing.append(fixture.FEATURE_SET)
    if not {fixture.BANDIT, fixture.LINEAR_BANDIT} <= set(snap["bandits"]):
        missing.append(fixture.BANDIT)
    if fixture.MODEL not in snap["models"]:
        missing.append(fixture.MODEL)
    if fixture.STUDY not in snap["studies"]:
        missing.append(fixture.STUDY)
    return tuple(missing)
