"""§9 Media payload: one Opus frame per transport packet, with up to 4 RFC 2198-style copies."""

from __future__ import annotations

import struct
from dataclasses import dataclass

VERSION = 1
MAX_COPIES = 4
MAX_PAYLOAD = 1200
DURATIONS = (120, 240, 480, 960, 1920, 2880)


class MediaError(ValueError):
    """A media payload a receiver drops (§9.2)."""


@dataclass(frozen=True)
class Frame:
    sequence: int
    timestamp: int
    duration: int
    opus: bytes


@dataclass(frozen=True)
class MediaPayload:
    primary: Frame
    copies: tuple[Frame, ...] = ()  # oldest first

    def encode(self) -> bytes:
        p = self.primary
        out = struct.pack(">BBHIH", VERSION, len(self.copies), p.sequence, p.timestamp, p.duration)
        for copy in self.copies:
            out += struct.pack(">HHH", (p.timestamp - copy.timestamp) % 2**32, copy.duration, len(copy.opus))
        out += b"".join(copy.opus for copy in self.copies) + p.opus
        if len(out) > MAX_PAYLOAD:
            raise MediaError("payload longer than 1200 bytes")
        return out

    @staticmethod
    def parse(data: bytes) -> MediaPayload:
        if not 10 <= len(data) <= MAX_PAYLOAD:
            raise MediaError(f"length {len(data)}")
        version, count, sequence, timestamp, duration = struct.unpack(">BBHIH", data[:10])
        if version != VERSION or count > MAX_COPIES or duration not in DURATIONS:
            raise MediaError("version, copy count or duration")
        headers_end = 10 + 6 * count
        if len(data) < headers_end:
            raise MediaError("block headers run past the end")
        headers = [struct.unpack(">HHH", data[10 + 6 * j : 16 + 6 * j]) for j in range(count)]
        offset = headers_end
        copies = []
        # Each copy's start relative to the primary (negative), checked for order and overlap.
        previous_end = None
        for j, (timestamp_offset, copy_duration, length) in enumerate(headers):
            if length == 0 or copy_duration not in DURATIONS or timestamp_offset < copy_duration:
                raise MediaError("bad copy header")
            start = -timestamp_offset
            if previous_end is not None and previous_end > start:
                raise MediaError("overlapping or unordered copies")
            previous_end = start + copy_duration
            if offset + length > len(data):
                raise MediaError("copy runs past the end")
            copies.append(Frame((sequence - (count - j)) % 2**16, (timestamp - timestamp_offset) % 2**32,
                                copy_duration, data[offset : offset + length]))
            offset += length
        if offset >= len(data):
            raise MediaError("no primary")
        return MediaPayload(Frame(sequence, timestamp, duration, data[offset:]), tuple(copies))
