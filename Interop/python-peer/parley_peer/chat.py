"""§14 (version 3) as far as a receiver must go: CHAT and CHAT_ACK (§14.1), RECORDING (§14.2), and the receiving
end of a chat stream. This peer offers version 4 (§15), which includes version 3, so a member may send it chat
and tell it of recordings; it sends no chat of its own (nothing obliges a member to), and it tells its peers
that it records (REPORT flag bit 1, control.RECORDING_FLAG) when it writes what it hears to files."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

CHAT, CHAT_ACK, RECORDING = 0x07, 0x08, 0x09
VERSION = 3  # the link version that carries these
MORE = 0x01  # CHAT flags bit 0: the message continues in the next sequence
RECORDS = 0x01  # RECORDING flags bit 0
MAX_PIECE, MAX_MESSAGE = 1024, 4096
AHEAD = 64  # pieces a receiver keeps beyond `received` (a sender sends at most 16 ahead)


@dataclass(frozen=True)
class Chat:
    """`chat = sequence: u32 || first: u32 || flags: u8 || text` (§14.1): one piece of a message."""

    sequence: int
    first: int
    more: bool
    text: bytes

    def encode(self) -> bytes:
        return bytes([CHAT]) + struct.pack(">IIB", self.sequence, self.first, MORE if self.more else 0) + self.text


@dataclass(frozen=True)
class ChatAck:
    cumulative: int

    def encode(self) -> bytes:
        return bytes([CHAT_ACK]) + struct.pack(">I", self.cumulative)


@dataclass(frozen=True)
class Recording:
    records: bool

    def encode(self) -> bytes:
        return bytes([RECORDING, RECORDS if self.records else 0])


def parse(body: bytes) -> Chat | ChatAck | Recording | None:
    """None for what §14 says receivers drop: a CHAT with sequence 0, first 0 or above sequence, or a text of 0 or
    more than 1024 bytes; a message shorter than its type needs. Longer CHAT_ACK and RECORDING are allowed (§10);
    CHAT has no room for appended fields (its text is the rest)."""
    kind = body[0] if body else None
    if kind == CHAT and len(body) >= 10:
        sequence, first, flags = struct.unpack(">IIB", body[1:10])
        text = body[10:]
        if sequence == 0 or not 1 <= first <= sequence or not 1 <= len(text) <= MAX_PIECE:
            return None
        return Chat(sequence, first, bool(flags & MORE), text)
    if kind == CHAT_ACK and len(body) >= 5:
        return ChatAck(struct.unpack(">I", body[1:5])[0])
    if kind == RECORDING and len(body) >= 2:
        return Recording(bool(body[1] & RECORDS))
    return None


def shown(text: str) -> str:
    """§14.1: control characters other than tab and line feed become U+FFFD, so no member can send terminal
    escape sequences to another's screen (or log)."""
    return "".join("\ufffd" if (ord(c) < 0x20 and c not in "\t\n") or 0x7F <= ord(c) <= 0x9F else c for c in text)


@dataclass
class ChatReceiver:
    """The receiving end of one sender's stream (§14.1 "Receiving"). It belongs to the sender's run (identity and
    session epoch), not to a link: it goes on across ICE restarts, new handshakes and relaying."""

    received: int = 0  # every piece up to this one arrived
    ahead: dict[int, Chat] = field(default_factory=dict)
    partial: bytes | None = b""  # the message being put together; None: it grew past 4096 bytes, dropped at its end

    def receive(self, piece: Chat) -> list[str]:
        """Steps 1–3: the messages this piece completed, in order. The caller answers CHAT_ACK(`received`)."""
        if piece.first > self.received + 1:  # the sender gave up what we wait for
            self.received = piece.first - 1
            self.ahead = {s: p for s, p in self.ahead.items() if s > self.received}
            self.partial = b""
        if self.received < piece.sequence <= self.received + AHEAD:
            self.ahead.setdefault(piece.sequence, piece)
        completed = []
        while (step := self.ahead.pop(self.received + 1, None)) is not None:
            self.received += 1
            if self.partial is not None:
                self.partial += step.text
                if len(self.partial) > MAX_MESSAGE:
                    self.partial = None  # too long: dropped, and no more of it is kept
            if not step.more:
                message, self.partial = self.partial, b""
                if message is not None:
                    try:
                        completed.append(shown(message.decode("utf-8")))
                    except UnicodeDecodeError:
                        pass  # not UTF-8 as a whole: dropped
        return completed
