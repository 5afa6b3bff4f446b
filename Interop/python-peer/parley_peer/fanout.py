"""§15 one copy up (version 4): signed frames (§15.1), what a receiver checks before it plays a frame a member
fanned out to it (§15.2), and what the member that fans out carries (§15.3). Plain values without I/O: the node
(peer.py) seals and sends what these decide.

The member in the middle hears the audio anyway (it is in the meeting); what it must not be able to do is make a
frame up, change one, or replay one into another meeting or another run of its sender. So every fanned frame is
signed with the sender's identity key over the room id and the sender's session epoch, and each receiver keeps a
replay window of its own per origin: the member's session with the receiver authenticates the member, not the
frame.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import nacl.exceptions
import nacl.signing

from .identity import Identity
from .media import MAX_PAYLOAD
# The relay packet's parser (relay.py) needs the kind and the payload's bounds, so they live there.
from .relay import (BUSY, DECLINES, FAN_DELIVER, NOT_LINKED, SIGNED_FRAME_MAX, SIGNED_FRAME_MIN,  # noqa: F401
                    Refusal)
from .replay import ReplayWindow
from .wire import u64

INNER_FAN_OUT = 0x04  # §8.3, version 4: the body is one signed frame
VERSION = 4  # the link version that carries INNER_FAN_OUT and FAN_DELIVER

CONTEXT = b"parley/v4/fan-out\0"
COUNTER_SIZE, SIGNATURE_SIZE = 8, 64
MEDIA_OFFSET = COUNTER_SIZE + SIGNATURE_SIZE  # 72: what a signed frame costs on top of its media
MIN_MEDIA = 10  # §9.2: a shorter media payload is dropped anyway
assert (SIGNED_FRAME_MIN, SIGNED_FRAME_MAX) == (MEDIA_OFFSET + MIN_MEDIA, MEDIA_OFFSET + MAX_PAYLOAD)  # 82, 1272

# §15.3, the member that fans out.
MAX_SENDERS = 2  # senders it fans out for at a time ...
SENDER_IDLE = 10.0  # ... not counting one whose FAN_OUTs stopped this long ago (seconds)
FAN_OUTS_PER_SECOND, FAN_OUT_BURST = 110.0, 20.0  # FAN_OUTs passed on per sender
REFUSAL_EVERY = 1.0  # RELAY_REFUSED at most this often per sender
# §15.3, the sender: a member that refused our fan-out is not chosen again for this long (as §13.3's refusals).
REFUSAL_MEMORY = 30.0
# §15.2 step 0, the receiver: FAN_DELIVERs one member may make us check (an Ed25519 verification each), as Parley:
# two senders at 110 a second, with room. Beyond it they are dropped unchecked.
DELIVERIES_PER_SECOND, DELIVERY_BURST = 250.0, 50.0


def signed_message(room_id: bytes, session_epoch: int, counter: int, media: bytes) -> bytes:
    """What the signature covers (§15.1): the room and the sender's run, so a frame is good in one meeting of one
    run of its sender only, and the counter, so a receiver's window can tell a replay."""
    return CONTEXT + room_id + u64(session_epoch) + u64(counter) + media


def sign_frame(identity: Identity, room_id: bytes, session_epoch: int, counter: int, media: bytes) -> bytes:
    """`signed_frame = counter: u64 || signature[64] || media` (§15.1). `media` is one §9.1 payload, as the
    sender would send it directly."""
    if not MIN_MEDIA <= len(media) <= MAX_PAYLOAD:
        raise ValueError(f"a media payload of {len(media)} bytes (§9.1: 10 to 1200)")
    if len(room_id) != 32:
        raise ValueError("room_id is 32 bytes")
    return u64(counter) + identity.sign(signed_message(room_id, session_epoch, counter, media)) + media


def frame_counter(signed_frame: bytes) -> int:
    return int.from_bytes(signed_frame[:COUNTER_SIZE], "big")


def open_frame(signed_frame: bytes, origin_identity_key: bytes, room_id: bytes, session_epoch: int,
               window: ReplayWindow, dropped: Counter | None = None) -> tuple[int, bytes] | None:
    """§15.2 steps 2–4 for a FAN_DELIVER's payload: (counter, media) to play as media from the origin, or None
    to drop it. `window` is the origin's fan-out replay window; it moves only for a frame whose signature
    verified, so nothing a member makes up can shift it. `dropped`, if given, counts why frames were dropped:
    "length", "replay" or "signature" (§8.7: a forgery is counted and changes nothing else)."""
    def drop(reason: str) -> None:
        if dropped is not None:
            dropped[reason] += 1

    if not SIGNED_FRAME_MIN <= len(signed_frame) <= SIGNED_FRAME_MAX:
        drop("length")
        return None
    counter = frame_counter(signed_frame)
    if not window.would_accept(counter):  # the cheap check first, as §8.4 step 4
        drop("replay")
        return None
    signature, media = signed_frame[COUNTER_SIZE:MEDIA_OFFSET], signed_frame[MEDIA_OFFSET:]
    try:
        nacl.signing.VerifyKey(origin_identity_key).verify(
            signed_message(room_id, session_epoch, counter, media), signature)
    except (nacl.exceptions.BadSignatureError, ValueError):
        drop("signature")
        return None
    window.record(counter)
    return counter, media


@dataclass
class DeliveryBudget:
    """§15.2 step 0: how many FAN_DELIVERs each member that passes frames on may make this node check, so that a
    member cannot make it spend without end on signatures (honest members stay far below)."""

    budget: dict[bytes, tuple[float, float]] = field(default_factory=dict)  # carrier -> (tokens, at)

    def accept(self, carrier: bytes, now: float) -> bool:
        tokens, at = self.budget.get(carrier, (DELIVERY_BURST, now))
        tokens = min(DELIVERY_BURST, tokens + max(0.0, now - at) * DELIVERIES_PER_SECOND)
        accepted = tokens >= 1
        self.budget[carrier] = (tokens - 1 if accepted else tokens, now)
        return accepted

    def keep_only(self, carriers) -> None:
        """Forgets the members we no longer have a link with."""
        self.budget = {k: v for k, v in self.budget.items() if k in carriers}


@dataclass(frozen=True)
class Decision:
    """What the member does with one FAN_OUT of 82–1272 bytes beyond playing it (§15.3): pass it on, hold it
    back without a word (over the sender's rate: a sender catching up after a stall keeps its place), or refuse
    (`refusal`, answered with RELAY_REFUSED when `refusal.tell`)."""

    passed_on: bool
    refusal: Refusal | None = None


PASS_ON = Decision(True)
OVER_RATE = Decision(False)


@dataclass
class FanOutTable:
    """Whether this node passes on a sender's FAN_OUT (§15.3, "the member B"): only if it relays for others (its
    LINKS flag) and the sender's link with it is up over its own direct path (`linked`, the members its LINKS
    lists), for at most MAX_SENDERS senders at a time and FAN_OUTS_PER_SECOND per sender. It plays every FAN_OUT
    of 82–1272 bytes either way; a sender it does not fan out for it answers with RELAY_REFUSED (reason 1, 2 or
    3), at most once a second per sender; a sender with a place whose FAN_OUTs come faster than its rate is not
    answered: those beyond the rate are simply not passed on."""

    relays: bool = True
    linked: frozenset[bytes] = frozenset()
    senders: dict[bytes, float] = field(default_factory=dict)  # the senders fanned out for -> their last FAN_OUT
    budget: dict[bytes, tuple[float, float]] = field(default_factory=dict)  # sender -> (tokens, at)
    refused_at: dict[bytes, float] = field(default_factory=dict)
    passed_on: dict[bytes, int] = field(default_factory=dict)  # FAN_OUTs passed on per sender
    over_rate: dict[bytes, int] = field(default_factory=dict)  # FAN_OUTs held back by the rate limit per sender

    def update(self, linked: frozenset[bytes], relays: bool) -> None:
        """Forgets the senders no longer linked: a sender whose link went down and comes back starts afresh."""
        self.linked, self.relays = linked, relays
        self.senders = {k: t for k, t in self.senders.items() if k in linked}
        self.budget = {k: v for k, v in self.budget.items() if k in linked}
        # refused_at stays: it paces the answers to senders that are not linked too (one entry per member).

    def decide(self, sender: bytes, now: float) -> Decision:
        """What to do with this FAN_OUT from `sender`, beyond playing it."""
        if not self.relays:
            reason = DECLINES
        elif sender not in self.linked:
            reason = NOT_LINKED  # not a member our LINKS lists (its link is not up directly in our view)
        elif sender not in self.active_senders(now) and len(self.active_senders(now)) >= MAX_SENDERS:
            reason = BUSY
        else:
            # It has a place, or takes a free one with this FAN_OUT, the first passed on (the budget starts full).
            # Every FAN_OUT it sends keeps the place, passed on or not; 10 s without one and it needs a free one.
            self.senders[sender] = now
            tokens, at = self.budget.get(sender, (FAN_OUT_BURST, now))
            tokens = min(FAN_OUT_BURST, tokens + max(0.0, now - at) * FAN_OUTS_PER_SECOND)
            if tokens >= 1:
                self.budget[sender] = (tokens - 1, now)
                self.passed_on[sender] = self.passed_on.get(sender, 0) + 1
                return PASS_ON
            self.budget[sender] = (tokens, now)
            self.over_rate[sender] = self.over_rate.get(sender, 0) + 1
            return OVER_RATE
        last = self.refused_at.get(sender)
        tell = last is None or now - last >= REFUSAL_EVERY
        if tell:
            self.refused_at[sender] = now
        return Decision(False, Refusal(reason, tell))

    def active_senders(self, now: float) -> list[bytes]:
        return sorted(k for k, t in self.senders.items() if now - t < SENDER_IDLE)
