"""llmopt.storage.records: the journal's framing, and the bandit journal's records built and read
back field for field."""

import struct
import zlib

import numpy as np
import pytest

from llmopt.storage import records
from llmopt.storage.records import frame

# Kernel tests: CI also runs them against the bounds-checked build (make test-kernels-debug).
pytestmark = pytest.mark.kernels


def test_a_frame_is_the_payloads_length_and_crc32_then_the_payload() -> None:
    for payload in (b"x", b"record" * 1000, bytes(range(256))):
        record = frame(payload)
        assert record == struct.pack("<II", len(payload), zlib.crc32(payload)) + payload
        assert records.read_frame(record, 0) == (payload, len(record))


def test_frames_read_back_one_after_another_until_the_zeros_after_them() -> None:
    payloads = [b"one", b"two" * 50, b"three"]
    data = b"".join(frame(p) for p in payloads) + bytes(64)
    pos, found = 0, []
    while (next_frame := records.read_frame(data, pos)) is not None:
        payload, pos = next_frame
        found.append(payload)
    assert found == payloads
    assert pos == len(data) - 64
    assert records.read_frame(data, len(data) - 3) is None  # less than a header left


def test_a_torn_frame_is_refused() -> None:
    record = frame(b"payload")
    with pytest.raises(ValueError, match="cut short"):
        records.read_frame(record[:-1], 0)
    torn = bytearray(record)
    torn[-1] ^= 0xFF
    with pytest.raises(ValueError, match="crc32 does not match"):
        records.read_frame(bytes(torn), 0)


def test_a_decision_record_is_framed_as_the_journal_frames_and_reads_back() -> None:
    scores = np.array([0.5, np.nan, -2.0])
    context = np.arange(10.0)
    record = records.decision_record(7, "déc-1", 3, 2, 0.25, scores, context, 100.5, 200.75)
    length, crc = struct.unpack_from("<II", record)
    payload = record[records.HEADER :]
    assert (length, crc) == (len(payload), zlib.crc32(payload))
    assert frame(payload) == record
    expected = (
        *(7, "déc-1", 3, 2, 0.25, scores.tobytes(), context.tobytes(), 100.5, 200.75),
        *(None, None, None, 0),  # no digest, no context, no explanation, not degraded
    )
    assert records.decode(record, records.HEADER) == (records.DECISION, expected)
    assert records.decode(payload) == (records.DECISION, expected)  # as replay reads it


def test_arrays_of_another_layout_or_type_are_stored_as_contiguous_little_endian_doubles() -> None:
    strided = np.arange(8.0)[::2]
    big_endian = np.array([1.5, 2.5], dtype=">f8")
    ints = np.array([1, 2, 3])
    record = records.decision_record(1, "d", 1, 0, 1.0, big_endian, strided, 0.0, 1.0)
    _, row = records.decode(record, records.HEADER)
    assert np.frombuffer(row[5], "<f8").tolist() == [1.5, 2.5]
    assert np.frombuffer(row[6], "<f8").tolist() == [0.0, 2.0, 4.0, 6.0]
    record = records.reward_record(1, 1, 1, 0, "d", 1.0, 1.0, ints, None, 0.0)
    assert np.frombuffer(records.decode(record, records.HEADER)[1][7], "<f8").tolist() == [1, 2, 3]


@pytest.mark.parametrize("detail", [None, "", '{"why": "naïve"}'])
def test_a_reward_record_reads_back_with_its_detail(detail: str | None) -> None:
    context = np.full(4, 1.25)
    record = records.reward_record(9, 3, 1, 2, "d-9", 0.5, 0.125, context, detail, 300.0)
    assert records.decode(record, records.HEADER) == (
        records.REWARD,
        (9, 3, 1, 2, "d-9", 0.5, 0.125, context.tobytes(), detail, 300.0),
    )


def test_a_record_cut_short_or_of_an_unknown_kind_is_refused() -> None:
    record = records.decision_record(1, "d", 1, 0, 1.0, np.ones(3), np.ones(10), 0.0, 1.0)
    payload = record[records.HEADER :]
    with pytest.raises(ValueError, match="kind 3 is cut short"):
        records.decode(payload[:-1])
    with pytest.raises(ValueError, match="too short"):
        records.decode(payload[:5])
    reward = records.reward_record(1, 1, 1, 0, "d", 1.0, 1.0, np.ones(2), "x", 0.0)
    with pytest.raises(ValueError, match="kind 4 is cut short"):
        records.decode(reward[records.HEADER : -9])
    with pytest.raises(ValueError, match="unknown kind 99"):
        records.decode(bytes([99]) + payload[1:])


class Ctx:
    """What ``encode_context`` reads of a RequestContext (it reads attributes by name)."""

    def __init__(self, **kw: object) -> None:
        defaults = dict(
            user_id="", task_type="", input_length=0, output_length=0, priority=5, region="",
            hour_of_day=None, day_of_week=None, language="", metadata={}, features={},
        )  # fmt: skip
        self.__dict__.update({**defaults, **kw})


FULL = dict(
    user_id="ü-1", task_type="summarization", input_length=2**40, output_length=3, priority=9,
    region="eu", hour_of_day=0, day_of_week=6, language="fr",
    metadata={"tenant": "acmé", "": "empty key"}, features={"x": -1.5, "y": float("inf")},
)  # fmt: skip


@pytest.mark.parametrize("fields", [{}, FULL], ids=["defaults", "every-field"])
def test_a_request_context_reads_back_field_for_field(fields: dict) -> None:
    ctx = Ctx(**fields)
    assert records.decode_context(records.encode_context(ctx)) == vars(ctx)


def test_a_malformed_request_context_is_refused() -> None:
    blob = records.encode_context(Ctx(**FULL))
    for bad in (blob[:-1], blob + b"x", blob[:10]):
        with pytest.raises(ValueError, match="request context record"):
            records.decode_context(bad)


@pytest.mark.parametrize("digest", [None, b"\x00", b"0123456789abcdef"])
@pytest.mark.parametrize("explanation", [None, "", '{"reason": "naïve"}'])
def test_the_extension_trailer_reads_back_after_any_digest(
    digest: bytes | None, explanation: str | None
) -> None:
    args = (5, "d", 1, 0, 0.5, np.ones(2), np.arange(3.0), 1.0, 2.0, digest)
    ctx = Ctx(**FULL)
    record = records.decision_record(*args, ctx, explanation, True)
    row = records.decode(record, records.HEADER)[1]
    assert row[9] == digest and row[11] == explanation and row[12] == 1
    assert records.decode_context(row[10]) == vars(ctx)
    # A reader from before the extension takes everything after the context as the digest:
    # the payload is the old one (digest included) with the extension after it.
    legacy = records.decision_record(*args)
    assert record[records.HEADER : len(legacy)] == legacy[records.HEADER :]


def test_a_record_without_extension_is_the_format_from_before_it() -> None:
    args = (5, "d", 1, 0, 0.5, np.ones(2), np.arange(3.0), 1.0, 2.0, b"0123456789abcdef")
    assert records.decision_record(*args, None, None, False) == records.decision_record(*args)
    assert records.decode(records.decision_record(*args), records.HEADER)[1][9:] == (
        b"0123456789abcdef", None, None, 0,
    )  # fmt: skip


def test_a_digest_that_ends_like_the_trailer_is_still_a_digest() -> None:
    """Old records' digests are 1 or 16 bytes, shorter than the 20-byte trailer: never taken
    for an extension, whatever their bytes."""
    tail = struct.pack("<IiIII", 0, -1, 0, 0, records.EXTENSION_MAGIC)
    for digest in (tail[4:], tail[-1:]):
        record = records.decision_record(
            1, "d", 1, 0, 1.0, np.ones(1), np.ones(1), 0.0, 1.0, digest
        )
        assert records.decode(record, records.HEADER)[1][9:] == (digest, None, None, 0)
