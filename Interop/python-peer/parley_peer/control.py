"""§10 Session control messages inside transport packets (inner_type 0x02)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from . import chat, security_code

REPORT, LEAVE = 0x01, 0x02
LINKS, RELAY_REFUSED = 0x05, 0x06  # version 2 (§13)
REPORT_SIZE = 28  # the shortest REPORT a receiver accepts: without `queue_delay_ms`
REPORT_QUEUE_SIZE = 30  # with `queue_delay_ms` (offset 28), what this peer sends
NO_QUEUE_DELAY = 0xFFFF  # `queue_delay_ms`: the receiver has no estimate
MUTED = 0x01
RECORDING_FLAG = 0x02  # REPORT flags bit 1, version-3 links only (§14.2): the sender records the meeting
RELAYS = 0x01  # LINKS flags bit 0
UNMEASURED_RTT = 0xFFFF


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
    queue_delay_ms: int | None = None  # §10.1, optional: None when absent (28 bytes) or 65535 (no estimate)

    def encode(self) -> bytes:
        """Always 30 bytes: a None `queue_delay_ms` goes out as 65535, and 65535 itself means none, so an
        estimate is clamped to 65534."""
        queue = NO_QUEUE_DELAY if self.queue_delay_ms is None else max(0, min(self.queue_delay_ms, NO_QUEUE_DELAY - 1))
        return bytes([REPORT]) + struct.pack(
            ">IIIIIHIBBH", self.timestamp_ms % 2**32, self.echo_timestamp_ms % 2**32, self.echo_delay_ms % 2**32,
            self.media_received % 2**32, self.media_expected % 2**32, min(self.loss_permille, 1000),
            min(self.jitter_us, 2**32 - 1), self.flags, 0, queue)

    @property
    def muted(self) -> bool:
        return bool(self.flags & MUTED)


@dataclass(frozen=True)
class Leave:
    def encode(self) -> bytes:
        return bytes([LEAVE])


@dataclass(frozen=True)
class Links:
    """§13.1: the members whose links with the sender are up over their own direct path (ascending by identity
    key), each with the sender's smoothed RTT in ms (0xFFFF: not measured), and whether the sender relays."""

    relays: bool
    peers: tuple[tuple[bytes, int], ...] = ()

    def encode(self) -> bytes:
        if len(self.peers) > 255:
            raise ValueError("LINKS lists at most 255 members")
        entries = b"".join(key + struct.pack(">H", min(rtt, UNMEASURED_RTT)) for key, rtt in self.peers)
        return bytes([LINKS, RELAYS if self.relays else 0, len(self.peers)]) + entries

    def rtt_to(self, key: bytes) -> int | None:
        return next((rtt for peer, rtt in self.peers if peer == key), None)


@dataclass(frozen=True)
class RelayRefused:
    """§13.3: the sender will not carry what we asked it to relay toward `destination`."""

    destination: bytes
    reason: int

    def encode(self) -> bytes:
        return bytes([RELAY_REFUSED]) + self.destination + bytes([self.reason])


def parse(body: bytes) -> (Report | Leave | Links | RelayRefused | security_code.Message | chat.Chat | chat.ChatAck
                           | chat.Recording | None):
    """None for an unknown type or a message shorter than its type requires (dropped/ignored). The caller drops
    what the link's version does not have (LINKS and RELAY_REFUSED below 2, §14's types below 3)."""
    if not body:
        return None
    kind = body[0]
    if kind in (chat.CHAT, chat.CHAT_ACK, chat.RECORDING):  # §14
        return chat.parse(body)
    if kind in (security_code.COMMIT, security_code.REVEAL):  # §11.1
        try:
            return security_code.Message.parse(body)
        except ValueError:
            return None
    if kind == REPORT:
        if len(body) - 1 < REPORT_SIZE:
            return None  # longer is allowed: later fields are ignored
        values = struct.unpack(">IIIIIHIBB", body[1 : 1 + REPORT_SIZE])
        queue = None  # a 28-byte REPORT (an older sender) has no queue delay
        if len(body) - 1 >= REPORT_QUEUE_SIZE:
            (queue,) = struct.unpack(">H", body[1 + REPORT_SIZE : 1 + REPORT_QUEUE_SIZE])
            queue = None if queue == NO_QUEUE_DELAY else queue
        return Report(*values[:8], queue_delay_ms=queue)
    if kind == LEAVE:
        return Leave()
    if kind == LINKS:
        if len(body) < 3 or len(body) < 3 + 34 * body[2]:
            return None
        peers = tuple((body[3 + 34 * i : 35 + 34 * i], struct.unpack(">H", body[35 + 34 * i : 37 + 34 * i])[0])
                      for i in range(body[2]))
        return Links(bool(body[1] & RELAYS), peers)
    if kind == RELAY_REFUSED:
        if len(body) < 34:
            return None
        return RelayRefused(body[1:33], body[33] if body[33] in (1, 2, 3) else 3)  # unknown reason: 3
    return None
