"""The protocol buffers wire format, just enough to talk to containerd's gRPC API.

containerd publishes its API only as .proto files and Go code; there is no maintained Python
client, and generating stubs would pull the whole API tree into roxd. roxd needs a handful of
small messages (get/list containers, list tasks and namespaces, kill, the event envelope), so
it encodes and decodes them by field number here, and hands raw bytes to grpcio.

Wire types: 0 varint, 1 fixed64, 2 length-delimited (strings, bytes, messages, packed, maps),
5 fixed32. Unknown fields are skipped, as protobuf itself does: newer containerd versions add
fields, and that must never break attribution.
"""

from __future__ import annotations

from collections.abc import Iterator


class WireError(ValueError):
    """Bytes that are not a well-formed protobuf message."""


def _varint(value: int) -> bytes:
    if value < 0:
        value &= (1 << 64) - 1  # negative int32/int64 are sent as ten-byte two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_varint_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def encode_bytes_field(number: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _varint((number << 3) | 2) + _varint(len(data)) + data


def encode_message(*fields: bytes) -> bytes:
    return b"".join(fields)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise WireError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError("varint longer than 10 bytes")


def iter_fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) for every field: ints for varint/fixed, bytes for
    length-delimited."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == 0:
            value, pos = _read_varint(data, pos)
            yield number, wire, value
        elif wire == 1:
            if pos + 8 > len(data):
                raise WireError("truncated fixed64")
            yield number, wire, int.from_bytes(data[pos:pos + 8], "little")
            pos += 8
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            if pos + length > len(data):
                raise WireError("truncated length-delimited field")
            yield number, wire, data[pos:pos + length]
            pos += length
        elif wire == 5:
            if pos + 4 > len(data):
                raise WireError("truncated fixed32")
            yield number, wire, int.from_bytes(data[pos:pos + 4], "little")
            pos += 4
        else:
            raise WireError(f"unsupported wire type {wire}")


class Message:
    """A decoded message: the values of each field number, in order (repeated fields keep
    every value)."""

    __slots__ = ("_fields",)

    def __init__(self, data: bytes) -> None:
        fields: dict[int, list[int | bytes]] = {}
        for number, _wire, value in iter_fields(data):
            fields.setdefault(number, []).append(value)
        self._fields = fields

    def bytes(self, number: int) -> bytes:
        values = self._fields.get(number)
        value = values[-1] if values else b""  # proto3: the last value of a field wins
        return value if isinstance(value, bytes) else b""

    def str(self, number: int) -> str:
        return self.bytes(number).decode("utf-8", errors="replace")

    def int(self, number: int) -> int:
        values = self._fields.get(number)
        value = values[-1] if values else 0
        return value if isinstance(value, int) else 0

    def message(self, number: int) -> Message:
        return Message(self.bytes(number))

    def messages(self, number: int) -> list[Message]:
        return [Message(v) for v in self._fields.get(number, []) if isinstance(v, bytes)]

    def strings(self, number: int) -> list[str]:
        return [v.decode("utf-8", errors="replace")
                for v in self._fields.get(number, []) if isinstance(v, bytes)]

    def string_map(self, number: int) -> dict[str, str]:
        """A map<string, string> field (each entry a message: key = 1, value = 2)."""
        out: dict[str, str] = {}
        for entry in self.messages(number):
            out[entry.str(1)] = entry.str(2)
        return out

    def has(self, number: int) -> bool:
        return number in self._fields
