"""Version 2 (docs/PROTOCOL.md §13) in the Python peer: the wire formats of LINKS, RELAY_REFUSED and relay
packets (and version 4's relay kind 5, §15.2), byte for byte as the text gives them (Tests/Fixtures has no
version-2 vectors yet), what a relay carries (§13.3), and that a relay passes the pair's datagrams on unchanged
without ever decrypting them, while the destination accepts nothing the relay changed or repeated, and nothing
it forged moves a route; and envelopes over the mesh (§13.5)."""

import asyncio
import time

import pytest

from parley_peer import control, relay
from parley_peer import session as session_module
from parley_peer.envelope import Bye, Hello, Signaling
from parley_peer.identity import Identity
from parley_peer.invite import Invite, RendezvousURL
from parley_peer.peer import Link, Node, PeerOptions
from parley_peer.relay import RelayPacket, RelayTable
from parley_peer.session import INNER_CONTROL, INNER_MEDIA, PeerSession
from parley_peer.wire import WireError

h = bytes.fromhex
A, C = b"\x11" * 32, b"\x22" * 32
TRANSPORT = h("03000000" "00000001" "0000000000000000") + bytes(17)  # a 33-byte transport packet (§8.2)


# MARK: §13.1, §13.3 session control


def test_links_encoding():
    message = control.Links(True, ((A, 12), (C, 0xFFFF)))
    assert message.encode() == h("05" "01" "02") + A + h("000c") + C + h("ffff")
    assert control.parse(message.encode()) == message
    assert control.parse(h("05" "00" "00")) == control.Links(False, ())
    assert control.parse(h("05" "02" "00")) == control.Links(False, ())  # other flag bits are ignored
    assert control.parse(message.encode() + b"later fields") == message  # §10: longer is allowed
    for short in (h("05"), h("05" "01"), h("05" "01" "01") + A + h("00")):
        assert control.parse(short) is None


def test_relay_refused_encoding():
    message = control.RelayRefused(C, relay.BUSY)
    assert message.encode() == h("06") + C + h("02")
    assert control.parse(message.encode()) == message
    assert control.parse(h("06") + C + h("07")) == control.RelayRefused(C, relay.DECLINES)  # unknown reason: 3
    assert control.parse(h("06") + C) is None


# MARK: §13.2 relay packets


@pytest.mark.parametrize("kind", [relay.FORWARD, relay.DELIVER])
def test_relay_packet_datagrams(kind):
    packet = RelayPacket(kind, C, TRANSPORT)
    assert packet.encode() == bytes([kind]) + C + TRANSPORT
    assert RelayPacket.parse(packet.encode()) == packet
    for first in (0x01, 0x02, 0x03):
        assert RelayPacket.parse(bytes([kind]) + C + bytes([first])).payload == bytes([first])
    assert RelayPacket.parse(bytes([kind]) + C + b"\x03" * 1400).payload == b"\x03" * 1400


@pytest.mark.parametrize("kind", [relay.FORWARD_ENVELOPE, relay.DELIVER_ENVELOPE])
def test_relay_packet_envelopes(kind):
    for length in (180, 4137):
        envelope = b"\x01" + bytes(length - 1)
        assert RelayPacket.parse(bytes([kind]) + relay.EVERYONE + envelope) == RelayPacket(kind, relay.EVERYONE,
                                                                                          envelope)


@pytest.mark.parametrize("body", [
    b"",
    h("01") + C[:31],  # no room for the peer
    h("00") + C + TRANSPORT, h("05") + C + TRANSPORT,  # unknown kinds
    h("01") + C, h("02") + C,  # an empty datagram
    h("01") + C + h("04") + bytes(40), h("02") + C + h("00"),  # not an ICE-path packet type (§8.1)
    h("01") + C + b"\x03" * 1401,  # oversized
    h("01") + relay.EVERYONE + TRANSPORT, h("02") + relay.EVERYONE + TRANSPORT,  # a datagram needs a peer
    h("03") + C + bytes(179), h("04") + C + bytes(4138),  # not an envelope's length
], ids=lambda body: body[:1].hex() + f"-{len(body)}")
def test_relay_packet_rejections(body):
    with pytest.raises(WireError):
        RelayPacket.parse(body)


# A signed frame's bytes (§15.1): the relay parser checks only the length; the receiver checks the signature.
SIGNED = bytes(8) + b"\x5a" * 64 + h("010112340102030403c003c003c00002f8aaf85051")


@pytest.mark.parametrize("length", [82, len(SIGNED), 1272])
def test_fan_deliver_on_a_version_4_link(length):
    payload = (SIGNED + bytes(1272))[:length]
    packet = RelayPacket(relay.FAN_DELIVER, A, payload)
    assert packet.encode() == h("05") + A + payload
    assert RelayPacket.parse(packet.encode(), 4) == packet
    assert RelayPacket.parse(packet.encode(), 5) == packet  # a later version includes version 4


@pytest.mark.parametrize("body, version", [
    (h("05") + A + SIGNED, 3), (h("05") + A + SIGNED, 2),  # below version 4: an unknown kind
    (h("05") + A + SIGNED, None),  # the parser's default is version 2's relay packets
    (h("05") + relay.EVERYONE + SIGNED, 4),  # a fanned-out frame names its origin
    (h("05") + A + bytes(81), 4), (h("05") + A + bytes(1273), 4), (h("05") + A, 4),  # not a signed frame's length
    (h("05") + A[:31], 4),
    (h("06") + A + SIGNED, 4),  # still unknown
], ids=lambda value: value[:1].hex() + f"-{len(value)}" if isinstance(value, bytes) else f"v{value}")
def test_fan_deliver_rejections(body, version):
    with pytest.raises(WireError):
        RelayPacket.parse(body) if version is None else RelayPacket.parse(body, version)


# MARK: §13.3 what a relay carries


def test_relay_table_carries_linked_pairs_up_to_its_limit():
    d, e = b"\x33" * 32, b"\x44" * 32
    table = RelayTable(max_pairs=1)
    table.update(frozenset({A, C, d}))
    assert table.decide(A, C, 0.0) is None
    assert table.decide(C, A, 0.5) is None  # the same pair, the other way
    refusal = table.decide(A, d, 1.0)
    assert (refusal.reason, refusal.tell) == (relay.BUSY, True)
    assert table.decide(A, d, 1.5).tell is False  # at most once a second per asker and destination
    assert table.decide(d, A, 1.5).tell is True  # the pair's other end hears its own refusal
    assert table.decide(A, d, 2.0).tell is True
    assert table.decide(A, e, 2.0).reason == relay.NOT_LINKED  # e is not in the meeting with us, directly
    assert table.decide(A, A, 2.0).reason == relay.NOT_LINKED
    assert table.active_pairs(10.4) == [(A, C)]
    assert table.decide(A, d, 10.6) is None  # A–C carried nothing for 10 s: it no longer counts
    table.update(frozenset({A, d}))  # C's link went down: its pairs are forgotten
    assert table.active_pairs(10.7) == [(A, d)]
    assert RelayTable(max_pairs=0, linked=frozenset({A, C})).decide(A, C, 0.0).reason == relay.DECLINES


def test_relay_table_envelope_budget_and_targets():
    d = b"\x33" * 32
    table = RelayTable()
    table.update(frozenset({A, C, d}))
    assert sum(table.accept_envelope(A, 0.0) for _ in range(100)) == 40  # a burst of 40
    assert sum(table.accept_envelope(A, 1.0) for _ in range(100)) == 20  # then 20 a second
    assert not table.accept_envelope(b"\x55" * 32, 0.0)  # only from a member linked with us
    assert table.envelope_targets(A, relay.EVERYONE) == [C, d]
    assert table.envelope_targets(A, C) == [C]
    assert table.envelope_targets(A, A) == []
    assert table.envelope_targets(A, b"\x55" * 32) == []


# MARK: a relay node and the ends, in memory


class CapturedPath:
    """Stands in for an ICE connection: what the node sends over the link's direct path."""

    def __init__(self):
        self.sent: list[bytes] = []

    async def send(self, datagram: bytes) -> None:
        self.sent.append(datagram)

    async def close(self) -> None:
        pass


def establish(initiator: PeerSession, responder: PeerSession, now: float) -> None:
    (response,), _ = responder.receive(initiator.create_initiation(now), now)
    (confirmation,), _ = initiator.receive(response, now)
    responder.receive(confirmation, now)
    assert initiator.has_keys and responder.has_keys


def session(me: Identity, peer: Identity, node: Node, version: int = 2) -> PeerSession:
    keys = node.room_keys
    return PeerSession(identity_key=me.identity_key, static_secret=me.static_secret,
                       peer_identity_key=peer.identity_key, peer_static_key=peer.static_key, room_id=keys.room_id,
                       noise_psk=keys.noise_psk, mac_key=keys.mac_key, version=version)


class Member:
    """A node under test with direct, up, version-2 links to `others`, each with the other side's session."""

    def __init__(self, me: Identity, others: dict[str, Identity], relay_pairs: int = 4):
        invite = Invite(bytes(range(32)), RendezvousURL.parse("ws://127.0.0.1:7777"))
        self.identity = me
        self.node = Node(invite, PeerOptions(identity=me, relay_pairs=relay_pairs))
        self.remote: dict[str, PeerSession] = {}  # the other side's session with this node
        self.paths: dict[str, CapturedPath] = {}
        now = time.monotonic()
        for name, other in others.items():
            hello = Hello(other.static_key, other.binding_signature, 1, (1, 2), name)
            link = Link(self.node, other.identity_key, hello, member_id=1, version=2)
            link.path = self.paths[name] = CapturedPath()
            link.state = "up"
            self.remote[name] = session(other, me, self.node)
            establish(self.remote[name], link.session, now)
            self.node.links[other.identity_key] = link

    def link(self, name: str) -> Link:
        return next(link for link in self.node.links.values() if link.hello.display_name == name)

    def sent_to(self, name: str) -> list[tuple[int, bytes]]:
        """What the node sent `name` since the last call, opened with `name`'s session."""
        opened = []
        for datagram in self.paths[name].sent:
            opened += self.remote[name].receive(datagram, time.monotonic())[1]
        self.paths[name].sent.clear()
        return opened


def relayed(opened: list[tuple[int, bytes]]) -> list[RelayPacket]:
    return [RelayPacket.parse(body) for kind, body in opened if kind == relay.INNER_RELAY]


def test_relay_passes_datagrams_on_unchanged_and_never_decrypts_them(monkeypatch):
    a, b, c = Identity.generate(), Identity.generate(), Identity.generate()
    middle = Member(b, {"a": a, "c": c})
    # The pair's own session, which the relay has no part in.
    a_to_c, c_from_a = session(a, c, middle.node), session(c, a, middle.node)
    now = time.monotonic()
    establish(a_to_c, c_from_a, now)
    datagram = a_to_c.seal(INNER_MEDIA, b"\x01\x00 opus frame", now)

    decrypted: list[bytes] = []
    real_decrypt = session_module.aead_decrypt

    def watching(key, counter, ad, ciphertext):
        decrypted.append(ad + ciphertext)
        return real_decrypt(key, counter, ad, ciphertext)

    monkeypatch.setattr(session_module, "aead_decrypt", watching)

    async def run():
        await middle.node.share_links(now)  # LINKS to both; the relay table now links a and c
        assert relayed(middle.sent_to("c")) == []
        forward = RelayPacket(relay.FORWARD, c.identity_key, datagram).encode()
        await middle.link("a").on_datagram(middle.remote["a"].seal(relay.INNER_RELAY, forward, now), via=None)

    asyncio.run(run())
    (delivered,) = relayed(middle.sent_to("c"))
    assert delivered == RelayPacket(relay.DELIVER, a.identity_key, datagram)  # byte for byte
    assert datagram not in decrypted  # the relay opened its own session's packet, never the pair's
    assert c_from_a.receive(delivered.payload, now)[1] == [(INNER_MEDIA, b"\x01\x00 opus frame")]
    status = middle.node.status()
    assert status["relaying"] == [sorted([a.identity_key.hex()[:16], c.identity_key.hex()[:16]])]


def test_relay_refuses_when_it_cannot_carry():
    a, b, c = Identity.generate(), Identity.generate(), Identity.generate()
    middle = Member(b, {"a": a, "c": c}, relay_pairs=0)
    now = time.monotonic()

    async def run():
        await middle.node.share_links(now)
        forward = RelayPacket(relay.FORWARD, c.identity_key, TRANSPORT).encode()
        for _ in range(3):  # answered once: at most once a second per pair
            await middle.link("a").on_datagram(middle.remote["a"].seal(relay.INNER_RELAY, forward, now), via=None)

    asyncio.run(run())
    to_a = middle.sent_to("a")
    links = [control.parse(body) for kind, body in to_a if kind == INNER_CONTROL and body[0] == control.LINKS]
    assert links and not links[0].relays  # a node that does not relay says so in LINKS
    refusals = [control.parse(body) for kind, body in to_a
                if kind == INNER_CONTROL and body[0] == control.RELAY_REFUSED]
    assert refusals == [control.RelayRefused(c.identity_key, relay.DECLINES)]
    assert relayed(middle.sent_to("c")) == []


def test_the_destination_drops_what_the_relay_changed_or_repeated_and_keeps_its_route():
    a, b, c = Identity.generate(), Identity.generate(), Identity.generate()
    end = Member(c, {"a": a, "b": b})  # node C with links to A (no direct path) and to relay B
    link_a = end.link("a")
    link_a.path = None
    link_a.state = "checking"
    link_a.last_direct_at = None
    now = time.monotonic()
    datagram = end.remote["a"].seal(INNER_MEDIA, b"\x01\x00 frame", now)  # A's packet of the A–C session
    tampered = datagram[:-1] + bytes([datagram[-1] ^ 1])
    before = link_a.receive_log.packets

    async def deliver(payload):
        body = RelayPacket(relay.DELIVER, a.identity_key, payload).encode()
        await end.link("b").on_datagram(end.remote["b"].seal(relay.INNER_RELAY, body, time.monotonic()), via=None)

    asyncio.run(deliver(tampered))
    assert link_a.relay is None and link_a.receive_log.packets == before  # forged: no route change, no media
    assert link_a.session.stats.authentication_failures == 1
    asyncio.run(deliver(datagram))
    assert link_a.receive_log.packets == before + 1
    assert link_a.relay == b.identity_key  # the peer's authenticated packets come through B: follow it
    asyncio.run(deliver(datagram))  # a copy: the A–C replay window drops it
    assert link_a.receive_log.packets == before + 1


# MARK: §13.5 signaling over the mesh


def test_envelopes_over_the_mesh():
    a, b, c = Identity.generate(), Identity.generate(), Identity.generate()
    middle = Member(b, {"a": a, "c": c})
    envelope = Signaling(middle.node.room_keys.room_id, middle.node.room_keys.signaling_key, a).seal(Bye(0))
    now = time.monotonic()

    async def forward(destination: bytes):
        body = RelayPacket(relay.FORWARD_ENVELOPE, destination, envelope).encode()
        await middle.link("a").on_datagram(middle.remote["a"].seal(relay.INNER_RELAY, body, now), via=None)

    async def run():
        await middle.node.share_links(now)
        await forward(c.identity_key)
        assert relayed(middle.sent_to("c")) == [RelayPacket(relay.DELIVER_ENVELOPE, a.identity_key, envelope)]
        await forward(relay.EVERYONE)  # to every member linked with the relay but the sender
        assert relayed(middle.sent_to("c")) == [RelayPacket(relay.DELIVER_ENVELOPE, a.identity_key, envelope)]
        assert relayed(middle.sent_to("a")) == []
        middle.link("a").state = "lost"  # the relay passes on envelopes only for members linked with it
        await middle.node.share_links(now)
        await forward(c.identity_key)
        assert relayed(middle.sent_to("c")) == []

    asyncio.run(run())


def test_an_envelope_over_the_mesh_is_opened_as_one_from_the_rendezvous():
    a, b, c = Identity.generate(), Identity.generate(), Identity.generate()
    end = Member(c, {"a": a, "b": b})
    envelope = Signaling(end.node.room_keys.room_id, end.node.room_keys.signaling_key, a).seal(Bye(0))

    async def deliver():
        body = RelayPacket(relay.DELIVER_ENVELOPE, a.identity_key, envelope).encode()
        await end.link("b").on_datagram(end.remote["b"].seal(relay.INNER_RELAY, body, time.monotonic()), via=None)

    asyncio.run(deliver())  # A's BYE, carried by B: A's link ends
    assert a.identity_key not in end.node.links and b.identity_key in end.node.links
    asyncio.run(deliver())  # the same envelope again: the replay check drops it
    assert end.node.dropped_envelopes == 1


def test_without_the_rendezvous_envelopes_go_over_sessions():
    a, b, c = Identity.generate(), Identity.generate(), Identity.generate()
    end = Member(c, {"a": a, "b": b})
    end.link("b").peer_links = control.Links(True, ((a.identity_key, 10),))
    envelope = b"\x01" + bytes(552)

    async def run():
        await end.node.send_sealed(a.identity_key, 7, envelope)  # the rendezvous is not connected
        assert relayed(end.sent_to("a")) == [RelayPacket(relay.DELIVER_ENVELOPE, c.identity_key, envelope)]
        end.link("a").state = "lost"  # A's own link does not work: through B, which reaches A
        await end.node.send_sealed(a.identity_key, 7, envelope)
        assert relayed(end.sent_to("a")) == []
        assert relayed(end.sent_to("b")) == [RelayPacket(relay.FORWARD_ENVELOPE, a.identity_key, envelope)]

    asyncio.run(run())


# MARK: §13.4 choosing routes


def test_routes_go_through_the_best_member_and_move_when_it_cannot_carry():
    a, b1, b2, c = (Identity.generate() for _ in range(4))
    end = Member(c, {"a": a, "b1": b1, "b2": b2})
    link = end.link("a")
    link.path, link.state, link.started_at = None, "checking", time.monotonic() - 10  # no direct path found
    for name, ours, theirs in (("b1", 50.0, 50), ("b2", 10.0, 20)):
        end.link(name).report.smoothed_rtt_ms = ours
        end.link(name).peer_links = control.Links(True, ((a.identity_key, theirs),))

    async def run():
        await end.node.choose_routes(time.monotonic())
        assert link.relay == b2.identity_key  # 10 + 20 ms beats 50 + 50 ms
        refusal = control.RelayRefused(a.identity_key, relay.BUSY).encode()
        await end.link("b2").on_datagram(end.remote["b2"].seal(INNER_CONTROL, refusal, time.monotonic()), via=None)
        await end.node.choose_routes(time.monotonic())
        assert link.relay == b1.identity_key  # b2 refused: the next best
        end.link("b1").peer_links = control.Links(True, ())  # b1 no longer reaches a
        await end.node.choose_routes(time.monotonic())
        assert link.relay is None  # nobody can carry it: b2's refusal holds for 30 s
        end.link("b1").peer_links = control.Links(False, ((a.identity_key, 5),))  # reaches a, does not relay
        await end.node.choose_routes(time.monotonic())
        assert link.relay is None

    asyncio.run(run())
    assert not end.node.can_relay(b2.identity_key, a.identity_key)
    assert end.node.can_relay(b2.identity_key, a.identity_key, time.monotonic() + relay.REFUSAL_MEMORY)


def test_a_not_linked_refusal_ends_when_the_member_lists_the_destination():
    """§13.3: B refused because its own link was not up in its view yet; its next LINKS listing A ends the refusal.
    A BUSY refusal is not ended by LINKS."""
    a, b, c = (Identity.generate() for _ in range(3))
    end = Member(c, {"a": a, "b": b})
    end.link("b").peer_links = control.Links(True, ((a.identity_key, 10),))

    async def receive(message: bytes) -> None:
        await end.link("b").on_datagram(end.remote["b"].seal(INNER_CONTROL, message, time.monotonic()), via=None)

    async def run():
        await receive(control.RelayRefused(a.identity_key, relay.NOT_LINKED).encode())
        assert not end.node.can_relay(b.identity_key, a.identity_key)
        await receive(control.Links(True, ((a.identity_key, 10),)).encode())
        assert end.node.can_relay(b.identity_key, a.identity_key)
        await receive(control.RelayRefused(a.identity_key, relay.BUSY).encode())
        await receive(control.Links(True, ((a.identity_key, 10),)).encode())
        assert not end.node.can_relay(b.identity_key, a.identity_key)

    asyncio.run(run())


def test_a_broadcast_without_the_rendezvous_goes_to_every_working_link_and_through_them():
    a, b, c = Identity.generate(), Identity.generate(), Identity.generate()
    end = Member(c, {"a": a, "b": b})
    envelope = b"\x01" + bytes(552)

    async def run():
        await end.node.send_over_mesh(envelope, None)  # every link works: straight to each
        for name in ("a", "b"):
            assert relayed(end.sent_to(name)) == [RelayPacket(relay.DELIVER_ENVELOPE, c.identity_key, envelope)]
        end.link("a").state = "lost"  # a member we have no working link with: through the others to everyone
        await end.node.send_over_mesh(envelope, None)
        assert relayed(end.sent_to("a")) == []
        assert relayed(end.sent_to("b")) == [RelayPacket(relay.DELIVER_ENVELOPE, c.identity_key, envelope),
                                             RelayPacket(relay.FORWARD_ENVELOPE, relay.EVERYONE, envelope)]

    asyncio.run(run())
