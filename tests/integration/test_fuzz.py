"""The message fuzzer (``tests/fuzz``) against a real server with seeded state.

Every RPC of every service gets random bytes, generated and mutated messages with extreme and
non-finite values, truncated and bit-flipped encodings, and streams of them. It fails on any
INTERNAL or UNKNOWN answer, on the server dying, and on a batch of rejected requests that changed
stored state. The seed is new each run and printed with any failure; ``LLMOPT_FUZZ_SEED`` replays
one, ``LLMOPT_FUZZ_MESSAGES`` sets the count (``make fuzz`` runs 100,000).
"""

from __future__ import annotations

import math
import os
import random
import subprocess
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from llmopt.gen.inference import grpc_service_pb2 as oip
from llmopt.gen.llmopt.v1 import bandits_pb2 as B
from llmopt.gen.llmopt.v1 import common_pb2 as C
from llmopt.gen.llmopt.v1 import features_pb2 as F
from llmopt.gen.llmopt.v1 import inference_pb2 as I
from tests.fuzz import fixture, runner, state
from tests.fuzz.generator import Fuzzer
from tests.fuzz.services import methods
from tests.support.server import ServerProcess

MESSAGES = int(os.environ.get("LLMOPT_FUZZ_MESSAGES", "5000"))
SEED = int(os.environ.get("LLMOPT_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
# What a caller may be told about an empty request; UNKNOWN would mean an escaped exception.
CLEAR_FOR_EMPTY = {
    runner.OK,
    runner.ENDED_BY_US,
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "FAILED_PRECONDITION",
}
GARBAGE = [b"\xff\xff\xff\xff\x0f\x01", b"\x0a\xff\xff\xff\xff\x0f", b"\x12\x05abc", b"\x08"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("fuzz") / "data").start()
    try:
        with proc.channel() as channel:
            fixture.setup(channel)
            yield proc, channel
    except BaseException:
        proc.stop()
        raise
    # Nothing the requests did may keep the server from draining and exiting cleanly on SIGTERM.
    try:
        code = proc.terminate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert code == 0, proc.log()[-3000:]


def _served_services(channel: grpc.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (answer,) = stub.ServerReflectionInfo(iter([request]), timeout=10)
    return {s.name for s in answer.list_services_response.service}


def test_every_served_service_is_fuzzed(server):
    _, channel = server
    fuzzed = {m.path.split("/")[1] for m in methods()}
    assert _served_services(channel) <= fuzzed
    assert {
        "llmopt.v1.Bandits",
        "grpc.health.v1.Health",
        "inference.GRPCInferenceService",
    } <= fuzzed


@pytest.mark.parametrize("method", methods(), ids=lambda m: m.path)
def test_empty_and_garbage_requests_get_a_clear_status(server, method):
    """An empty message is valid protobuf: whatever it means, the answer is a clear one. Bytes
    that are no protobuf at all: INVALID_ARGUMENT saying so."""
    _, channel = server
    code, details = runner.call(channel, method, [b""] if method.client_streaming else b"")
    assert code in CLEAR_FOR_EMPTY, (code, details)
    assert details or code in (runner.OK, runner.ENDED_BY_US)
    for payload in GARBAGE:
        code, details = runner.call(
            channel, method, [payload] if method.client_streaming else payload
        )
        assert code == "INVALID_ARGUMENT" and "not a valid message" in details, (payload, details)


def _requests_of_issue_19() -> list[tuple[str, Any, str]]:
    """(method path, request, what the message starts with): the inputs that got INTERNAL."""
    out: list[tuple[str, Any, str]] = []
    for seconds in (2**62, 10**12, -(10**12)):
        read = F.GetFeaturesRequest(feature_set=fixture.FEATURE_SET, entity_ids=["u1"])
        read.as_of.seconds = seconds
        out.append(("/llmopt.v1.Features/GetFeatures", read, "as_of: "))
    create = F.CreateFeatureSetRequest(feature_set=fixture._feature_set())
    create.feature_set.name = "fz_ttl"
    create.feature_set.ttl.seconds = 2**62
    out.append(("/llmopt.v1.Features/CreateFeatureSet", create, "feature_set.ttl: "))
    for bad in (math.nan, math.inf, -math.inf):
        arm = fixture._arm("odd", "m-odd")
        arm.config.extra["temperature_schedule"] = bad
        bandit = B.Bandit(name="fz_extra", arms=[arm])
        out.append(
            (
                "/llmopt.v1.Bandits/CreateBandit",
                B.CreateBanditRequest(bandit=bandit),
                "bandit.arms[0].config.extra['temperature_schedule']: ",
            )
        )
        out.append(
            (
                "/llmopt.v1.Bandits/AddArm",
                B.AddArmRequest(bandit=fixture.BANDIT, arm=arm),
                "arm.config.extra['temperature_schedule']: ",
            )
        )
    for shape in ([2**62, 0], [0, 2**62], [2**32, 2**32]):
        tensor = C.Tensor(name="X", dtype=C.FLOAT32, shape=shape)
        predict = I.PredictRequest(model=fixture.MODEL, inputs=[tensor])
        out.append(("/llmopt.v1.Inference/Predict", predict, "inputs[0]['X'].shape: "))
        infer = oip.ModelInferRequest(model_name=fixture.MODEL, raw_input_contents=[b""])
        infer.inputs.add(name="X", datatype="FP32", shape=shape)
        out.append(("/inference.GRPCInferenceService/ModelInfer", infer, "inputs[0].shape: "))
        write = F.WriteFeaturesRequest(feature_set=fixture.FEATURE_SET)
        write.columns.names.append("age")
        write.columns.values.CopyFrom(C.Tensor(dtype=C.FLOAT64, shape=shape))
        out.append(("/llmopt.v1.Features/WriteFeatures", write, "columns.values.shape: "))
        out.append(("/llmopt.v1.Features/WriteFeaturesStream", [write], "columns.values.shape: "))
    return out


@pytest.mark.parametrize(("path", "request_", "starts"), _requests_of_issue_19())
def test_inputs_that_got_internal_are_invalid_argument_naming_the_field(
    server, path, request_, starts
):
    _, channel = server
    method = next(m for m in methods() if m.path == path)
    before = state.snapshot(channel)
    payload = (
        [r.SerializeToString() for r in request_]
        if isinstance(request_, list)
        else request_.SerializeToString()
    )
    code, details = runner.call(channel, method, payload)
    assert (code, details[: len(starts)]) == ("INVALID_ARGUMENT", starts), details
    assert state.diff(before, state.snapshot(channel)) == []


def test_an_error_about_a_huge_value_reaches_the_caller(server):
    """Its message is cut to fit a status (a client refuses trailing metadata past 16 KiB)."""
    _, channel = server
    method = next(m for m in methods() if m.path == "/llmopt.v1.Bandits/GetBandit")
    code, details = runner.call(
        channel, method, B.GetBanditRequest(name="h" * 70_000).SerializeToString()
    )
    assert code in ("NOT_FOUND", "INVALID_ARGUMENT"), details
    assert "'hhhhhhhh" in details and "characters" in details and len(details) < 4000, details


def test_fuzzed_requests_get_a_clear_status_and_change_nothing_when_rejected(server):
    proc, channel = server
    fuzzer = Fuzzer(SEED, fixture.WORDS, fixture.seeds())
    alive = lambda: proc.proc is not None and proc.proc.poll() is None  # noqa: E731
    report = runner.run(channel, fuzzer, methods(), MESSAGES, alive)
    print(report.summary())
    if os.environ.get("LLMOPT_FUZZ_TABLE"):
        print(report.table())
    shown = "\n".join(str(f) for f in report.findings[:10])
    log = proc.log()
    first_error = log.find("unexpected error")
    log = log[first_error : first_error + 4000] if first_error >= 0 else log[-3000:]
    assert not report.findings, (
        f"{report.summary()}\n{len(report.findings)} finding(s); rerun with LLMOPT_FUZZ_SEED="
        f"{SEED} LLMOPT_FUZZ_MESSAGES={MESSAGES}:\n{shown}\nserver log:\n{log}"
    )
    # It reached deep code: both accepted and refused requests, and judged rejected batches.
    assert report.codes["OK"] > 0 and report.codes["INVALID_ARGUMENT"] > 0
    assert report.judged_batches > 0
    health = health_pb2_grpc.HealthStub(channel)
    assert (
        health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    assert state.snapshot(channel)["bandits"]  # still answering reads
