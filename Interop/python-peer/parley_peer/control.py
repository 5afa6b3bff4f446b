"""§10 Session control messages inside transport packets (inner_type 0x02)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from . import security_code

REPORT, LEAVE = 0x01, 0x02
REPORT_SIZE = 28
MUTED = 0x01


@dataclass(frozen=True)
class Report:
    timestamp_ms: int
    echo_timestamp_ms: int = 0
    echo_delay_ms: int = 0
    media_received: int = 0
    media_expected: int = 0
    loss_permille: int = 0
    jitter_us: int = 0
    flags: int = 0

    def encode(self) -> bytes:
        return bytes([REPORT]) + struct.pack(
            ">IIIIIHIBB", self.timestamp_ms % 2**32, self.echo_timestamp_ms % 2**32, self.echo_delay_ms % 2**32,
            self.media_received % 2**32, self.media_expected % 2**32, min(self.loss_permille, 1000),
            min(self.jitter_us, 2**32 - 1), self.flags, 0)

    @property
    def muted(self) -> bool:
        return bool(self.flags & MUTED)


@dataclass(frozen=True)
class Leave:
    def encode(self) -> bytes:
        return bytes([LEAVE])


def parse(body: bytes) -> Report | Leave | security_code.Message | None:
    """None for an unknown type or a message shorter than its type requires (dropped/ignored)."""
    if not body:
        return None
    kind = body[0]
    if kind in (security_code.COMMIT, security_code.REVEAL):  # §11.1
        try:
            return security_code.Message.parse(body)
        except ValueError:
            return None
    if kind == REPORT:
        if len(body) - 1 < REPORT_SIZE:
            return None  # longer is allowed: later fields are ignored
        values = struct.unpack(">IIIIIHIBB", body[1 : 1 + REPORT_SIZE])
        return Report(*values[:8])
    if kind == LEAVE:
        return Leave()
    return None
