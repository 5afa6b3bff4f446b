"""§7 the pairwise handshake (Noise IKpsk2 with Parley's framing and mac1) and §8 transport packets.

`PeerSession` is a state machine with an injected clock: feed it datagrams and timer ticks, and it
returns the datagrams to send and the (inner_type, body) pairs it authenticated. It does no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time
from dataclasses import dataclass, field

from nacl.bindings import crypto_scalarmult_base

from .noise import HandshakeState, NoiseError, aead_decrypt, aead_encrypt
from .replay import REJECT_AFTER_MESSAGES, ReplayWindow

PROTOCOL_NAME = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b"
PROLOGUE_LABEL = b"parley/v1/handshake\0"
MAC1_LABEL = b"parley/v1/mac1\0"

INITIATION, RESPONSE, TRANSPORT = 0x01, 0x02, 0x03
INITIATION_SIZE, RESPONSE_SIZE = 132, 76
HEADER_SIZE = 16
MIN_TRANSPORT = HEADER_SIZE + 1 + 16

INNER_KEEPALIVE, INNER_MEDIA, INNER_CONTROL = 0x00, 0x01, 0x02

# §8.6 timers (seconds) and limits.
REKEY_AFTER_TIME = 120.0
RESPONDER_REKEY_TIME = 165.0
REJECT_AFTER_TIME = 180.0
REKEY_TIMEOUT = 5.0
FIRST_RETRY_AFTER_PATH_UP = 0.5  # §7.5: the first initiation over a path that just came up
REKEY_ATTEMPT_TIME = 90.0
KEEPALIVE_TIMEOUT = 10.0
REKEY_AFTER_MESSAGES = 2**60
FLOOD_GUARD = 0.020
# §7.3: initiations that may cost Diffie-Hellman, per session (a receiver's choice; Parley's values).
INITIATION_BURST = 5.0
INITIATIONS_PER_SECOND = 1.0
REMEMBERED_INITIATIONS = 256
NON_LEAD_WAIT = 5.0  # §7.5
REPLAY_WINDOW = (32 - 1) * 64  # §8.4: Parley's choice (a receiver's choice; does not affect interoperation)


def tai64n(unix_ns: int) -> bytes:
    """§7.4: 2^62 + 10 + seconds (big-endian u64) || nanoseconds (big-endian u32)."""
    return struct.pack(">QI", 2**62 + 10 + unix_ns // 10**9, unix_ns % 10**9)


def prologue(version: int, room_id: bytes, initiator_identity: bytes, responder_identity: bytes) -> bytes:
    return PROLOGUE_LABEL + bytes([version]) + room_id + initiator_identity + responder_identity


def mac1_key(mac_key: bytes, static_key: bytes) -> bytes:
    return hashlib.blake2b(MAC1_LABEL + static_key, key=mac_key, digest_size=32).digest()


def mac1(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2b(data, key=key, digest_size=16).digest()


@dataclass
class KeySet:
    """One set of transport keys (§8.5): indices, keys, counter, window, age."""

    local_index: int
    remote_index: int
    send_key: bytes
    receive_key: bytes
    created: float
    made_as_initiator: bool
    send_counter: int = 0
    window: ReplayWindow = field(default_factory=lambda: ReplayWindow(REPLAY_WINDOW))

    def destroy(self) -> None:
        # Python cannot zero immutable bytes; dropping the references is what it can do.
        self.send_key = self.receive_key = b""


@dataclass
class PendingInitiation:
    state: HandshakeState
    index: int
    sent_at: float
    first_attempt_at: float


@dataclass
class SessionStats:
    authentication_failures: int = 0
    dropped: int = 0
    handshakes_completed: int = 0
    initiations_sent: int = 0
    responses_sent: int = 0
    authenticated: int = 0  # datagrams that passed the session's checks (handshake messages and transport)


class TokenBucket:
    """At most `capacity` tokens, refilled at `rate` per second; each initiation takes one."""

    def __init__(self, rate: float, capacity: float, now: float):
        self.rate, self.capacity, self.tokens, self.last = rate, capacity, capacity, now

    def take(self, now: float) -> bool:
        if now > self.last:
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
            self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class PeerSession:
    """The session with one peer over one ICE path (§7, §8)."""

    def __init__(self, *, identity_key: bytes, static_secret: bytes, peer_identity_key: bytes,
                 peer_static_key: bytes, room_id: bytes, noise_psk: bytes, mac_key: bytes, version: int = 1,
                 wall_clock_ns=time.time_ns):
        self.identity_key = identity_key
        self.static_secret = static_secret
        self.peer_identity_key = peer_identity_key
        self.peer_static_key = peer_static_key
        self.room_id = room_id
        self.noise_psk = noise_psk
        self.version = version
        self.wall_clock_ns = wall_clock_ns
        self.is_lead = identity_key < peer_identity_key
        self.static_key = crypto_scalarmult_base(static_secret)
        self.mac1_key_mine = mac1_key(mac_key, self.static_key)  # keys mac1 of messages TO me
        self.mac1_key_peer = mac1_key(mac_key, peer_static_key)  # keys mac1 of messages to the peer
        self.current: KeySet | None = None
        self.previous: KeySet | None = None
        self.next: KeySet | None = None
        self.pending: PendingInitiation | None = None
        self.gave_up = False
        self.last_timestamp_sent = 0
        self.greatest_timestamp_received: bytes | None = None
        self.last_initiation_accepted_at: float | None = None
        self.retry_soon = False  # the first initiation after path_up is resent after 1 s
        self.path_up_at: float | None = None
        self.initiation_budget: TokenBucket | None = None
        self.processed_initiations: dict[bytes, None] = {}  # mac1 of initiations we did DH for, oldest first
        self.last_sent_at: float | None = None
        self.last_received_data_at: float | None = None  # a non-keepalive packet
        self.last_authenticated_at: float | None = None
        self.stats = SessionStats()

    # MARK: handshake (§7)

    def _prologue(self, initiator: bool) -> bytes:
        mine, theirs = self.identity_key, self.peer_identity_key
        return prologue(self.version, self.room_id, *((mine, theirs) if initiator else (theirs, mine)))

    def _new_index(self) -> int:
        used = {k.local_index for k in (self.current, self.previous, self.next) if k}
        if self.pending:
            used.add(self.pending.index)
        while True:
            index = struct.unpack(">I", os.urandom(4))[0]
            if index and index not in used:
                return index

    def _timestamp(self) -> bytes:
        now = max(self.wall_clock_ns(), self.last_timestamp_sent + 1)  # §7.4: strictly increasing
        self.last_timestamp_sent = now
        return tai64n(now)

    def create_initiation(self, now: float, *, ephemeral: bytes | None = None, index: int | None = None,
                          timestamp: bytes | None = None) -> bytes:
        """A new initiation (a retry is a new one: §7.5). Fixed values are for the test vectors only."""
        state = HandshakeState(PROTOCOL_NAME, True, self._prologue(True), s=self.static_secret,
                               rs=self.peer_static_key, psks=[self.noise_psk], ephemeral=ephemeral)
        index = index if index is not None else self._new_index()
        first = self.pending.first_attempt_at if self.pending else now
        message = bytes([INITIATION, 0, 0, 0]) + struct.pack(">I", index)
        message += state.write_message(timestamp if timestamp is not None else self._timestamp())
        message += mac1(self.mac1_key_peer, message)
        self.pending = PendingInitiation(state, index, now, first)
        self.gave_up = False
        self.stats.initiations_sent += 1
        self.last_sent_at = now
        return message

    def _receive_initiation(self, packet: bytes, now: float, ephemeral: bytes | None = None,
                            index: int | None = None) -> list[bytes]:
        # §7.3 responder, steps 1–7.
        if len(packet) != INITIATION_SIZE or packet[1:4] != bytes(3):
            return self._drop()
        if not hmac.compare_digest(mac1(self.mac1_key_mine, packet[:-16]), packet[-16:]):
            return self._drop()
        # Steps 3-4, before any Diffie-Hellman: a copy of an initiation already processed is a
        # replay, and a flood of others may not cost more than the budget.
        if packet[-16:] in self.processed_initiations:
            return self._drop()
        if self.initiation_budget is None:
            self.initiation_budget = TokenBucket(INITIATIONS_PER_SECOND, INITIATION_BURST, now)
        if not self.initiation_budget.take(now):
            return self._drop()
        self.processed_initiations[packet[-16:]] = None
        if len(self.processed_initiations) > REMEMBERED_INITIATIONS:
            del self.processed_initiations[next(iter(self.processed_initiations))]
        state = HandshakeState(PROTOCOL_NAME, False, self._prologue(False), s=self.static_secret,
                               psks=[self.noise_psk], ephemeral=ephemeral)
        try:
            payload = state.read_message(packet[8:-16])
        except NoiseError:
            return self._drop()
        if state.rs != self.peer_static_key or len(payload) != 12:
            return self._drop()
        if struct.unpack(">I", payload[8:])[0] >= 10**9:
            return self._drop()
        if self.greatest_timestamp_received is not None and payload <= self.greatest_timestamp_received:
            return self._drop()  # replayed initiation (big-endian bytes compare as numbers)
        if self.last_initiation_accepted_at is not None and now - self.last_initiation_accepted_at < FLOOD_GUARD:
            return self._drop()
        if self.pending is not None:  # glare (§7.5)
            if self.is_lead:
                return self._drop()
            self.pending = None
            self.retry_soon = False
        self.greatest_timestamp_received = payload
        self.last_initiation_accepted_at = now
        peer_index = struct.unpack(">I", packet[4:8])[0]
        my_index = index if index is not None else self._new_index()
        response = bytes([RESPONSE, 0, 0, 0]) + struct.pack(">II", my_index, peer_index)
        response += state.write_message(b"")
        response += mac1(self.mac1_key_peer, response)
        to_responder, to_initiator = state.split()
        if self.next:
            self.next.destroy()
        self.next = KeySet(my_index, peer_index, to_initiator.key, to_responder.key, now, made_as_initiator=False)
        self.gave_up = False
        self.stats.responses_sent += 1
        self.last_sent_at = now
        self._authenticated(now)
        return [response]

    def _receive_response(self, packet: bytes, now: float) -> list[bytes]:
        # §7.3 initiator, steps 1–4.
        if len(packet) != RESPONSE_SIZE or packet[1:4] != bytes(3) or self.pending is None:
            return self._drop()
        if struct.unpack(">I", packet[8:12])[0] != self.pending.index:
            return self._drop()
        if not hmac.compare_digest(mac1(self.mac1_key_mine, packet[:-16]), packet[-16:]):
            return self._drop()
        state = self.pending.state
        saved = (state.symmetric.h, state.symmetric.ck, state.symmetric.cipher, state.re, state.message_index,
                 list(state.psks))
        try:
            payload = state.read_message(packet[12:-16])
            if payload:
                raise NoiseError("non-empty payload")
        except NoiseError:
            # Keep the pending handshake: restore what the failed read changed.
            (state.symmetric.h, state.symmetric.ck, state.symmetric.cipher, state.re, state.message_index,
             state.psks) = saved
            return self._drop()
        to_responder, to_initiator = state.split()
        keys = KeySet(self.pending.index, struct.unpack(">I", packet[4:8])[0], to_responder.key, to_initiator.key,
                      now, made_as_initiator=True)
        self.pending = None
        self.retry_soon = False
        self._install_current(keys)
        self.stats.handshakes_completed += 1
        self._authenticated(now)
        return [self.seal(INNER_KEEPALIVE, b"", now)]  # §7.3 step 4: confirm at once

    def _install_current(self, keys: KeySet) -> None:
        if self.previous:
            self.previous.destroy()
        self.previous = self.current
        self.current = keys

    # MARK: transport (§8)

    def seal(self, inner_type: int, body: bytes, now: float) -> bytes | None:
        """A transport packet under the current keys, or None when there are none usable."""
        keys = self.current
        if keys is None or now - keys.created >= REJECT_AFTER_TIME or keys.send_counter >= REJECT_AFTER_MESSAGES:
            return None
        header = bytes([TRANSPORT, 0, 0, 0]) + struct.pack(">IQ", keys.remote_index, keys.send_counter)
        keys.send_counter += 1
        self.last_sent_at = now
        return header + aead_encrypt(keys.send_key, keys.send_counter - 1, header, bytes([inner_type]) + body)

    def receive(self, datagram: bytes, now: float) -> tuple[list[bytes], list[tuple[int, bytes]]]:
        """Returns (datagrams to send back, authenticated (inner_type, body) pairs)."""
        if not datagram:
            return self._drop(), []
        kind = datagram[0]
        if kind == INITIATION:
            return self._receive_initiation(datagram, now), []
        if kind == RESPONSE:
            return self._receive_response(datagram, now), []
        if kind == TRANSPORT:
            delivered = self._receive_transport(datagram, now)
            return [], delivered
        return self._drop(), []

    def _receive_transport(self, packet: bytes, now: float) -> list[tuple[int, bytes]]:
        # §8.4 steps 1–8.
        if len(packet) < MIN_TRANSPORT or packet[1:4] != bytes(3):
            self._drop()
            return []
        receiver_index, counter = struct.unpack(">IQ", packet[4:16])
        slot = next((s for s in ("current", "previous", "next")
                     if getattr(self, s) and getattr(self, s).local_index == receiver_index), None)
        if slot is None:
            self._drop()
            return []
        keys: KeySet = getattr(self, slot)
        if now - keys.created >= REJECT_AFTER_TIME or not keys.window.would_accept(counter):
            self._drop()
            return []
        try:
            plaintext = aead_decrypt(keys.receive_key, counter, packet[:16], packet[16:])
        except NoiseError:
            # §8.7: counted, and nothing else: unauthenticated input never destroys keys.
            self.stats.authentication_failures += 1
            return []
        keys.window.record(counter)
        if slot == "next":
            self.next = None
            self._install_current(keys)
            self.stats.handshakes_completed += 1
        self._authenticated(now)
        inner_type, body = plaintext[0], plaintext[1:]
        if inner_type == INNER_KEEPALIVE:
            return []  # nothing to deliver (one with a body is dropped, §8.3)
        self.last_received_data_at = now
        return [(inner_type, body)]

    def _authenticated(self, now: float) -> None:
        self.last_authenticated_at = now
        self.stats.authenticated += 1

    def _drop(self) -> list[bytes]:
        self.stats.dropped += 1
        return []

    # MARK: timers (§7.5, §8.6)

    def path_up(self, now: float) -> list[bytes]:
        self.path_up_at = now
        self.gave_up = False
        self.retry_soon = True
        if self.is_lead and self.current is None and self.pending is None:
            return [self.create_initiation(now)]
        return []

    def tick(self, now: float) -> list[bytes]:
        """Run the timers; returns datagrams to send."""
        out: list[bytes] = []
        for slot in ("current", "previous", "next"):
            keys = getattr(self, slot)
            if keys and now - keys.created >= REJECT_AFTER_TIME:
                keys.destroy()
                setattr(self, slot, None)
        if self.path_up_at is None:
            return out
        if self.pending is not None:
            if now - self.pending.first_attempt_at >= REKEY_ATTEMPT_TIME:
                self.pending = None
                self.gave_up = True  # the path is dead; tried again on restart or when the peer speaks
            elif now - self.pending.sent_at >= (FIRST_RETRY_AFTER_PATH_UP if self.retry_soon else REKEY_TIMEOUT):
                self.retry_soon = False
                out.append(self.create_initiation(now))
            return out
        if self.gave_up:
            return out
        if self._wants_handshake(now):
            out.append(self.create_initiation(now))
        elif (self.current and self.last_received_data_at is not None
              and (self.last_sent_at is None or self.last_sent_at < self.last_received_data_at)
              and now - self.last_received_data_at >= KEEPALIVE_TIMEOUT):
            keepalive = self.seal(INNER_KEEPALIVE, b"", now)
            if keepalive:
                out.append(keepalive)
        return out

    def _wants_handshake(self, now: float) -> bool:
        current = self.current
        if self.is_lead and current is None:
            return True
        if current is None:
            since = max(self.path_up_at or now, self.last_initiation_accepted_at or -1e18)
            return now - since >= NON_LEAD_WAIT
        age = now - current.created
        if current.made_as_initiator:
            young_next = self.next is not None and now - self.next.created < REKEY_TIMEOUT
            return (age >= REKEY_AFTER_TIME or current.send_counter >= REKEY_AFTER_MESSAGES) and not young_next
        return age >= RESPONDER_REKEY_TIME

    @property
    def has_keys(self) -> bool:
        return self.current is not None
