"""Seeded payloads for any request message: what a careless or hostile client could send.

``Fuzzer.payloads(method)`` gives one payload (unary request) or a list of them (a request
stream), each the bytes of one message. Kinds, by weight (``KINDS``): a valid seed message with a
few fields mutated to extreme values; a message generated from its descriptor alone; the encoding
of either cut short or with bits flipped; random bytes. Everything follows from the seed, and
nothing from the server's answers, so a seed and a message index reproduce a payload.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from tests.fuzz.services import Method

F = FieldDescriptor
INT_RANGES: dict[int, tuple[int, int]] = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}
EXTREME_INTS = (0, 1, 2, -1, 2**31 - 1, 2**31, -(2**31), 2**32, 2**62, 2**63 - 1, -(2**63))
EXTREME_FLOATS = (
    0.0, -0.0, 1.0, -1.0, 0.5, 1e308, -1e308, 5e-324, 3.5e38, 1e-45,
    math.nan, math.inf, -math.inf,
)  # fmt: skip
WEIRD_STRINGS = (
    "", " ", "a/b", "/", "../../etc/passwd", "é漢字🙂", "\x00", "\u202e", "-1", "0",
    "9" * 40, "x" * 300, "%s%n", "'; DROP TABLE x; --", "champion", "challenger",
)  # fmt: skip
HUGE_STRING = "h" * 70_000
HUGE_REPEATED = 20_000
KINDS = (("mutated", 50), ("generated", 20), ("truncated", 10), ("flipped", 12), ("random", 8))


class Fuzzer:
    """Payloads from ``seed``. ``words`` are names that exist on the server (so generated
    messages reach past the lookups); ``seeds`` maps a method's path to valid requests (one
    message, or for a request stream a list of messages)."""

    def __init__(
        self,
        seed: int,
        words: Sequence[str] = (),
        seeds: dict[str, list[Any]] | None = None,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.words = tuple(words)
        self.seeds = seeds or {}
        self._kinds = [k for k, _ in KINDS]
        self._weights = [w for _, w in KINDS]

    # -- payloads ---------------------------------------------------------------------------------

    def payloads(self, method: Method) -> bytes | list[bytes]:
        """One request's bytes, or a stream of them for a client-streaming method."""
        if not method.client_streaming:
            return self._payload(method, self._template(method))
        template = self._stream_template(method)
        if self.rng.random() < 0.1:
            return []
        return [self._payload(method, m) for m in template]

    def _template(self, method: Method) -> Message | None:
        seeds = self.seeds.get(method.path)
        if not seeds:
            return None
        seed = self.rng.choice(seeds)
        return seed[0] if isinstance(seed, list) else seed

    def _stream_template(self, method: Method) -> list[Message | None]:
        seeds = self.seeds.get(method.path)
        if seeds and self.rng.random() < 0.7:
            stream = self.rng.choice(seeds)
            stream = list(stream) if isinstance(stream, list) else [stream]
            if self.rng.random() < 0.3:  # repeat, drop or reorder parts
                op = self.rng.choice(("repeat", "drop", "shuffle"))
                if op == "repeat":
                    stream = stream + stream[-1:] * self.rng.randint(1, 3)
                elif op == "drop" and len(stream) > 1:
                    del stream[self.rng.randrange(len(stream))]
                else:
                    self.rng.shuffle(stream)
            return stream
        return [None] * self.rng.randint(1, 4)

    def _payload(self, method: Method, template: Message | None) -> bytes:
        kind = self.rng.choices(self._kinds, self._weights)[0]
        if kind == "random":
            return self.rng.randbytes(self.rng.randint(1, 64))
        if template is None or kind == "generated":
            msg = self.generate(method.request)
        else:
            msg = self.mutate(template)
        data = msg.SerializeToString()
        if kind == "truncated" and data:
            return data[: self.rng.randrange(len(data))]
        if kind == "flipped" and data:
            flipped = bytearray(data)
            for _ in range(self.rng.randint(1, 4)):
                i = self.rng.randrange(len(flipped))
                flipped[i] ^= 1 << self.rng.randrange(8)
            return bytes(flipped)
        return data

    # -- messages ---------------------------------------------------------------------------------

    def generate(self, cls: Callable[[], Message]) -> Message:
        """A message of ``cls`` with random fields set (nested messages up to a few levels)."""
        msg = cls()
        self._fill(msg, 0)
        return msg

    def _fill(self, msg: Message, depth: int) -> None:
        if msg.DESCRIPTOR.full_name == "google.protobuf.Struct":
            msg.CopyFrom(self.struct(depth))  # type: ignore[arg-type]
            return
        for field in msg.DESCRIPTOR.fields:
            if self.rng.random() < 0.55:
                self._set_field(msg, field, depth)

    def mutate(self, template: Message) -> Message:
        """A copy of ``template`` with one to three fields, anywhere in it, set to extreme values,
        cleared, or grown huge."""
        msg = type(template)()
        msg.CopyFrom(template)
        for _ in range(self.rng.randint(1, 3)):
            target = msg
            for _ in range(self.rng.randint(0, 4)):  # walk into a set sub-message
                subs = [
                    f for f, v in target.ListFields() if f.type == F.TYPE_MESSAGE and not _is_map(f)
                ]
                if not subs:
                    break
                f = self.rng.choice(subs)
                value = getattr(target, f.name)
                if f.is_repeated:
                    if not len(value):
                        break
                    target = self.rng.choice(list(value))
                else:
                    target = value
            fields = target.DESCRIPTOR.fields
            if not fields:
                continue
            field = self.rng.choice(fields)
            if self.rng.random() < 0.15:
                target.ClearField(field.name)
            else:
                self._set_field(target, field, depth=3, extreme=True)
        return msg

    def _set_field(
        self, msg: Message, field: FieldDescriptor, depth: int, extreme: bool = False
    ) -> None:
        try:
            if _is_map(field):
                self._set_map(msg, field, depth)
            elif field.is_repeated:
                self._set_repeated(msg, field, depth, extreme)
            elif field.type == F.TYPE_MESSAGE:
                if depth >= 4:
                    return
                sub = getattr(msg, field.name)
                sub.Clear()
                sub.SetInParent()
                self._fill(sub, depth + 1)
            else:
                setattr(msg, field.name, self.scalar(field, extreme))
        except (TypeError, ValueError, OverflowError):
            pass  # a value this field cannot hold in Python: the bytes fuzzing covers the wire

    def _set_repeated(
        self, msg: Message, field: FieldDescriptor, depth: int, extreme: bool
    ) -> None:
        container = getattr(msg, field.name)
        del container[:]
        huge = self.rng.random() < (0.06 if extreme else 0.02)
        n = HUGE_REPEATED if huge else self.rng.randint(0, 4)
        if field.type == F.TYPE_MESSAGE:
            if depth >= 4:
                return
            for _ in range(min(n, 200)):  # huge repeated messages: a few hundred is plenty
                self._fill(container.add(), depth + 1)
        elif huge:  # many short values (a huge string repeated would be a gigabyte)
            one = self.scalar(field, extreme)
            container.extend([one[:16] if isinstance(one, (str, bytes)) else one] * n)
        else:
            container.extend(self.scalar(field, extreme) for _ in range(n))

    def _set_map(self, msg: Message, field: FieldDescriptor, depth: int) -> None:
        container = getattr(msg, field.name)
        key_field = field.message_type.fields_by_name["key"]
        value_field = field.message_type.fields_by_name["value"]
        n = 500 if self.rng.random() < 0.03 else self.rng.randint(0, 4)
        for i in range(n):
            key = self.scalar(key_field, False)
            if n > 10 and isinstance(key, str):
                key = f"{key[:16]}{i}"
            if value_field.type == F.TYPE_MESSAGE:
                if depth < 4 and n <= 10:
                    self._fill(container[key], depth + 1)
                else:
                    container[key].SetInParent()
            else:
                value = self.scalar(value_field, self.rng.random() < 0.5)
                container[key] = value[:16] if n > 10 and isinstance(value, str) else value

    # -- values -----------------------------------------------------------------------------------

    def scalar(self, field: FieldDescriptor, extreme: bool) -> Any:
        t, rng = field.type, self.rng
        if t == F.TYPE_BOOL:
            return rng.random() < 0.5
        if t == F.TYPE_STRING:
            return self.string(extreme)
        if t == F.TYPE_BYTES:
            return rng.randbytes(rng.choice((0, 1, 16, 300)))
        if t == F.TYPE_ENUM:
            values = [v.number for v in field.enum_type.values]
            return rng.choice(values) if rng.random() < 0.8 else rng.choice((-1, 99, 2**31 - 1))
        if t in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
            x = rng.choice(EXTREME_FLOATS) if extreme or rng.random() < 0.3 else rng.uniform(-2, 2)
            return x if t == F.TYPE_DOUBLE or not math.isfinite(x) or abs(x) < 3e38 else math.inf
        lo, hi = INT_RANGES[t]
        if extreme or rng.random() < 0.3:
            x = rng.choice((*EXTREME_INTS, hi, lo))
            return min(max(x, lo), hi)
        return rng.randint(max(lo, -3), min(hi, 5))

    def string(self, extreme: bool) -> str:
        r = self.rng.random()
        if self.words and r < (0.3 if extreme else 0.6):
            return self.rng.choice(self.words)
        if r < 0.97:
            return self.rng.choice(WEIRD_STRINGS)
        return HUGE_STRING

    def struct(self, depth: int = 0) -> struct_pb2.Struct:
        """A Struct with non-finite numbers, unicode keys, lists, and now and then deep nesting."""
        s = struct_pb2.Struct()
        for _ in range(self.rng.randint(0, 4)):
            key = self.string(False)
            choice = self.rng.random()
            if choice < 0.4:
                s.fields[key].number_value = self.rng.choice(EXTREME_FLOATS)
            elif choice < 0.6:
                s.fields[key].string_value = self.string(True)
            elif choice < 0.7:
                s.fields[key].bool_value = True
            elif choice < 0.8:
                s.fields[key].null_value = struct_pb2.NULL_VALUE
            elif choice < 0.9:
                s.fields[key].list_value.values.add().number_value = self.rng.choice(EXTREME_FLOATS)
            elif depth < 3:
                s.fields[key].struct_value.CopyFrom(self.struct(depth + 1))
        if self.rng.random() < 0.05:  # deep: past protobuf's recursion limit now and then
            inner = s
            for _ in range(self.rng.choice((30, 60, 120))):
                inner = inner.fields["d"].struct_value
            inner.fields["x"].number_value = math.nan
        return s


def _is_map(field: FieldDescriptor) -> bool:
    return (
        field.type == F.TYPE_MESSAGE
        and field.is_repeated
        and field.message_type.GetOptions().map_entry
    )
