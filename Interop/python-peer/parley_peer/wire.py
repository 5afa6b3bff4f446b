"""Strict big-endian byte reading (§1: integers are big-endian unless a section says otherwise)."""

import struct


class WireError(ValueError):
    """A message from the network that does not parse. Receivers drop it (§1)."""


class Reader:
    """Reads fields from a byte string; every read checks the length, `finish` rejects trailing bytes."""

    def __init__(self, data: bytes, what: str = "message"):
        self.data = bytes(data)
        self.offset = 0
        self.what = what

    @property
    def remaining(self) -> int:
        return len(self.data) - self.offset

    def take(self, count: int, field: str = "field") -> bytes:
        if count < 0 or self.remaining < count:
            raise WireError(f"{self.what}: {field} needs {count} bytes, {self.remaining} left")
        value = self.data[self.offset : self.offset + count]
        self.offset += count
        return value

    def rest(self) -> bytes:
        return self.take(self.remaining)

    def u8(self, field: str = "u8") -> int:
        return self.take(1, field)[0]

    def u16(self, field: str = "u16") -> int:
        return struct.unpack(">H", self.take(2, field))[0]

    def u32(self, field: str = "u32") -> int:
        return struct.unpack(">I", self.take(4, field))[0]

    def u64(self, field: str = "u64") -> int:
        return struct.unpack(">Q", self.take(8, field))[0]

    def finish(self) -> None:
        if self.remaining:
            raise WireError(f"{self.what}: {self.remaining} trailing bytes")


def u8(value: int) -> bytes:
    return struct.pack(">B", value)


def u16(value: int) -> bytes:
    return struct.pack(">H", value)


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


def u64(value: int) -> bytes:
    return struct.pack(">Q", value)
