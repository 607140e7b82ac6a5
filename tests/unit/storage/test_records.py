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
    expected = (7, "déc-1", 3, 2, 0.25, scores.tobytes(), context.tobytes(), 100.5, 200.75, None)
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
