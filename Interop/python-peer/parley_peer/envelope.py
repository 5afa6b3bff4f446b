"""§6 Signaling envelopes: sealing, opening with §6.4's checks in order, and the messages of §6.5."""

from __future__ import annotations

import os
import re
import time
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions
import nacl.signing

from .identity import Identity, verify_binding
from .invite import WHITE_SPACE
from .replay import ReplayWindow
from .wire import Reader, WireError, u8, u16, u32, u64

VERSION = 1
AD_LABEL = b"parley/v1/envelope\0"
SIGNATURE_LABEL = b"parley/v1/envelope-signature\0"
PADDED_SIZES = (512, 1024, 2048, 4096)
HEADER = 1 + 32 + 32 + 8 + 64 + 2  # type, sender, recipient, sequence, signature, body_length
MIN_ENVELOPE, MAX_ENVELOPE = 180, 4137
BROADCAST = bytes(32)

HELLO, ICE_CREDENTIALS, ICE_CANDIDATE, ICE_CANDIDATES_DONE, ICE_RESTART, BYE = range(1, 7)
SEALED_TYPES = {ICE_CREDENTIALS, ICE_CANDIDATE}
BROADCAST_TYPES = {HELLO, BYE}


class EnvelopeError(ValueError):
    """Why an envelope was dropped (§6.4); never fatal."""


# MARK: messages (§6.5)


@dataclass(frozen=True)
class Hello:
    static_key: bytes
    binding_signature: bytes
    session_epoch: int
    versions: tuple[int, ...]
    display_name: str
    type = HELLO

    def body(self) -> bytes:
        name = self.display_name.encode()
        return (
            self.static_key
            + self.binding_signature
            + u64(self.session_epoch)
            + u8(len(self.versions))
            + bytes(self.versions)
            + u8(len(name))
            + name
        )

    @staticmethod
    def parse(reader: Reader) -> Hello:
        static_key = reader.take(32, "static_key")
        signature = reader.take(64, "binding_signature")
        epoch = reader.u64("session_epoch")
        versions = tuple(reader.take(reader.u8("version_count"), "versions"))
        name = reader.take(reader.u8("name_length"), "display_name")
        if epoch == 0:
            raise WireError("HELLO: session epoch 0")
        if not 1 <= len(versions) <= 16 or 0 in versions or list(versions) != sorted(set(versions)):
            raise WireError("HELLO: versions must be 1 to 16 non-zero values, strictly ascending")
        return Hello(static_key, signature, epoch, versions, check_display_name(name))


def _joins_emoji(name: str, index: int) -> bool:
    """§6.5.1: U+200D is allowed right after a non-ASCII So or Sk scalar (or U+FE0F) and right before a
    non-ASCII So scalar."""
    if name[index] != "\u200d" or index == 0 or index + 1 == len(name):
        return False
    before, after = name[index - 1], name[index + 1]
    before_ok = ord(before) > 0x7F and (unicodedata.category(before) in ("So", "Sk") or before == "\ufe0f")
    return before_ok and ord(after) > 0x7F and unicodedata.category(after) == "So"


def check_display_name(raw: bytes) -> str:
    """§6.5.1: 1–64 bytes of UTF-8; no Cc, line/paragraph separators or format characters (Cf, but for a
    zero-width joiner inside an emoji sequence); no white space at the ends."""
    if not 1 <= len(raw) <= 64:
        raise WireError("HELLO: display name must be 1 to 64 bytes")
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("HELLO: display name is not UTF-8") from None
    for index, character in enumerate(name):
        category = unicodedata.category(character)
        if category in ("Cc", "Zl", "Zp") or (category == "Cf" and not _joins_emoji(name, index)):
            raise WireError(f"HELLO: display name contains U+{ord(character):04X}")
    if name[0] in WHITE_SPACE or name[-1] in WHITE_SPACE:
        raise WireError("HELLO: display name has white space at an end")
    return name


@dataclass(frozen=True)
class ICECredentials:
    generation: int
    ufrag: str
    password: str
    type = ICE_CREDENTIALS

    def body(self) -> bytes:
        ufrag, password = self.ufrag.encode(), self.password.encode()
        return u32(self.generation) + u8(len(ufrag)) + ufrag + u8(len(password)) + password

    @staticmethod
    def parse(reader: Reader) -> ICECredentials:
        generation = reader.u32("generation")
        ufrag = reader.take(reader.u8("ufrag_length"), "ufrag")
        password = reader.take(reader.u8("password_length"), "password")
        for value, low, what in ((ufrag, 4, "ufrag"), (password, 22, "password")):
            if len(value) < low or not re.fullmatch(rb"[A-Za-z0-9+/]+", value):
                raise WireError(f"ICE_CREDENTIALS: bad {what}")
        return ICECredentials(generation, ufrag.decode(), password.decode())


@dataclass(frozen=True)
class ICECandidate:
    generation: int
    candidate: str  # "candidate:..." (RFC 5245 §15.1 attribute value)
    type = ICE_CANDIDATE

    def body(self) -> bytes:
        return u32(self.generation) + u16(len(self.candidate)) + self.candidate.encode()

    @staticmethod
    def parse(reader: Reader) -> ICECandidate:
        generation = reader.u32("generation")
        candidate = reader.take(reader.u16("candidate_length"), "candidate")
        printable = re.fullmatch(rb"[\x20-\x7e]+", candidate)
        if len(candidate) > 512 or not candidate.startswith(b"candidate:") or not printable:
            raise WireError("ICE_CANDIDATE: not a printable candidate: line of at most 512 bytes")
        return ICECandidate(generation, candidate.decode())


@dataclass(frozen=True)
class ICECandidatesDone:
    generation: int
    type = ICE_CANDIDATES_DONE

    def body(self) -> bytes:
        return u32(self.generation)

    @staticmethod
    def parse(reader: Reader) -> ICECandidatesDone:
        return ICECandidatesDone(reader.u32("generation"))


@dataclass(frozen=True)
class ICERestart:
    generation: int
    type = ICE_RESTART

    def body(self) -> bytes:
        return u32(self.generation)

    @staticmethod
    def parse(reader: Reader) -> ICERestart:
        return ICERestart(reader.u32("generation"))


@dataclass(frozen=True)
class Bye:
    reason: int = 0
    type = BYE

    def body(self) -> bytes:
        return u8(self.reason)

    @staticmethod
    def parse(reader: Reader) -> Bye:
        return Bye(reader.u8("reason"))


MESSAGE_TYPES = {m.type: m for m in (Hello, ICECredentials, ICECandidate, ICECandidatesDone, ICERestart, Bye)}
Message = Hello | ICECredentials | ICECandidate | ICECandidatesDone | ICERestart | Bye


# MARK: sealing and opening (§6.1–§6.4)


def associated_data(room_id: bytes) -> bytes:
    return AD_LABEL + u8(VERSION) + room_id


def signed_bytes(room_id: bytes, kind: int, sender: bytes, recipient: bytes, sequence: int, body: bytes) -> bytes:
    return SIGNATURE_LABEL + room_id + u8(kind) + sender + recipient + u64(sequence) + body


def padded_size(plaintext_length: int) -> int:
    for size in PADDED_SIZES:
        if plaintext_length <= size:
            return size
    raise ValueError(f"an envelope body of {plaintext_length - HEADER} bytes is too long")


@dataclass(frozen=True)
class Received:
    sender: bytes
    recipient: bytes
    sequence: int
    message: Message | None  # None: an unknown type from a newer peer (authenticated, ignored)


class Signaling:
    """One node's envelope layer for one room: seals what it sends, checks what it receives."""

    def __init__(self, room_id: bytes, signaling_key: bytes, identity: Identity, first_sequence: int | None = None):
        self.room_id = room_id
        self.key = signaling_key
        self.identity = identity
        # §6.4 "Sequence numbers": wall-clock microseconds, then +1 per envelope.
        self.sequence = first_sequence if first_sequence is not None else time.time_ns() // 1000
        self.windows: OrderedDict[bytes, ReplayWindow] = OrderedDict()
        self.kept: dict[bytes, ReplayWindow] = {}  # the members' windows, never evicted (§6.4 step 6)

    def seal(self, message: Message, recipient: bytes = BROADCAST, recipient_static_key: bytes | None = None,
             nonce: bytes | None = None, sequence: int | None = None) -> bytes:
        if sequence is None:
            sequence = self.sequence
            self.sequence += 1
        sender = self.identity.identity_key
        body = message.body()
        if message.type in SEALED_TYPES:
            if recipient == BROADCAST or recipient_static_key is None:
                raise ValueError("sealed messages go to one peer, sealed to its static key")
            body = nacl.bindings.crypto_box_seal(sender + body, recipient_static_key)
        signature = self.identity.sign(signed_bytes(self.room_id, message.type, sender, recipient, sequence, body))
        plaintext = u8(message.type) + sender + recipient + u64(sequence) + signature + u16(len(body)) + body
        plaintext += bytes(padded_size(len(plaintext)) - len(plaintext))
        nonce = nonce if nonce is not None else os.urandom(24)
        ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            plaintext, associated_data(self.room_id), nonce, self.key
        )
        return u8(VERSION) + nonce + ciphertext

    def keep(self, sender: bytes) -> None:
        """`sender` is a member: its window stays until `release` (§6.4 step 6)."""
        if sender not in self.kept:
            self.kept[sender] = self.windows.pop(sender, None) or ReplayWindow(64)

    def release(self, sender: bytes) -> None:
        window = self.kept.pop(sender, None)
        if window is not None:
            self.windows[sender] = window

    def open(self, envelope: bytes) -> Received:
        """§6.4, in order; raises EnvelopeError naming the first check that failed."""
        # 1. length and version
        if not MIN_ENVELOPE <= len(envelope) <= MAX_ENVELOPE or envelope[0] != VERSION:
            raise EnvelopeError("bad length or unsupported version")
        # 2. decrypt
        try:
            plaintext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                envelope[25:], associated_data(self.room_id), envelope[1:25], self.key
            )
        except nacl.exceptions.CryptoError:
            raise EnvelopeError("does not decrypt (another room, or tampered)") from None
        # 3. parse, padding zero
        try:
            reader = Reader(plaintext, "envelope")
            kind = reader.u8()
            sender = reader.take(32)
            recipient = reader.take(32)
            sequence = reader.u64()
            signature = reader.take(64)
            body = reader.take(reader.u16(), "body")
        except WireError as error:
            raise EnvelopeError(str(error)) from None
        if any(reader.rest()):
            raise EnvelopeError("non-zero padding")
        # 4. addressed to us, not our own echo
        mine = self.identity.identity_key
        if recipient not in (BROADCAST, mine):
            raise EnvelopeError("misdelivered")
        if sender == mine:
            raise EnvelopeError("our own envelope")
        # 5. signature
        try:
            nacl.signing.VerifyKey(sender).verify(
                signed_bytes(self.room_id, kind, sender, recipient, sequence, body), signature
            )
        except (nacl.exceptions.BadSignatureError, ValueError):
            raise EnvelopeError("bad signature") from None
        # 6. replay window per sender (64 wide): the members' for as long as they are members, besides
        # them the 256 most recent senders; 7. an unknown type creates no window
        message_type = MESSAGE_TYPES.get(kind)
        if message_type is None and sender not in self.kept and sender not in self.windows:
            return Received(sender, recipient, sequence, None)
        window = self.kept.get(sender)
        if window is None:
            window = self.windows.pop(sender, None) or ReplayWindow(64)
            self.windows[sender] = window
            while len(self.windows) > 256:
                self.windows.popitem(last=False)
        if not window.would_accept(sequence):
            raise EnvelopeError("replayed sequence")
        window.record(sequence)
        if message_type is None:
            return Received(sender, recipient, sequence, None)
        # 8. unicast-only types not broadcast
        if recipient == BROADCAST and kind not in BROADCAST_TYPES:
            raise EnvelopeError("a unicast-only message was broadcast")
        # 9. sealed bodies
        if kind in SEALED_TYPES:
            try:
                opened = nacl.bindings.crypto_box_seal_open(
                    body, nacl.bindings.crypto_scalarmult_base(self.identity.static_secret), self.identity.static_secret
                )
            except nacl.exceptions.CryptoError:
                raise EnvelopeError("sealed body does not open") from None
            if opened[:32] != sender:
                raise EnvelopeError("sealed body names another sender")
            body = opened[32:]
        # 10. parse the body exactly
        try:
            reader = Reader(body, message_type.__name__)
            message = message_type.parse(reader)
            reader.finish()
        except WireError as error:
            raise EnvelopeError(str(error)) from None
        if isinstance(message, Hello) and not verify_binding(sender, message.static_key, message.binding_signature):
            raise EnvelopeError("HELLO binding signature does not verify")
        return Received(sender, recipient, sequence, message)
