"""The fuzzer's generator: reproducible from its seed, and it does produce the extreme inputs."""

from __future__ import annotations

import math

from google.protobuf.message import DecodeError

from tests.fuzz import fixture
from tests.fuzz.generator import Fuzzer
from tests.fuzz.services import methods


def _run(seed: int, n: int = 600) -> list[tuple[str, bytes | list[bytes]]]:
    fuzzer = Fuzzer(seed, fixture.WORDS)  # no seed messages: they need trained models
    ms = methods()
    return [(m.path, fuzzer.payloads(m)) for m in (fuzzer.rng.choice(ms) for _ in range(n))]


def test_a_seed_gives_the_same_payloads_and_another_seed_others():
    assert _run(5) == _run(5)
    assert _run(5) != _run(6)


def test_payloads_hold_extreme_values_where_the_issue_found_internal_errors():
    """Over a few thousand payloads: non-finite numbers in arm configs' Structs, shapes with a
    zero beside a huge dimension, and out-of-range Timestamp seconds, in messages that parse."""
    by_path = {m.path: m for m in methods()}
    seen = {"nan_extra": False, "zero_and_huge_shape": False, "huge_timestamp": False}
    for path, payload in _run(11, 6000):
        for data in payload if isinstance(payload, list) else [payload]:
            try:
                msg = by_path[path].request.FromString(data)
            except DecodeError:
                continue
            if path.endswith("/AddArm") and msg.arm.config.HasField("extra"):
                numbers = [v.number_value for v in msg.arm.config.extra.fields.values()]
                seen["nan_extra"] |= any(not math.isfinite(x) for x in numbers)
            if path.endswith("/Predict"):
                for t in msg.inputs:
                    seen["zero_and_huge_shape"] |= 0 in t.shape and max(t.shape) >= 2**62
            if path.endswith("/GetFeatures") and msg.HasField("as_of"):
                seen["huge_timestamp"] |= abs(msg.as_of.seconds) >= 2**62
    assert all(seen.values()), seen
