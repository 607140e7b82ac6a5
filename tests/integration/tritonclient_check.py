"""Run by test_oip.py in its own process: the official Triton client against our server.

tritonclient registers its own ``inference.*`` protobuf messages in the default descriptor pool,
which clash with llmopt.gen's; so this script never imports llmopt.gen (or anything that does).

usage: python tritonclient_check.py ADDRESS FLOAT_MODEL CLASSIFIER DATA.npz
DATA.npz holds X (float32 rows), variable (expected regression output), label and
probabilities (expected classifier outputs).

   or: python tritonclient_check.py --fields OURS.json
OURS.json maps each of our message names to {field name: [number, type, repeated, message type]};
every one must equal the field of the same name in Triton's own grpc_service.proto as
tritonclient ships it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton


def main(address: str, float_model: str, classifier: str, data_path: str) -> None:
    data = np.load(data_path)
    X = data["X"]
    client = triton.InferenceServerClient(url=address)
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta.name == "llmopt-server", meta
    assert client.is_model_ready(float_model)
    assert client.is_model_ready(classifier, "1")
    assert not client.is_model_ready(classifier, "7")
    assert not client.is_model_ready("no-such-model")

    model_meta = client.get_model_metadata(float_model)
    assert model_meta.name == float_model and list(model_meta.versions) == ["1"], model_meta
    assert model_meta.platform == "onnxruntime_onnx"
    (inp,) = model_meta.inputs
    assert (inp.name, inp.datatype, list(inp.shape)) == ("X", "FP32", [-1, 16]), inp
    assert [(o.name, o.datatype) for o in model_meta.outputs] == [("variable", "FP32")]

    clf_meta = client.get_model_metadata(classifier, "1")
    assert [(o.name, o.datatype) for o in clf_meta.outputs] == [
        ("label", "INT64"),
        ("probabilities", "FP32"),
    ], clf_meta

    x = triton.InferInput("X", list(X.shape), "FP32")
    x.set_data_from_numpy(X)
    result = client.infer(float_model, [x])
    assert result.get_response().model_version == "1"
    np.testing.assert_array_equal(result.as_numpy("variable"), data["variable"])

    result = client.infer(
        classifier,
        [x],
        model_version="1",
        outputs=[
            triton.InferRequestedOutput("label"),
            triton.InferRequestedOutput("probabilities"),
        ],
        request_id="triton-1",
    )
    assert result.get_response().id == "triton-1"
    label = result.as_numpy("label")
    assert label.dtype == np.int64, label.dtype
    np.testing.assert_array_equal(label, data["label"])
    np.testing.assert_array_equal(result.as_numpy("probabilities"), data["probabilities"])

    only = client.infer(classifier, [x], outputs=[triton.InferRequestedOutput("label")])
    assert only.as_numpy("probabilities") is None
    np.testing.assert_array_equal(only.as_numpy("label"), data["label"])

    bad = triton.InferInput("X", [len(X), 16], "FP64")
    bad.set_data_from_numpy(X.astype(np.float64))
    try:
        client.infer(float_model, [bad])
    except triton.InferenceServerException as exc:
        assert exc.status() == "StatusCode.INVALID_ARGUMENT", exc.status()
    else:
        raise AssertionError("an FP64 input to an FP32 model was accepted")

    index = client.get_model_repository_index()
    names = {m.name for m in index.models}
    assert {float_model, classifier} <= names, names
    print("tritonclient ok")


def compare_fields(ours_path: str) -> None:
    import json

    from tritonclient.grpc import service_pb2

    pool = service_pb2.DESCRIPTOR.pool
    ours = json.loads(Path(ours_path).read_text())
    problems = []
    for message, fields in ours.items():
        theirs = pool.FindMessageTypeByName(message)
        for name, spec in fields.items():
            field = theirs.fields_by_name.get(name)
            if field is None:
                problems.append(f"{message}.{name}: not in Triton's proto")
                continue
            kind = field.message_type.full_name if field.message_type else ""
            actual = [field.number, field.type, field.is_repeated, kind]
            if actual != spec:
                problems.append(f"{message}.{name}: ours {spec}, Triton's {actual}")
    assert not problems, problems
    print(f"fields ok: {sum(len(f) for f in ours.values())} fields in {len(ours)} messages")


if __name__ == "__main__":
    if sys.argv[1] == "--fields":
        compare_fields(sys.argv[2])
    else:
        main(*sys.argv[1:5])
