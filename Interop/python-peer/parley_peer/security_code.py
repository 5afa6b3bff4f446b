"""§11.1 Meeting security code: the commit/reveal agreement per view, and the code it yields.

`SecurityCodeAgreement` is a state machine like the Swift one (`SecurityCodeAgreement.swift`), written from
the document: feed it view changes and the COMMIT/REVEAL messages peers send; it returns (peer, message)
pairs to send over the sessions (as session control payloads, §10) and keeps the code once agreed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from typing import Callable

VIEW_LABEL = b"parley/v1/code-view\0"
COMMIT_LABEL = b"parley/v1/code-commit\0"
CODE_LABEL = b"parley/v1/code\0"
COMMIT, REVEAL = 0x03, 0x04
COMMIT_LENGTH, REVEAL_LENGTH = 72, 73
MAXIMUM_ROUND_STEP = 1 << 32
UINT64_MAX = (1 << 64) - 1


class ViewError(ValueError):
    """The view cannot have a code (the reason is shown to the user)."""


def view_hash(room_id: bytes, members: list[tuple[bytes, str]]) -> bytes:
    """members: (identity key, display name), any order; the node itself included."""
    ordered = sorted(members)
    if len(ordered) > 0xFFFF:
        raise ViewError("more than 65535 members in the meeting")
    data = VIEW_LABEL + room_id + struct.pack(">H", len(ordered))
    for index, (key, name) in enumerate(ordered):
        encoded = name.encode()
        if len(key) != 32:
            raise ViewError("an identity key is not 32 bytes")
        if not 1 <= len(encoded) <= 255:
            raise ViewError("a member's name is empty or longer than 255 bytes")
        if index and ordered[index - 1][0] == key:
            raise ViewError(f"one identity key appears twice ({key[:4].hex()})")
        data += key + bytes([len(encoded)]) + encoded
    return hashlib.blake2b(data, digest_size=32).digest()


def commitment(sender: bytes, view: bytes, round_: int, nonce: bytes) -> bytes:
    return hashlib.blake2b(COMMIT_LABEL + sender + view + struct.pack(">Q", round_) + nonce, digest_size=32).digest()


def code(view: bytes, nonces: list[bytes]) -> str:
    """12 digits from the view hash and every member's nonce, in the view's member order."""
    h = hashlib.blake2b(CODE_LABEL + view + b"".join(nonces), digest_size=64).digest()
    return f"{int.from_bytes(h[:8], 'big') % 10**12:012d}"


def display(digits: str) -> str:
    return " ".join(digits[i : i + 4] for i in range(0, 12, 4))


@dataclass(frozen=True)
class Message:
    """COMMIT (value = commitment) or REVEAL (value = nonce, complete flag)."""

    kind: int
    view: bytes
    round: int
    value: bytes
    complete: bool = False

    def encode(self) -> bytes:
        body = self.view + struct.pack(">Q", self.round) + self.value
        if self.kind == REVEAL:
            body += bytes([1 if self.complete else 0])
        return bytes([self.kind]) + body

    @staticmethod
    def parse(payload: bytes) -> "Message | None":
        """A session control payload (type included) of type 0x03 or 0x04; None for another type. Raises
        ValueError for one that is too short (longer is allowed, §10)."""
        kind = payload[0]
        if kind not in (COMMIT, REVEAL):
            return None
        needed = 1 + (COMMIT_LENGTH if kind == COMMIT else REVEAL_LENGTH)
        if len(payload) < needed:
            raise ValueError("short security code message")
        view, (round_,), value = payload[1:33], struct.unpack(">Q", payload[33:41]), payload[41:73]
        return Message(kind, view, round_, value, kind == REVEAL and payload[73] & 1 == 1)


class SecurityCodeAgreement:
    def __init__(self, room_id: bytes, identity_key: bytes, name: str,
                 nonces: Callable[[], bytes] = lambda: os.urandom(32)):
        self.room_id, self.me, self.name, self.make_nonce = room_id, identity_key, name, nonces
        self.view: bytes | None = None
        self.members: list[bytes] = []  # identity keys in view order
        self.round = 0
        self.nonce = b""
        self.revealed = False
        self.commitments: dict[bytes, bytes] = {}
        self.nonces: dict[bytes, bytes] = {}
        self.latest: dict[bytes, Message] = {}
        self.code: str | None = None
        self.unavailable: str | None = None

    # MARK: inputs

    def view_changed(self, peers: list[tuple[bytes, str]]) -> list[tuple[bytes, Message]]:
        """peers: (identity key, name) of every member with an established session."""
        try:
            new_view = view_hash(self.room_id, peers + [(self.me, self.name)])
        except ViewError as error:
            self.view, self.code, self.unavailable = None, None, str(error)
            return []
        if new_view == self.view:
            return []
        self.view, self.unavailable = new_view, None
        self.members = sorted(key for key, _ in peers + [(self.me, self.name)])
        self.latest = {sender: message for sender, message in self.latest.items() if sender in self.members}
        if self.round == UINT64_MAX:
            self.view, self.unavailable = None, "the security code's rounds are exhausted; restart the meeting"
            return []
        higher = [m.round for m in self.latest.values() if m.view == new_view and self._followable(m.round)]
        self._start_round(max([self.round + 1] + higher))
        self._record_stored()
        return self._progress(announce=True)

    def received(self, message: Message, sender: bytes) -> list[tuple[bytes, Message]]:
        if sender == self.me:
            return []
        self.latest[sender] = message
        if self.view is None or sender not in self.members or message.view != self.view:
            return []
        if message.round < self.round:
            return [(sender, self._current())]
        if message.round > self.round:
            if not self._followable(message.round):
                return []
            self._start_round(message.round)
            self._record_stored()
            return self._progress(announce=True)
        self._record(message, sender)
        out = self._progress(announce=False)
        if self.code is not None and not message.complete and all(peer != sender for peer, _ in out):
            out.append((sender, self._current()))
        return out

    def repeated(self, peer: bytes) -> Message | None:
        """What to repeat to `peer` with a REPORT while not complete."""
        if self.view is None or self.code is not None or peer == self.me or peer not in self.members:
            return None
        return self._current()

    # MARK: rounds

    def _followable(self, other: int) -> bool:
        return self.round < other <= self.round + MAXIMUM_ROUND_STEP

    def _start_round(self, number: int) -> None:
        self.round, self.nonce, self.revealed = number, self.make_nonce(), False
        self.commitments, self.nonces, self.code = {}, {}, None

    def _record_stored(self) -> None:
        for sender, message in self.latest.items():
            if message.view == self.view and message.round == self.round:
                self._record(message, sender)

    def _record(self, message: Message, sender: bytes) -> None:
        if message.kind == COMMIT:
            self.commitments.setdefault(sender, message.value)
            return
        opened = commitment(sender, self.view, self.round, message.value)
        held = self.commitments.setdefault(sender, opened)
        if hmac.compare_digest(held, opened):
            self.nonces[sender] = message.value

    def _progress(self, announce: bool) -> list[tuple[bytes, Message]]:
        others = [key for key in self.members if key != self.me]
        changed = announce
        if not self.revealed and all(key in self.commitments for key in others):
            self.revealed = changed = True
        if self.revealed and all(key in self.nonces for key in others):
            self.code = code(self.view, [self.nonce if key == self.me else self.nonces[key] for key in self.members])
        return [(key, self._current()) for key in others] if changed else []

    def _current(self) -> Message:
        if self.revealed:
            return Message(REVEAL, self.view, self.round, self.nonce, self.code is not None)
        return Message(COMMIT, self.view, self.round, commitment(self.me, self.view, self.round, self.nonce))

    @property
    def waiting_for(self) -> list[bytes]:
        held = self.nonces if self.revealed else self.commitments
        return [key for key in self.members if key != self.me and key not in held]
