"""§13 relaying through a member (version 2): relay packets (inner type 0x03, §13.2) and what a relay carries
(§13.3); and the relay packet of version 4's fan-out (kind 5 FAN_DELIVER, §15.2; the rest of it is fanout.py).
Plain values without I/O: the node (peer.py) seals and sends what these decide.

A relay never opens what it carries: datagrams are sealed by the two ends' own session (§7–§8), envelopes
by their sender (§6). `RelayTable` sees identity keys and byte strings, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .envelope import MAX_ENVELOPE, MIN_ENVELOPE
from .session import INITIATION, TRANSPORT
from .wire import Reader, WireError

INNER_RELAY = 0x03  # §8.3, version 2

FORWARD, DELIVER, FORWARD_ENVELOPE, DELIVER_ENVELOPE = 1, 2, 3, 4
FAN_DELIVER = 5  # version 4 (§15.2): `peer` = the origin, `payload` = its signed frame, unchanged
ENVELOPE_KINDS = (FORWARD_ENVELOPE, DELIVER_ENVELOPE)
EVERYONE = bytes(32)  # the `peer` of a FORWARD_ENVELOPE to every member the relay has a link with
MAX_DATAGRAM = 1400
# A signed frame (§15.1): counter 8 + signature 64 + a media payload of 10–1200 bytes (§9.1).
SIGNED_FRAME_MIN, SIGNED_FRAME_MAX = 82, 1272
RELAY_VERSION = 2  # the link version relay packets (inner type 0x03) start with

# §13.3 refusal reasons (an unknown one counts as DECLINES).
NOT_LINKED, BUSY, DECLINES = 1, 2, 3

# §13.3 and §13.4 timers (seconds) and limits.
PAIR_IDLE = 10.0  # a pair that carried nothing for this long no longer counts against the limit
REFUSAL_EVERY = 1.0  # RELAY_REFUSED at most this often per asker and destination
REFUSALS_REMEMBERED = 1024  # past this many, refusals told more than REFUSAL_EVERY ago are forgotten
REFUSAL_MEMORY = 30.0  # a member that refused is not asked again toward that destination for this long
ENVELOPE_BURST, ENVELOPES_PER_SECOND = 40.0, 20.0  # FORWARD_ENVELOPE per sender
DEFAULT_PAIRS = 4  # Parley's default (parleyd --relay-pairs); this peer's --relay-pairs


@dataclass(frozen=True)
class RelayPacket:
    """`relay = kind: u8 || peer: identity_key[32] || payload` (§13.2)."""

    kind: int
    peer: bytes
    payload: bytes

    def encode(self) -> bytes:
        return bytes([self.kind]) + self.peer + self.payload

    @staticmethod
    def parse(body: bytes, version: int = RELAY_VERSION) -> RelayPacket:
        """Raises WireError for everything §13.2 and §15.2 say receivers drop. `version` is the link's: kind 5 is
        version 4's, and a link below it drops one as an unknown kind."""
        reader = Reader(body, "relay packet")
        kind = reader.u8("kind")
        peer = reader.take(32, "peer")
        payload = reader.rest()
        if kind in ENVELOPE_KINDS:
            if not MIN_ENVELOPE <= len(payload) <= MAX_ENVELOPE:
                raise WireError(f"relay packet: a relayed envelope of {len(payload)} bytes")
        elif kind in (FORWARD, DELIVER):
            if not 1 <= len(payload) <= MAX_DATAGRAM or not INITIATION <= payload[0] <= TRANSPORT:
                raise WireError("relay packet: the payload is not one ICE-path datagram (§8.1)")
            if peer == EVERYONE:
                raise WireError("relay packet: a relayed datagram needs a peer")
        elif kind == FAN_DELIVER and version >= 4:
            if not SIGNED_FRAME_MIN <= len(payload) <= SIGNED_FRAME_MAX:
                raise WireError(f"relay packet: a signed frame of {len(payload)} bytes (§15.1)")
            if peer == EVERYONE:
                raise WireError("relay packet: a fanned-out frame needs its origin")
        else:
            raise WireError(f"relay packet: unknown kind {kind} on a version-{version} link")
        return RelayPacket(kind, peer, payload)


@dataclass
class Refusal:
    reason: int
    tell: bool  # answer RELAY_REFUSED now (at most once a second per pair)


def pair_of(a: bytes, b: bytes) -> tuple[bytes, bytes]:
    return (a, b) if a < b else (b, a)


@dataclass
class RelayTable:
    """What this node carries for others (§13.3): the members it relays between (`linked`: those whose
    links with it are up over their own direct path and speak version 2), at most `max_pairs` pairs at a
    time, and FORWARD_ENVELOPE rate-limited per sender."""

    max_pairs: int = DEFAULT_PAIRS
    linked: frozenset[bytes] = frozenset()
    pairs: dict[tuple[bytes, bytes], float] = field(default_factory=dict)  # pair -> last packet carried
    forwarded: dict[tuple[bytes, bytes], int] = field(default_factory=dict)  # datagrams carried per pair
    refused_at: dict[tuple[bytes, bytes], float] = field(default_factory=dict)
    envelope_budget: dict[bytes, tuple[float, float]] = field(default_factory=dict)  # sender -> (tokens, at)

    def update(self, linked: frozenset[bytes]) -> None:
        """Forgets pairs and budgets of members no longer linked."""
        self.linked = linked
        self.pairs = {p: t for p, t in self.pairs.items() if p[0] in linked and p[1] in linked}
        self.envelope_budget = {k: v for k, v in self.envelope_budget.items() if k in linked}

    def decide(self, source: bytes, destination: bytes, now: float) -> Refusal | None:
        """None: carry this datagram from `source` to `destination`; else why not."""
        pair = pair_of(source, destination)
        if self.max_pairs <= 0:
            reason = DECLINES
        elif source == destination or source not in self.linked or destination not in self.linked:
            reason = NOT_LINKED
        elif pair not in self.active_pairs(now) and len(self.active_pairs(now)) >= self.max_pairs:
            reason = BUSY
        else:
            self.pairs[pair] = now
            self.forwarded[pair] = self.forwarded.get(pair, 0) + 1
            return None
        # Keyed by direction: both ends of a pair ask at once, and each must hear its own refusal.
        if len(self.refused_at) >= REFUSALS_REMEMBERED:  # a member may ask toward made-up keys
            self.refused_at = {k: t for k, t in self.refused_at.items() if now - t < REFUSAL_EVERY}
        last = self.refused_at.get((source, destination))
        tell = last is None or now - last >= REFUSAL_EVERY
        if tell:
            self.refused_at[(source, destination)] = now
        return Refusal(reason, tell)

    def accept_envelope(self, source: bytes, now: float) -> bool:
        """Whether to pass on an envelope `source` asked us to forward over the mesh."""
        if source not in self.linked:
            return False
        tokens, at = self.envelope_budget.get(source, (ENVELOPE_BURST, now))
        tokens = min(ENVELOPE_BURST, tokens + max(0.0, now - at) * ENVELOPES_PER_SECOND)
        if tokens < 1:
            self.envelope_budget[source] = (tokens, now)
            return False
        self.envelope_budget[source] = (tokens - 1, now)
        return True

    def envelope_targets(self, source: bytes, destination: bytes) -> list[bytes]:
        """The members a FORWARD_ENVELOPE from `source` goes to: the named one if linked, or every linked
        member but the sender."""
        if destination == EVERYONE:
            return sorted(self.linked - {source})
        return [destination] if destination in self.linked and destination != source else []

    def active_pairs(self, now: float) -> list[tuple[bytes, bytes]]:
        return sorted(p for p, t in self.pairs.items() if now - t < PAIR_IDLE)
