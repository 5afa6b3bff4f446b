"""Version 4 (docs/PROTOCOL.md §15) in the Python peer: signed frames and what a receiver checks before it plays one
a member fanned out (§15.1, §15.2), what the member carries (§15.3), the node's three parts in memory (the member
that passes FAN_OUTs on, the receiver of FAN_DELIVERs, the sender that fans out through a member), and the
receiving side of version 3 (§14), which version 4 includes. The known-answer vectors are in test_vectors.py."""

import asyncio
import time
from collections import Counter

import pytest

from parley_peer import chat, control, fanout, liveness, relay
from parley_peer.envelope import Hello
from parley_peer.identity import Identity
from parley_peer.invite import Invite, RendezvousURL
from parley_peer.peer import SUPPORTED_VERSIONS, Link, Node, PeerOptions
from parley_peer.relay import RelayPacket
from parley_peer.replay import ReplayWindow
from parley_peer.session import INNER_CONTROL, INNER_MEDIA, PeerSession
from test_relay_packets import CapturedPath, establish

h = bytes.fromhex
ROOM = bytes(range(32))
EPOCH = 0x0102030405060708
MEDIA = h("010112340102030403c003c003c00002f8aaf85051")  # §9.1's example


def media(sequence: int, opus: bytes = b"\xf8\x50\x51") -> bytes:
    """A §9.1 payload without copies: sequence, a timestamp 960 samples per frame, 20 ms."""
    return bytes([1, 0]) + sequence.to_bytes(2, "big") + (960 * sequence).to_bytes(4, "big") + h("03c0") + opus


# MARK: §15.1, §15.2 signed frames


def test_signed_frame_layout_and_round_trip():
    alice = Identity.generate()
    window = ReplayWindow(64)
    for counter in (0, 1, 2**40):
        frame = fanout.sign_frame(alice, ROOM, EPOCH, counter, MEDIA)
        assert frame[:8] == counter.to_bytes(8, "big") and frame[72:] == MEDIA and len(frame) == 72 + len(MEDIA)
        assert alice.signing_key.verify_key.verify(
            b"parley/v4/fan-out\0" + ROOM + EPOCH.to_bytes(8, "big") + counter.to_bytes(8, "big") + MEDIA,
            frame[8:72])
        assert fanout.open_frame(frame, alice.identity_key, ROOM, EPOCH, window) == (counter, MEDIA)


def test_frame_lengths():
    alice = Identity.generate()
    for size in (10, 1200):  # 82 and 1272 bytes: the least and the most a receiver takes
        frame = fanout.sign_frame(alice, ROOM, EPOCH, size, bytes(size))
        assert len(frame) == 72 + size
        assert fanout.open_frame(frame, alice.identity_key, ROOM, EPOCH, ReplayWindow(64)) == (size, bytes(size))
    for size in (9, 1201):
        with pytest.raises(ValueError):
            fanout.sign_frame(alice, ROOM, EPOCH, 0, bytes(size))
    dropped = Counter()
    too_long = fanout.sign_frame(alice, ROOM, EPOCH, 0, bytes(1200)) + b"\x00"
    for frame in (fanout.sign_frame(alice, ROOM, EPOCH, 0, bytes(10))[:81], too_long, b""):
        assert fanout.open_frame(frame, alice.identity_key, ROOM, EPOCH, ReplayWindow(64), dropped) is None
    assert dropped == Counter(length=3)


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x80]) + data[index + 1:]


@pytest.mark.parametrize("forgery", ["media", "counter", "signature", "room", "epoch", "identity", "resigned"])
def test_what_the_passing_member_changes_is_dropped_and_moves_nothing(forgery):
    """The member B has every byte of the frame and its own identity, but not the sender's key: whatever it
    changes, or moves into another room or another run of the sender, fails the signature."""
    alice, member = Identity.generate(), Identity.generate()
    frame = fanout.sign_frame(alice, ROOM, EPOCH, 7, MEDIA)
    key, room, epoch = alice.identity_key, ROOM, EPOCH
    if forgery == "media":
        frame = flip(frame, len(frame) - 1)
    elif forgery == "counter":
        frame = (8).to_bytes(8, "big") + frame[8:]
    elif forgery == "signature":
        frame = flip(frame, 40)
    elif forgery == "room":
        room = flip(ROOM, 0)
    elif forgery == "epoch":
        epoch = EPOCH + 1
    elif forgery == "identity":
        key = member.identity_key  # the frame names another origin than its signer
    elif forgery == "resigned":
        frame = fanout.sign_frame(member, ROOM, EPOCH, 7, flip(MEDIA, 20))  # the member's own signature on its audio
    window, dropped = ReplayWindow(64), Counter()
    assert fanout.open_frame(frame, key, room, epoch, window, dropped) is None
    assert dropped == Counter(signature=1)
    assert window.greatest is None and window.seen == 0  # §8.7: nothing else changes


def test_a_replayed_counter_is_dropped_and_does_not_disturb_the_window():
    alice = Identity.generate()
    window, dropped = ReplayWindow(64), Counter()
    frames = {n: fanout.sign_frame(alice, ROOM, EPOCH, n, media(n)) for n in range(10)}
    for n in (5, 3):
        assert fanout.open_frame(frames[n], alice.identity_key, ROOM, EPOCH, window) == (n, media(n))
    state = (window.greatest, window.seen)
    for n in (5, 3):
        assert fanout.open_frame(frames[n], alice.identity_key, ROOM, EPOCH, window, dropped) is None
    assert dropped == Counter(replay=2) and (window.greatest, window.seen) == state
    assert fanout.open_frame(frames[4], alice.identity_key, ROOM, EPOCH, window) == (4, media(4))  # not seen yet


def test_the_window_moves_only_after_the_signature_verified():
    """A forged frame far ahead would, if recorded, push every genuine frame out of the window; a forged frame at a
    counter not seen yet would, if recorded, make the genuine one a replay."""
    alice = Identity.generate()
    window = ReplayWindow(64)
    assert fanout.open_frame(fanout.sign_frame(alice, ROOM, EPOCH, 1, MEDIA), alice.identity_key, ROOM, EPOCH, window)
    for counter in (2, 10_000):
        forged = flip(fanout.sign_frame(alice, ROOM, EPOCH, counter, MEDIA), 80)
        assert fanout.open_frame(forged, alice.identity_key, ROOM, EPOCH, window) is None
    assert window.greatest == 1
    for counter in (2, 0):
        frame = fanout.sign_frame(alice, ROOM, EPOCH, counter, MEDIA)
        assert fanout.open_frame(frame, alice.identity_key, ROOM, EPOCH, window) == (counter, MEDIA)


# MARK: §15.3 the member that fans out


A, C, D = b"\x11" * 32, b"\x22" * 32, b"\x33" * 32


def refused(reason: int, tell: bool = True) -> fanout.Decision:
    return fanout.Decision(False, relay.Refusal(reason, tell))


def test_a_third_sender_is_refused_while_two_are_active_and_gets_a_place_when_one_goes_idle():
    table = fanout.FanOutTable()
    table.update(frozenset({A, C, D}), relays=True)
    assert table.decide(A, 0.0) == fanout.PASS_ON and table.decide(C, 0.0) == fanout.PASS_ON
    assert table.decide(D, 0.0) == refused(relay.BUSY)  # reason 2: no place
    assert table.active_senders(0.0) == [A, C]
    assert table.decide(A, 5.0) == fanout.PASS_ON  # A goes on; C stops
    assert table.decide(D, 9.9) == refused(relay.BUSY)  # C's last FAN_OUT was 9.9 s ago: it still holds its place
    assert table.decide(D, 10.0) == fanout.PASS_ON  # 10 s: C's place is free, and D takes it
    assert table.active_senders(10.0) == [A, D]
    # C was idle 10 s: it needs a free place again, and there is none (told: a second since D's last refusal).
    assert table.decide(C, 10.5) == refused(relay.BUSY)
    assert table.decide(A, 14.9) == fanout.PASS_ON  # A keeps its place while it sends; D falls idle
    assert table.decide(C, 20.1) == fanout.PASS_ON
    assert table.active_senders(20.1) == [A, C]


def test_at_most_110_a_second_per_sender_in_bursts_of_20_and_the_rest_held_back_without_a_refusal():
    table = fanout.FanOutTable()
    table.update(frozenset({A, C}), relays=True)
    assert [table.decide(A, 0.0) for _ in range(100)] == [fanout.PASS_ON] * 20 + [fanout.OVER_RATE] * 80
    assert sum(table.decide(A, 1.0).passed_on for _ in range(200)) == 20  # refilled to the burst, no more
    assert sum(table.decide(A, 2.0).passed_on for _ in range(100)) == 20
    decisions = [table.decide(A, 2.0 + (i + 1) / 1000) for i in range(1000)]  # 1000 a second, for a second
    assert 109 <= sum(d.passed_on for d in decisions) <= 110  # 110 a second (the last may round away)
    # §15.3: those beyond the rate are not passed on and not refused: no RELAY_REFUSED, whatever the pace.
    assert all(d.refusal is None for d in decisions) and table.decide(A, 3.0) == fanout.OVER_RATE
    assert table.over_rate[A] == 80 + 180 + 80 + 1000 - sum(d.passed_on for d in decisions) + 1
    assert table.decide(C, 3.0) == fanout.PASS_ON  # per sender
    assert table.active_senders(3.0) == [A, C]  # a sender over its rate keeps its place: its FAN_OUTs go on
    assert table.decide(D, 3.0) == refused(relay.NOT_LINKED)
    assert table.refused_at == {D: 3.0}  # A and C were never told anything


def test_refusals_are_told_at_most_once_a_second_per_sender():
    table = fanout.FanOutTable(relays=False)
    table.update(frozenset({A, C}), relays=False)
    decisions = [table.decide(A, t / 10) for t in range(25)]
    assert {d.refusal.reason for d in decisions} == {relay.DECLINES}  # reason 3: does not relay
    assert [d.refusal.tell for d in decisions] == [True] + [False] * 9 + [True] + [False] * 9 + [True] + [False] * 4
    assert table.decide(C, 0.05) == refused(relay.DECLINES)  # every sender hears its own
    table.update(frozenset({A}), relays=True)
    assert table.decide(C, 5.0) == refused(relay.NOT_LINKED)  # reason 1: C's link is not up directly in our view
    table.update(frozenset({A}), relays=True)  # the table's periodic update does not reset the pacing
    assert table.decide(C, 5.5) == refused(relay.NOT_LINKED, tell=False)


def test_a_sender_whose_link_went_down_starts_afresh():
    table = fanout.FanOutTable()
    table.update(frozenset({A, C, D}), relays=True)
    assert table.decide(A, 0.0) == fanout.PASS_ON and table.decide(C, 0.0) == fanout.PASS_ON
    table.update(frozenset({C, D}), relays=True)  # A's link is no longer up directly: its place is free
    assert table.decide(D, 1.0) == fanout.PASS_ON
    assert table.decide(A, 1.0) == refused(relay.NOT_LINKED)


# MARK: the node in memory


class Member:
    """A node under test with direct, up links to `others` (name -> (identity, link version)), each with the other
    side's session."""

    def __init__(self, me: Identity, others: dict[str, tuple[Identity, int]], **options):
        invite = Invite(ROOM, RendezvousURL.parse("ws://127.0.0.1:7777"))
        self.me = me
        self.node = Node(invite, PeerOptions(identity=me, **options))
        self.remote: dict[str, PeerSession] = {}
        self.paths: dict[str, CapturedPath] = {}
        for name, (other, version) in others.items():
            self.add_link(name, other, version)

    def add_link(self, name: str, other: Identity, version: int, epoch: int = EPOCH) -> Link:
        """A link with `other` (its run `epoch`), up over its direct path, with a session established."""
        keys = self.node.room_keys
        hello = Hello(other.static_key, other.binding_signature, epoch, tuple(range(1, version + 1)), name)
        link = Link(self.node, other.identity_key, hello, member_id=1, version=version)
        link.path = self.paths[name] = CapturedPath()
        link.state = "up"
        self.remote[name] = PeerSession(
            identity_key=other.identity_key, static_secret=other.static_secret, peer_identity_key=self.me.identity_key,
            peer_static_key=self.me.static_key, room_id=keys.room_id, noise_psk=keys.noise_psk, mac_key=keys.mac_key,
            version=version)
        establish(self.remote[name], link.session, time.monotonic())
        self.node.links[other.identity_key] = link
        return link

    @property
    def room_id(self) -> bytes:
        return self.node.room_keys.room_id

    def link(self, name: str) -> Link:
        return next(link for link in self.node.links.values() if link.hello.display_name == name)

    def sent_to(self, name: str) -> list[tuple[int, bytes]]:
        opened = []
        for datagram in self.paths[name].sent:
            opened += self.remote[name].receive(datagram, time.monotonic())[1]
        self.paths[name].sent.clear()
        return opened

    def receive(self, name: str, inner_type: int, body: bytes) -> None:
        """`name` seals (inner_type, body) in its session with the node, which receives it over the direct path."""
        packet = self.remote[name].seal(inner_type, body, time.monotonic())
        asyncio.run(self.link(name).on_datagram(packet, via=None))


def relayed(opened: list[tuple[int, bytes]]) -> list[RelayPacket]:
    return [RelayPacket.parse(body, 4) for kind, body in opened if kind == relay.INNER_RELAY]


def controls(opened: list[tuple[int, bytes]], kind: int) -> list:
    return [control.parse(body) for inner, body in opened if inner == INNER_CONTROL and body[0] == kind]


def test_hello_offers_version_4():
    assert SUPPORTED_VERSIONS == (1, 2, 3, 4)


def test_the_member_plays_a_fan_out_and_passes_it_on_unchanged_to_its_version_4_members():
    a, b, c, d, e = (Identity.generate() for _ in range(5))
    middle = Member(b, {"a": (a, 4), "c": (c, 4), "d": (d, 3), "e": (e, 4)})
    middle.link("e").state = "lost"  # not up over its own direct path
    asyncio.run(middle.node.share_links(time.monotonic()))
    for name in "acde":
        middle.sent_to(name)  # LINKS
    frame = fanout.sign_frame(a, middle.room_id, EPOCH, 0, media(0))
    middle.receive("a", fanout.INNER_FAN_OUT, frame)
    link_a = middle.link("a")
    assert link_a.receive_log.packets == 1 and link_a.receive_log.primaries_received == 1  # played as A's media
    assert relayed(middle.sent_to("c")) == [RelayPacket(fanout.FAN_DELIVER, a.identity_key, frame)]  # byte for byte
    assert relayed(middle.sent_to("d")) == [] and relayed(middle.sent_to("e")) == []
    to_a = middle.sent_to("a")
    assert relayed(to_a) == []
    (report,) = controls(to_a, control.REPORT)  # §10.1: at once, on the first media payload, and it counts it
    assert report.media_received == 1 and report.media_expected == 1
    status = middle.node.status()
    assert (status["fan_outs_received"], status["fan_outs_passed_on"], status["fan_delivers_sent"]) == (1, 1, 1)
    assert status["fanning_out_for"] == [a.identity_key.hex()[:16]]


def test_a_member_that_does_not_relay_plays_fan_outs_and_refuses_once_a_second():
    a, b, c = (Identity.generate() for _ in range(3))
    middle = Member(b, {"a": (a, 4), "c": (c, 4)}, relay_pairs=0)
    asyncio.run(middle.node.share_links(time.monotonic()))
    middle.sent_to("c")
    for n in range(3):
        middle.receive("a", fanout.INNER_FAN_OUT, fanout.sign_frame(a, middle.room_id, EPOCH, n, media(n)))
    assert middle.link("a").receive_log.packets == 3
    assert relayed(middle.sent_to("c")) == []
    assert controls(middle.sent_to("a"), control.RELAY_REFUSED) == [control.RelayRefused(relay.EVERYONE,
                                                                                         relay.DECLINES)]


@pytest.mark.parametrize("size", [0, 8, 72, 81, 1273, 1400])
def test_a_fan_out_of_the_wrong_length_is_neither_played_nor_passed_on(size):
    """§15.2: a FAN_OUT whose body is not 82–1272 bytes is dropped: not played (even what media it holds), not passed
    on, not refused, and it takes no place."""
    a, b, c = (Identity.generate() for _ in range(3))
    middle = Member(b, {"a": (a, 4), "c": (c, 4)})
    asyncio.run(middle.node.share_links(time.monotonic()))
    for name in "ac":
        middle.sent_to(name)  # LINKS
    frame = fanout.sign_frame(a, middle.room_id, EPOCH, 0, media(0, bytes(1188)))  # 72 + 1200 bytes
    body = (frame + bytes(200))[:size]
    middle.receive("a", fanout.INNER_FAN_OUT, body)
    link_a = middle.link("a")
    assert link_a.receive_log.packets == 0 and middle.node.malformed_media == 0
    assert relayed(middle.sent_to("c")) == []
    assert middle.sent_to("a") == []  # no RELAY_REFUSED, and no REPORT for a first media payload
    status = middle.node.status()
    assert (status["fan_outs_received"], status["malformed_fan_outs"], status["fan_outs_passed_on"]) == (1, 1, 0)
    assert status["fanning_out_for"] == []


@pytest.mark.parametrize("opus_bytes", [1, 1190])
def test_fan_outs_of_the_least_and_the_most_bytes_are_played_and_passed_on(opus_bytes):
    a, b, c = (Identity.generate() for _ in range(3))
    middle = Member(b, {"a": (a, 4), "c": (c, 4)})
    asyncio.run(middle.node.share_links(time.monotonic()))
    middle.sent_to("c")
    frame = fanout.sign_frame(a, middle.room_id, EPOCH, 0, media(0, b"\xf8" * opus_bytes))
    assert len(frame) in (83, 1272)
    middle.receive("a", fanout.INNER_FAN_OUT, frame)
    assert middle.link("a").receive_log.packets == 1 and middle.node.malformed_fan_outs == 0
    assert relayed(middle.sent_to("c")) == [RelayPacket(fanout.FAN_DELIVER, a.identity_key, frame)]
    # 82 bytes (a media payload of 10, no Opus frame in it) is a FAN_OUT too: passed on, its media malformed.
    shortest = fanout.sign_frame(a, middle.room_id, EPOCH, 1, media(1, b""))
    assert len(shortest) == 82
    middle.receive("a", fanout.INNER_FAN_OUT, shortest)
    assert relayed(middle.sent_to("c")) == [RelayPacket(fanout.FAN_DELIVER, a.identity_key, shortest)]
    assert middle.node.malformed_fan_outs == 0 and middle.node.malformed_media == 1


def test_the_member_refuses_a_sender_not_in_its_links_with_reason_1_and_plays_its_frames():
    a, b, c = (Identity.generate() for _ in range(3))
    middle = Member(b, {"a": (a, 4), "c": (c, 4)})
    middle.link("a").state = "lost"  # A's link is not up over its own direct path in B's view
    asyncio.run(middle.node.share_links(time.monotonic()))
    middle.sent_to("c")
    for n in range(3):
        middle.receive("a", fanout.INNER_FAN_OUT, fanout.sign_frame(a, middle.room_id, EPOCH, n, media(n)))
    assert middle.link("a").receive_log.packets == 3  # played all the same: they are A's media to B
    assert relayed(middle.sent_to("c")) == []
    assert controls(middle.sent_to("a"), control.RELAY_REFUSED) == [control.RelayRefused(relay.EVERYONE,
                                                                                         relay.NOT_LINKED)]


def test_the_member_refuses_a_third_sender_as_busy_and_holds_back_a_fast_sender_without_a_word():
    a, b, c, d, e = (Identity.generate() for _ in range(5))
    middle = Member(b, {"a": (a, 4), "c": (c, 4), "d": (d, 4), "e": (e, 4)})
    node = middle.node
    asyncio.run(node.share_links(time.monotonic()))
    for name in "acde":
        middle.sent_to(name)  # LINKS
    t = time.monotonic()

    def fan_out(name: str, identity: Identity, counter: int, at: float) -> None:
        frame = fanout.sign_frame(identity, middle.room_id, EPOCH, counter, media(counter))
        asyncio.run(node.on_fan_out(middle.link(name), frame, at))

    fan_out("a", a, 0, t)
    fan_out("c", c, 0, t)
    fan_out("d", d, 0, t)  # a third sender: no place
    assert [len(relayed(middle.sent_to("e")))] == [2]
    assert controls(middle.sent_to("d"), control.RELAY_REFUSED) == [control.RelayRefused(relay.EVERYONE, relay.BUSY)]
    assert middle.link("d").receive_log.packets == 1  # played all the same
    # A sends 60 frames at once (a capture thread catching up): 20 go on (the rest of the burst), the others are
    # held back, and A is told nothing; it keeps its place.
    for n in range(1, 61):
        fan_out("a", a, n, t)
    assert len(relayed(middle.sent_to("e"))) == 19
    assert controls(middle.sent_to("a"), control.RELAY_REFUSED) == []
    status = node.status()
    assert status["fan_outs_over_rate"] == 41 and status["fan_out_refusals_sent"] == 1
    assert status["fanning_out_for"] == sorted(k.hex()[:16] for k in (a.identity_key, c.identity_key))
    assert middle.link("a").receive_log.packets == 61  # every one played
    # C stops; 10 s after its last FAN_OUT its place is free, and D, asking again, gets it.
    fan_out("a", a, 61, t + 9.0)
    fan_out("d", d, 1, t + 9.9)
    assert controls(middle.sent_to("d"), control.RELAY_REFUSED) == [control.RelayRefused(relay.EVERYONE, relay.BUSY)]
    fan_out("d", d, 2, t + 10.0)
    assert controls(middle.sent_to("d"), control.RELAY_REFUSED) == []
    assert [p.peer for p in relayed(middle.sent_to("e"))] == [a.identity_key, d.identity_key]


def test_fan_out_below_version_4_is_an_unknown_inner_type():
    a, b, c = (Identity.generate() for _ in range(3))
    middle = Member(b, {"a": (a, 3), "c": (c, 4)})
    asyncio.run(middle.node.share_links(time.monotonic()))
    middle.sent_to("c")
    middle.receive("a", fanout.INNER_FAN_OUT, fanout.sign_frame(a, middle.room_id, EPOCH, 0, MEDIA))
    assert middle.link("a").receive_log.packets == 0 and relayed(middle.sent_to("c")) == []


def test_the_receiver_plays_what_verified_once_and_counts_forgeries():
    a, b, c = (Identity.generate() for _ in range(3))
    end = Member(c, {"a": (a, 4), "b": (b, 4)})
    link_a = end.link("a")

    def deliver(frame: bytes, origin: bytes = a.identity_key, via: str = "b") -> None:
        end.receive(via, relay.INNER_RELAY, RelayPacket(fanout.FAN_DELIVER, origin, frame).encode())

    frame = fanout.sign_frame(a, end.room_id, EPOCH, 0, media(1))
    deliver(frame)
    assert link_a.receive_log.packets == 1 and link_a.media_fanned_in == 1
    (report,) = controls(end.sent_to("a"), control.REPORT)  # as media over the link: REPORT at once, counted
    assert report.media_received == 1
    deliver(frame)  # B repeats it
    deliver(flip(fanout.sign_frame(a, end.room_id, EPOCH, 1, media(2)), 80))  # B changes one
    deliver(fanout.sign_frame(a, end.room_id, EPOCH + 1, 2, media(3)))  # from another run of A
    deliver(fanout.sign_frame(b, end.room_id, EPOCH, 3, media(4)))  # B signs audio itself, in A's name
    assert link_a.receive_log.packets == 1
    deliver(fanout.sign_frame(a, end.room_id, EPOCH, 1, media(2)))  # the genuine counter 1 still plays
    assert link_a.receive_log.packets == 2
    status = end.node.status()
    assert status["fan_out_auth_failures"] == 3 and status["fan_out_dropped"] == {"replay": 1, "signature": 3}
    assert status["fan_delivers_received"] == 2 and end.node.malformed_relay == 0
    # The same frame directly (§15.3: while B's LINKS changes) is played, and counted, once.
    end.receive("a", INNER_MEDIA, media(2))
    assert link_a.receive_log.packets == 2 and link_a.receive_log.duplicates == 1
    end.receive("a", INNER_MEDIA, media(3))
    deliver(fanout.sign_frame(a, end.room_id, EPOCH, 2, media(3)))
    assert link_a.receive_log.packets == 3 and link_a.receive_log.duplicates == 2


def test_fan_deliver_needs_version_4_on_both_links_and_a_known_origin():
    a, b, c, x = (Identity.generate() for _ in range(4))
    end = Member(c, {"a": (a, 4), "b": (b, 4), "old": (x, 3)})
    frame = fanout.sign_frame(a, end.room_id, EPOCH, 0, MEDIA)
    end.receive("old", relay.INNER_RELAY, RelayPacket(fanout.FAN_DELIVER, a.identity_key, frame).encode())
    assert end.node.malformed_relay == 1  # kind 5 on a version-3 link: an unknown relay kind
    old_frame = fanout.sign_frame(x, end.room_id, EPOCH, 0, MEDIA)
    end.receive("b", relay.INNER_RELAY, RelayPacket(fanout.FAN_DELIVER, x.identity_key, old_frame).encode())
    stranger = Identity.generate()
    strange = fanout.sign_frame(stranger, end.room_id, EPOCH, 0, MEDIA)
    end.receive("b", relay.INNER_RELAY, RelayPacket(fanout.FAN_DELIVER, stranger.identity_key, strange).encode())
    end.receive("a", relay.INNER_RELAY, RelayPacket(fanout.FAN_DELIVER, a.identity_key, frame).encode())
    assert end.node.status()["fan_out_dropped"] == {"origin": 3}
    assert all(link.receive_log.packets == 0 for link in end.node.links.values())


def test_a_new_run_of_the_origin_has_a_new_window():
    a, c = Identity.generate(), Identity.generate()
    end = Member(c, {"a": (a, 4)})
    end.node.fan_out_window(end.link("a")).record(5)
    assert not end.node.fan_out_window(end.link("a")).would_accept(5)
    later = Link(end.node, a.identity_key, Hello(a.static_key, a.binding_signature, EPOCH + 1, (1, 2, 3, 4), "a"),
                 member_id=1, version=4)
    assert end.node.fan_out_window(later).would_accept(5)


def fan_deliver(end: Member, via: str, origin: Identity, frame: bytes) -> None:
    end.receive(via, relay.INNER_RELAY, RelayPacket(fanout.FAN_DELIVER, origin.identity_key, frame).encode())


def test_a_fan_deliver_naming_the_member_that_sent_it_is_dropped():
    """§15.2 step 1: `peer` must name a member other than B. B's own frames come to C as FAN_OUT (C would be B's
    fan-out member) or directly, never as FAN_DELIVER from B; one is dropped before any check, and moves nothing."""
    a, b, c = (Identity.generate() for _ in range(3))
    end = Member(c, {"a": (a, 4), "b": (b, 4)})
    frame = fanout.sign_frame(b, end.room_id, EPOCH, 0, media(0))  # signed by B: it would verify
    fan_deliver(end, "b", b, frame)
    assert end.link("b").receive_log.packets == 0 and end.link("b").media_fanned_in == 0
    assert end.node.status()["fan_out_dropped"] == {"origin": 1} and end.node.fan_delivers_received == 0
    assert end.node.fan_out_windows == {}  # no window was even opened
    assert end.link("b").liveness.fanned_in_at is None
    fan_deliver(end, "a", b, frame)  # the same frame passed on by A is B's, and plays
    assert end.link("b").receive_log.packets == 1 and end.link("b").media_fanned_in == 1


def test_fan_delivers_beyond_250_a_second_from_one_member_are_dropped_unchecked():
    """§15.2 step 0 (Parley's rate, which this peer keeps too): a member cannot make C spend without end on
    signature checks. Per member; bursts of 50."""
    a, b, c, d = (Identity.generate() for _ in range(4))
    end = Member(c, {"a": (a, 4), "b": (b, 4), "d": (d, 4)})
    node, t = end.node, time.monotonic()
    frames = [fanout.sign_frame(a, end.room_id, EPOCH, n, media(n)) for n in range(80)]

    def deliver(via: str, n: int, at: float) -> None:
        packet = RelayPacket(fanout.FAN_DELIVER, a.identity_key, frames[n])
        asyncio.run(node.on_fan_deliver(end.link(via), packet, at))

    for n in range(60):
        deliver("b", n, t)
    assert node.fan_delivers_received == 50 and node.fan_out_dropped == Counter(rate=10)
    deliver("d", 60, t)  # another member has a budget of its own
    assert node.fan_delivers_received == 51
    # 250 a second: one more every 4 ms. 5 ms later, not 4: (t + 0.004) - t is 0.0039999... for some t,
    # a token short, and the test failed on a clean clone's run.
    deliver("b", 61, t + 0.005)
    deliver("b", 62, t + 0.005)
    assert node.fan_delivers_received == 52 and node.fan_out_dropped == Counter(rate=11)
    assert end.link("a").media_fanned_in == 52
    # A frame dropped for the rate was not checked: it moved no window, and plays when it comes again.
    deliver("b", 55, t + 1.0)
    assert node.fan_delivers_received == 53


def test_the_fan_out_window_outlives_a_link_with_the_same_run_of_its_origin():
    """§15.2 step 2: one window per origin and session epoch, kept as long as C knows that member: when the link was
    removed and comes back with the same run, B cannot replay that run's old frames into it."""
    a, b, c = (Identity.generate() for _ in range(3))
    end = Member(c, {"a": (a, 4), "b": (b, 4)})
    frames = [fanout.sign_frame(a, end.room_id, EPOCH, n, media(n)) for n in range(3)]
    for frame in frames[:2]:
        fan_deliver(end, "b", a, frame)
    assert end.link("a").receive_log.packets == 2
    asyncio.run(end.node.end_link(end.link("a"), "lost"))
    fan_deliver(end, "b", a, frames[2])  # no link with A now: dropped (origin), the window not touched
    again = end.add_link("a", a, 4)  # the same run of A, a new link (and a new session)
    assert end.node.fan_out_window(again).greatest == 1
    for frame in frames:
        fan_deliver(end, "b", a, frame)
    assert again.media_fanned_in == 1  # only counter 2 is new
    assert again.receive_log.packets == 3  # (the recording of A's run goes on across its links)
    assert end.node.status()["fan_out_dropped"] == {"origin": 1, "replay": 2}
    # A new run of A (a new epoch) starts an empty window: its counters start at 0 again.
    later = end.add_link("a", a, 4, epoch=EPOCH + 1)
    fan_deliver(end, "b", a, fanout.sign_frame(a, end.room_id, EPOCH + 1, 0, media(10)))
    assert later.media_fanned_in == 1


@pytest.mark.parametrize("direct_first", [True, False])
def test_a_frame_that_comes_both_ways_is_played_and_counted_in_media_received_once(direct_first):
    """§15.2 step 4 and §10.1: while routes change a frame can arrive directly and passed on, with the same sequence
    number: played once, counted once in `media_received` (and `media_expected` follows the sequence numbers)."""
    a, b, c = (Identity.generate() for _ in range(3))
    end = Member(c, {"a": (a, 4), "b": (b, 4)})
    link_a = end.link("a")
    for n in range(5):
        ways = [lambda: end.receive("a", INNER_MEDIA, media(n)),
                lambda: fan_deliver(end, "b", a, fanout.sign_frame(a, end.room_id, EPOCH, n, media(n)))]
        for way in ways if direct_first else reversed(ways):
            way()
    assert link_a.receive_log.packets == 5 and link_a.receive_log.primaries_received == 5
    assert link_a.receive_log.duplicates == 5 and link_a.media_fanned_in == 5
    report = control.parse(link_a.make_report(time.monotonic()))
    assert (report.media_received, report.media_expected, report.loss_permille) == (5, 5, 0)


def test_the_sender_fans_out_through_the_member_and_goes_direct_when_it_refuses():
    a, b, c, d, e, f = (Identity.generate() for _ in range(6))
    sender = Member(a, {"b": (b, 4), "c": (c, 4), "d": (d, 3), "e": (e, 4), "f": (f, 4)}, fan_out_through="B")
    sender.link("b").peer_links = control.Links(True, ((a.identity_key, 10), (c.identity_key, 10),
                                                       (d.identity_key, 10), (f.identity_key, 10)))
    node = sender.node

    def sent() -> dict[str, list[int]]:
        return {name: [inner for inner, _ in sender.sent_to(name)] for name in "bcdef"}

    asyncio.run(node.send_media(media(1), time.monotonic()))
    asyncio.run(node.send_media(media(2), time.monotonic()))
    # B gets the signed copy (its own copy too); C and F only through B; D speaks 3 and E is not in B's LINKS:
    # direct.
    opened = sender.sent_to("b")
    assert [inner for inner, _ in opened] == [fanout.INNER_FAN_OUT] * 2
    window = ReplayWindow(64)
    assert [fanout.open_frame(body, a.identity_key, sender.room_id, node.epoch, window) for _, body in opened] \
        == [(0, media(1)), (1, media(2))]
    assert sent() == {"b": [], "c": [], "d": [INNER_MEDIA] * 2, "e": [INNER_MEDIA] * 2, "f": []}
    assert node.status()["fan_out"] == b.identity_key.hex()[:16] and node.status()["fan_outs_sent"] == 2
    # B refuses: direct copies to everyone at the next frame, and B is not asked again for 30 s.
    sender.receive("b", INNER_CONTROL, control.RelayRefused(relay.EVERYONE, relay.BUSY).encode())
    asyncio.run(node.send_media(media(3), time.monotonic()))
    assert sent() == {name: [INNER_MEDIA] for name in "bcdef"}
    assert node.status()["fan_out"] is None
    assert node.fan_out_link(time.monotonic() + fanout.REFUSAL_MEMORY) is sender.link("b")
    # A member that does not say it relays, or whose link is not up directly, is not used.
    sender.link("b").fan_out_refused_at = float("-inf")
    sender.link("b").peer_links = control.Links(False, ((c.identity_key, 10), (f.identity_key, 10)))
    assert node.fan_out_link(time.monotonic()) is None
    sender.link("b").peer_links = control.Links(True, ((c.identity_key, 10), (f.identity_key, 10)))
    assert node.fan_out_link(time.monotonic()) is sender.link("b")
    sender.link("b").state = "lost"
    assert node.fan_out_link(time.monotonic()) is None


def test_the_sender_fans_out_only_through_a_member_that_lists_two_of_its_other_peers():
    """§15.3: B's latest LINKS must list at least two of A's other peers; those that speak version 4 with A are the
    ones B would pass A's frames to. Checked at every frame: when B's LINKS shrinks to one, direct copies again."""
    a, b, c, d, f = (Identity.generate() for _ in range(5))
    sender = Member(a, {"b": (b, 4), "c": (c, 4), "d": (d, 3), "f": (f, 4)}, fan_out_through="b")
    node, link_b = sender.node, sender.link("b")
    link_b.peer_links = control.Links(True, ((a.identity_key, 10), (c.identity_key, 10), (d.identity_key, 10)))
    assert node.fan_out_link(time.monotonic()) is None  # C only: D speaks 3 with A and gets its own copy anyway
    asyncio.run(node.send_media(media(1), time.monotonic()))
    assert {name: [inner for inner, _ in sender.sent_to(name)] for name in "bcdf"} == {
        name: [INNER_MEDIA] for name in "bcdf"}
    link_b.peer_links = control.Links(True, ((c.identity_key, 10), (f.identity_key, 10)))
    asyncio.run(node.send_media(media(2), time.monotonic()))
    assert {name: [inner for inner, _ in sender.sent_to(name)] for name in "bcdf"} == {
        "b": [fanout.INNER_FAN_OUT], "c": [], "d": [INNER_MEDIA], "f": []}
    link_b.peer_links = control.Links(True, ((f.identity_key, 10),))  # B lost its link with C
    asyncio.run(node.send_media(media(3), time.monotonic()))
    assert {name: [inner for inner, _ in sender.sent_to(name)] for name in "bcdf"} == {
        name: [INNER_MEDIA] for name in "bcdf"}
    assert node.status()["fan_out"] is None and node.status()["fan_outs_sent"] == 1


def test_without_the_option_every_peer_gets_its_own_copy():
    a, b, c = (Identity.generate() for _ in range(3))
    sender = Member(a, {"b": (b, 4), "c": (c, 4)})
    sender.link("b").peer_links = control.Links(True, ((c.identity_key, 10),))
    asyncio.run(sender.node.send_media(media(1), time.monotonic()))
    assert [inner for inner, _ in sender.sent_to("b")] == [INNER_MEDIA]
    assert [inner for inner, _ in sender.sent_to("c")] == [INNER_MEDIA]


# MARK: §10.3 liveness while a member fans a peer's media out


def test_liveness_a_second_after_dense_packets_two_after_sparse_ones():
    live = liveness.Liveness()
    assert live.silence_limit(0.0) == 2.0  # nothing yet
    for i in range(50):  # media every 20 ms
        live.packet(i * 0.02)
    assert live.dense and live.silence_limit(1.0) == 1.0
    for t in (2.0, 2.001, 3.0, 3.002, 4.0):  # then REPORTs a second apart, each with its LINKS (§13.1)
        live.packet(t)
    assert not live.dense and live.silence_limit(4.5) == 2.0
    for i in range(1, 6):  # a DTX pause: REPORTs every 250 ms (§10.1)
        live.packet(4.0 + 0.25 * i)
    assert live.dense and live.silence_limit(5.5) == 1.0


def test_liveness_while_the_peer_s_media_comes_through_a_member_is_the_2_s_rule():
    live = liveness.Liveness()
    for i in range(100):  # dense media directly ...
        live.packet(i * 0.02)
    live.fanned_in(1.99)  # ... then the peer fans out: its frames come through a member
    assert live.dense  # however densely its last direct packets came
    assert live.silence_limit(2.5) == 2.0 and live.silence_limit(3.98) == 2.0
    assert live.silence_limit(3.99) == 1.0  # no frame of it verified for 2 s: the dense rule again


def test_the_node_judges_a_link_whose_media_is_fanned_in_by_the_2_s_rule():
    """The quick rule would call A's link lost a second after its media moved to B, though A's REPORTs still come a
    second apart; a FAN_DELIVER of A's frame is not itself a packet of A's link (no sign of life), only the reason to
    wait 2 s."""
    a, b, c = (Identity.generate() for _ in range(3))
    end = Member(c, {"a": (a, 4), "b": (b, 4)})
    link_a = end.link("a")
    for n in range(20):  # A's media directly, every 20 ms as far as the link can tell
        end.receive("a", INNER_MEDIA, media(n))
    link_a.liveness = liveness.Liveness()
    t = time.monotonic()
    for i in range(20):
        link_a.liveness.packet(t - 0.4 + i * 0.02)
    link_a.session.last_authenticated_at = t
    link_a.next_report_at = t + 100
    asyncio.run(link_a.tick(t + 1.05))
    assert link_a.state == "lost"  # dense, then a second of silence: the quick rule
    link_a.state = "up"
    # Now A's frames come through B: the last direct packets were just as dense, but the 2 s rule applies.
    frame = fanout.sign_frame(a, end.room_id, EPOCH, 0, media(100))
    fan_deliver(end, "b", a, frame)
    fanned_at = link_a.liveness.fanned_in_at
    assert fanned_at is not None and link_a.media_fanned_in == 1
    assert link_a.session.last_authenticated_at == t  # passed-on frames are no sign of life of A's link
    link_a.session.last_authenticated_at = fanned_at - 0.1
    asyncio.run(link_a.tick(fanned_at + 1.2))
    assert link_a.state == "up" and link_a.liveness.silence_limit(fanned_at + 1.2) == 2.0
    asyncio.run(link_a.tick(fanned_at + 1.95))
    assert link_a.state == "lost"  # 2.05 s of silence: lost by the 2 s rule


# MARK: §14 (version 3, which version 4 includes): chat and the recording notice, received


def test_chat_wire_formats():
    assert chat.Chat(2, 1, False, b"hi").encode() == h("07 00000002 00000001 00 6869".replace(" ", ""))
    assert chat.ChatAck(0x01020304).encode() == h("0801020304")
    assert chat.Recording(True).encode() == h("0901") and chat.Recording(False).encode() == h("0900")
    assert control.parse(h("07000000020000000100" "6869")) == chat.Chat(2, 1, False, b"hi")
    assert control.parse(h("0700000002000000010168")) == chat.Chat(2, 1, True, b"h")
    assert control.parse(h("0801020304")) == chat.ChatAck(0x01020304)
    assert control.parse(h("0903")) == chat.Recording(True)  # other bits ignored
    for dropped in ("07000000000000000000" "68", "07000000010000000000" "68", "07000000010000000200" "68",
                    "07000000010000000100", "0701", "08010203", "09"):
        assert control.parse(h(dropped)) is None, dropped
    assert control.parse(bytes.fromhex("070000000100000001" "00") + bytes(1025)) is None


def test_chat_receiver_orders_reassembles_and_gives_up_with_the_sender():
    stream = chat.ChatReceiver()
    assert stream.receive(chat.Chat(2, 1, False, b"lo")) == [] and stream.received == 0
    assert stream.receive(chat.Chat(1, 1, True, b"hel")) == ["hello"] and stream.received == 2
    assert stream.receive(chat.Chat(1, 1, True, b"hel")) == [] and stream.received == 2  # a copy
    assert stream.receive(chat.Chat(3, 3, False, b"a\x1b[2Jb\tc\n\xc2\x9b")) == ["a\ufffd[2Jb\tc\n\ufffd"]
    assert stream.receive(chat.Chat(4, 4, True, b"lost")) == []
    assert stream.receive(chat.Chat(7, 6, False, b"new")) == []  # the sender gave up 5: 4's message is dropped too
    assert stream.received == 5 and stream.partial == b""
    assert stream.receive(chat.Chat(6, 6, True, b"a ")) == ["a new"]
    assert stream.receive(chat.Chat(8, 8, False, b"\xff")) == [] and stream.received == 8  # not UTF-8: dropped
    pieces = [chat.Chat(9 + i, 9, True, b"x" * 1024) for i in range(4)] + [chat.Chat(13, 9, False, b"y")]
    assert [stream.receive(piece) for piece in pieces] == [[]] * 5 and stream.received == 13  # 4097 bytes
    assert stream.receive(chat.Chat(14 + chat.AHEAD, 14, False, b"far")) == []  # too far ahead: not kept
    assert stream.ahead == {}


def test_chat_is_acknowledged_and_shown_and_recording_noticed_on_version_3_links_only():
    a, c, old = (Identity.generate() for _ in range(3))
    end = Member(c, {"a": (a, 4), "old": (old, 2)}, record_dir="/nonexistent")
    end.receive("a", INNER_CONTROL, chat.Chat(1, 1, False, b"hi").encode())
    end.receive("a", INNER_CONTROL, chat.Chat(1, 1, False, b"hi").encode())  # its acknowledgement was lost
    assert controls(end.sent_to("a"), chat.CHAT_ACK) == [chat.ChatAck(1), chat.ChatAck(1)]
    assert end.node.status()["chat"] == [{"from": a.identity_key.hex(), "name": "a", "text": "hi"}]
    end.receive("old", INNER_CONTROL, chat.Chat(1, 1, False, b"hi").encode())
    assert controls(end.sent_to("old"), chat.CHAT_ACK) == [] and len(end.node.chat_messages) == 1
    end.receive("a", INNER_CONTROL, chat.Recording(True).encode())
    assert end.link("a").status()["recording"] is True
    end.receive("a", INNER_CONTROL, control.Report(1, flags=0).encode())  # REPORT bit 1 is the same state
    assert end.link("a").peer_records is False
    end.receive("old", INNER_CONTROL, control.Report(1, flags=control.RECORDING_FLAG).encode())
    end.receive("old", INNER_CONTROL, chat.Recording(True).encode())
    assert end.link("old").peer_records is False
    # We record (record_dir): bit 1 of our REPORTs on the version-3 link, not on the older one.
    now = time.monotonic()
    assert control.parse(end.link("a").make_report(now)).flags == control.RECORDING_FLAG
    assert control.parse(end.link("old").make_report(now)).flags == 0
