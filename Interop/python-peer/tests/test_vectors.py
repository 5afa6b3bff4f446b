"""The Python peer against the known-answer vectors of docs/PROTOCOL.md (Tests/Fixtures/protocol-v1-*.json,
protocol-v4-fanout.json) and the public Noise (cacophony) vectors. Every value is recomputed from the recorded
inputs."""

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from parley_peer import control, envelope, fanout, media
from parley_peer.identity import Identity, verify_binding
from parley_peer.invite import Invite, InviteError, RendezvousURL
from parley_peer.keys import RoomKeys
from parley_peer.noise import HandshakeState, parse_protocol_name
from parley_peer.relay import RelayPacket
from parley_peer.rendezvous import shard_key, shard_path
from parley_peer.replay import ReplayWindow
from parley_peer import security_code
from parley_peer.session import PeerSession, mac1_key, prologue, tai64n
from parley_peer.wire import WireError

FIXTURES = Path(__file__).resolve().parents[3] / "Tests" / "Fixtures"


def load(name):
    return json.loads((FIXTURES / name).read_text())


h = bytes.fromhex
KEYS = load("protocol-v1-keys.json")
IDENTITIES = load("protocol-v1-identity.json")["identities"]
ROOM = RoomKeys.derive(h(KEYS["room_secret"]))
ALICE = Identity(h(IDENTITIES[0]["identity_seed"]), h(IDENTITIES[0]["static_secret"]))
BOB = Identity(h(IDENTITIES[1]["identity_seed"]), h(IDENTITIES[1]["static_secret"]))


# MARK: §2 invites


@pytest.mark.parametrize("vector", load("protocol-v1-invite.json")["valid"], ids=lambda v: v["rendezvous_url"])
def test_valid_invites(vector):
    invite = Invite.parse(vector["invite"])
    assert invite.room_secret.hex() == vector["room_secret"]
    assert invite.rendezvous_url.canonical() == vector["rendezvous_url"]
    assert (invite.tls_pin.hex() if invite.tls_pin else None) == vector["tls_pin"]
    hints = [{"uri": t.uri, "username": t.username, "password": t.password} for t in invite.turn_hints]
    assert hints == vector["turn_hints"]
    # And the encoder writes exactly the recorded binary and text.
    assert invite.binary().hex() == vector["binary"]
    assert invite.text() == vector["invite"]


@pytest.mark.parametrize("vector", load("protocol-v1-invite.json")["pasted"], ids=repr)
def test_pasted_invites(vector):
    assert Invite.parse(vector["text"]).text() == vector["invite"]


@pytest.mark.parametrize("vector", load("protocol-v1-invite.json")["invalid"], ids=lambda v: v["error"])
def test_invalid_invites(vector):
    with pytest.raises(InviteError) as error:
        Invite.parse(vector["text"])
    assert error.value.code == vector["error"]


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("WS://Example.ORG", "ws://example.org"),
        ("wss://rv.example.org:443/", "wss://rv.example.org:443"),
        ("ws://[2001:DB8::1]:7777/a/b%20c", "ws://[2001:db8::1]:7777/a/b%20c"),
    ],
)
def test_rendezvous_url_canonical(text, canonical):
    assert RendezvousURL.parse(text).canonical() == canonical


@pytest.mark.parametrize(
    "text",
    ["http://x", "ws://", "ws://-a.org", "ws://a..b", "ws://a:0", "ws://a:65536", "ws://u@a", "ws://a/?q", "ws://a/#f"],
)
def test_bad_rendezvous_urls(text):
    with pytest.raises(InviteError) as error:
        RendezvousURL.parse(text)
    assert error.value.code == "bad-rendezvous-url"


@pytest.mark.parametrize("case", load("protocol-v1-invite-errors.json")["cases"], ids=lambda c: c["name"])
def test_invite_field_errors(case):
    if case["error"] is None:
        Invite.parse(case["invite"])
        return
    with pytest.raises(InviteError) as error:
        Invite.parse(case["invite"])
    assert error.value.code == case["error"]


# MARK: §3 keys


def test_key_schedule_and_join_proof():
    assert ROOM.room_key_seed.hex() == KEYS["room_key_seed"]
    assert ROOM.signaling_key.hex() == KEYS["signaling_key"]
    assert ROOM.noise_psk.hex() == KEYS["noise_psk"]
    assert ROOM.mac_key.hex() == KEYS["mac_key"]
    assert ROOM.room_id.hex() == KEYS["room_id"]
    assert ROOM.join_proof(h(KEYS["join_nonce"])).hex() == KEYS["join_proof"]


def test_shard_key_and_request_paths():
    """§4.1: the routing key in the rendezvous URL's path."""
    assert shard_key(ROOM.room_id) == KEYS["shard_key"]
    for vector in KEYS["shard_paths"]:
        assert shard_path(vector["invite_path"], ROOM.room_id) == vector["request_path"]


# MARK: §5 identity


@pytest.mark.parametrize("vector", IDENTITIES, ids=lambda v: v["identity_key"][:8])
def test_identities(vector):
    identity = Identity(h(vector["identity_seed"]), h(vector["static_secret"]))
    assert identity.identity_key.hex() == vector["identity_key"]
    assert identity.static_key.hex() == vector["static_key"]
    assert identity.binding_signature.hex() == vector["binding_signature"]
    assert verify_binding(identity.identity_key, identity.static_key, identity.binding_signature)
    assert not verify_binding(identity.identity_key, bytes(32), identity.binding_signature)


# MARK: §6 envelopes


def signaling(identity, sequence=None):
    return envelope.Signaling(ROOM.room_id, ROOM.signaling_key, identity, first_sequence=sequence)


def message_from_json(m):
    kind = m["type"]
    if kind == "HELLO":
        return envelope.Hello(h(m["static_key"]), h(m["binding_signature"]), int(m["session_epoch"]),
                              tuple(m["versions"]), m["display_name"])
    if kind == "ICE_CREDENTIALS":
        return envelope.ICECredentials(m["generation"], m["ufrag"], m["password"])
    if kind == "ICE_CANDIDATE":
        return envelope.ICECandidate(m["generation"], m["candidate"])
    if kind == "ICE_CANDIDATES_DONE":
        return envelope.ICECandidatesDone(m["generation"])
    if kind == "ICE_RESTART":
        return envelope.ICERestart(m["generation"])
    if kind == "BYE":
        return envelope.Bye(m["reason"])
    raise AssertionError(kind)


ENVELOPES = load("protocol-v1-envelope.json")


@pytest.mark.parametrize("vector", ENVELOPES["deterministic"], ids=lambda v: v["message"]["type"] + v["sequence"])
def test_deterministic_envelopes(vector):
    message = message_from_json(vector["message"])
    sealed = signaling(ALICE).seal(message, recipient=h(vector["recipient"]), nonce=h(vector["nonce"]),
                                   sequence=int(vector["sequence"]))
    assert sealed.hex() == vector["envelope"]
    received = signaling(BOB).open(h(vector["envelope"]))
    assert received.message == message
    assert received.sequence == int(vector["sequence"])
    assert received.sender == ALICE.identity_key


@pytest.mark.parametrize("vector", ENVELOPES["sealed"], ids=lambda v: v["message"]["type"])
def test_sealed_envelopes(vector):
    bob = signaling(BOB)
    received = bob.open(h(vector["envelope"]))
    assert received.message == message_from_json(vector["message"])
    # A replay of the same envelope is refused by the window (§6.4 step 6).
    with pytest.raises(envelope.EnvelopeError):
        bob.open(h(vector["envelope"]))
    # Our own sealing round-trips through a fresh receiver, and other members cannot open it.
    ours = signaling(ALICE).seal(received.message, recipient=BOB.identity_key, recipient_static_key=BOB.static_key)
    assert len(ours) == 553
    assert signaling(BOB).open(ours).message == received.message


def test_envelope_rejections():
    alice, bob = signaling(ALICE, 10), signaling(BOB)
    hello = envelope.Hello(ALICE.static_key, ALICE.binding_signature, 7, (1,), "Alice")
    sealed = alice.seal(hello)
    for position in range(len(sealed)):  # every flipped bit position's byte is refused
        tampered = bytearray(sealed)
        tampered[position] ^= 0x01
        with pytest.raises(envelope.EnvelopeError):
            signaling(BOB).open(bytes(tampered))
    other_room = envelope.Signaling(ROOM.room_id, bytes(32), BOB)
    with pytest.raises(envelope.EnvelopeError):
        other_room.open(sealed)
    with pytest.raises(envelope.EnvelopeError):  # our own echo
        signaling(ALICE).open(sealed)
    assert bob.open(sealed).message == hello
    # A HELLO with someone else's static key fails the binding.
    forged = alice.seal(envelope.Hello(BOB.static_key, ALICE.binding_signature, 7, (1,), "Alice"))
    with pytest.raises(envelope.EnvelopeError):
        bob.open(forged)
    # A unicast-only type broadcast is refused.
    with pytest.raises(envelope.EnvelopeError):
        bob.open(alice.seal(envelope.ICERestart(1)))


@pytest.mark.parametrize("name", ["", " a", "a ", "a\nb", "a\u202eb", "x" * 65, "a\u2028b"])
def test_bad_display_names(name):
    with pytest.raises(ValueError):
        envelope.check_display_name(name.encode())


# MARK: §7–§8 handshake and transport

HANDSHAKE = load("protocol-v1-handshake.json")


def sessions(clock_ns):
    common = dict(room_id=ROOM.room_id, noise_psk=ROOM.noise_psk, mac_key=ROOM.mac_key)
    initiator = PeerSession(identity_key=ALICE.identity_key, static_secret=ALICE.static_secret,
                            peer_identity_key=BOB.identity_key, peer_static_key=BOB.static_key,
                            wall_clock_ns=clock_ns, **common)
    responder = PeerSession(identity_key=BOB.identity_key, static_secret=BOB.static_secret,
                            peer_identity_key=ALICE.identity_key, peer_static_key=ALICE.static_key,
                            wall_clock_ns=clock_ns, **common)
    return initiator, responder


def test_handshake_vector():
    v = HANDSHAKE
    assert tai64n(int(v["timestamp_unix_ns"])).hex() == v["timestamp_tai64n"]
    assert prologue(1, ROOM.room_id, ALICE.identity_key, BOB.identity_key).hex() == v["prologue"]
    assert mac1_key(ROOM.mac_key, BOB.static_key).hex() == v["mac1_key_to_responder"]
    assert mac1_key(ROOM.mac_key, ALICE.static_key).hex() == v["mac1_key_to_initiator"]
    initiator, responder = sessions(lambda: int(v["timestamp_unix_ns"]))
    initiation = initiator.create_initiation(0.0, ephemeral=h(v["initiator_ephemeral_secret"]),
                                             index=int(v["initiator_index"]))
    assert initiation.hex() == v["initiation"]
    response = responder._receive_initiation(initiation, 0.0, ephemeral=h(v["responder_ephemeral_secret"]),
                                             index=int(v["responder_index"]))
    assert [r.hex() for r in response] == [v["response"]]
    assert initiator.pending.state.handshake_hash.hex() != v["handshake_hash"]  # not until message 2 is read
    state = initiator.pending.state
    back, delivered = initiator.receive(response[0], 0.0)
    assert state.handshake_hash.hex() == v["handshake_hash"]
    assert initiator.current.send_key.hex() == v["initiator_send_key"]
    assert initiator.current.receive_key.hex() == v["initiator_receive_key"]
    assert responder.next.send_key.hex() == v["initiator_receive_key"]
    # The initiator confirms at once with a keepalive: the first transport vector.
    transports = v["transport"]
    assert back[0].hex() == transports[0]["packet"]
    assert responder.receive(back[0], 0.1) == ([], [])
    assert responder.current is not None and responder.next is None
    by_side = {"initiator": initiator, "responder": responder}
    for t in transports[1:]:
        sender = by_side[t["from"]]
        receiver = by_side["responder" if t["from"] == "initiator" else "initiator"]
        assert sender.current.send_counter == t["counter"]
        packet = sender.seal(t["inner_type"], h(t["body"]), 0.2)
        assert packet.hex() == t["packet"]
        expected = [] if t["inner_type"] == 0 else [(t["inner_type"], h(t["body"]))]
        assert receiver.receive(packet, 0.2) == ([], expected)
        assert receiver.receive(packet, 0.2) == ([], [])  # replay


def test_handshake_rejections():
    clock = iter(range(1, 10**6))
    initiator, responder = sessions(lambda: next(clock) * 10**9)
    initiation = initiator.create_initiation(0.0)
    for position in range(len(initiation)):
        tampered = bytearray(initiation)
        tampered[position] ^= 0x80
        assert sessions(lambda: 0)[1].receive(bytes(tampered), 0.0) == ([], [])
    response = responder.receive(initiation, 0.0)[0]
    assert responder.receive(initiation, 1.0) == ([], [])  # replayed timestamp
    wrong_psk = PeerSession(identity_key=ALICE.identity_key, static_secret=ALICE.static_secret,
                            peer_identity_key=BOB.identity_key, peer_static_key=BOB.static_key,
                            room_id=ROOM.room_id, noise_psk=bytes(32), mac_key=ROOM.mac_key)
    wrong_psk.create_initiation(0.0, index=initiator.pending.index)
    assert wrong_psk.receive(response[0], 0.0) == ([], [])  # another room's PSK: message 2 fails
    assert wrong_psk.pending is not None  # and the pending handshake is kept
    keepalive = initiator.receive(response[0], 0.0)[0]
    assert responder.receive(keepalive[0], 0.0) == ([], [])
    packet = initiator.seal(1, b"hello", 0.0)
    for position in range(len(packet)):
        tampered = bytearray(packet)
        tampered[position] ^= 0x01
        assert responder.receive(bytes(tampered), 0.0)[1] == []
    assert responder.receive(packet, 0.0)[1] == [(1, b"hello")]


def test_forged_transport_packets_change_nothing():
    """§8.7: packets under a known index that fail to authenticate are counted, nothing more."""
    clock = iter(range(1, 10**6))
    initiator, responder = sessions(lambda: next(clock) * 10**9)
    response = responder.receive(initiator.create_initiation(0.0), 0.0)[0]
    keepalive = initiator.receive(response[0], 0.0)[0]
    responder.receive(keepalive[0], 0.0)
    keys = responder.current
    genuine = initiator.seal(1, b"hello", 0.0)
    for counter in range(1000):
        forged = bytearray(genuine)
        forged[8:16] = (100 + counter).to_bytes(8, "big")
        assert responder.receive(bytes(forged), 0.0) == ([], [])
    assert responder.stats.authentication_failures == 1000
    assert responder.current is keys and responder.current.send_key
    assert responder.receive(genuine, 0.0) == ([], [(1, b"hello")])


def test_replayed_and_flooded_initiations_reach_no_diffie_hellman(monkeypatch):
    """§7.3 steps 3-4: a copy of a processed initiation, or one beyond the budget, costs no DH."""
    import parley_peer.session as session
    reads = []
    original = session.HandshakeState.read_message
    monkeypatch.setattr(session.HandshakeState, "read_message",
                        lambda self, message: reads.append(1) or original(self, message))
    clock = iter(range(1, 10**6))
    initiator, responder = sessions(lambda: next(clock) * 10**9)
    captured = []
    for _ in range(12):
        initiator.pending = None
        captured.append(initiator.create_initiation(0.0))
    assert responder.receive(captured[-1], 0.0)[0]  # the newest: answered
    for old in captured[:-1]:
        assert responder.receive(old, 0.0) == ([], [])
    assert len(reads) == 5  # the burst: the newest and four stale ones
    for replayed in captured * 10:
        assert responder.receive(replayed, 0.5) == ([], [])
    assert len(reads) == 5
    assert responder.receive(captured[4], 1.0) == ([], [])  # a token again: the first one left out
    assert len(reads) == 6


def test_glare_resolves_to_one_session():
    clock = iter(range(1, 10**6))
    alice, bob = sessions(lambda: next(clock) * 10**9)
    from_alice = alice.create_initiation(0.0)
    from_bob = bob.create_initiation(0.0)
    lead, other = (alice, bob) if alice.is_lead else (bob, alice)
    to_lead, to_other = (from_bob, from_alice) if alice.is_lead else (from_alice, from_bob)
    assert lead.receive(to_lead, 0.0) == ([], [])  # the lead keeps its own
    response = other.receive(to_other, 0.0)[0]  # the other answers the lead's
    assert other.pending is None
    keepalive = lead.receive(response[0], 0.0)[0]
    other.receive(keepalive[0], 0.0)
    assert lead.current.send_key == other.current.receive_key


def test_rekey_loses_nothing():
    clock = iter(range(1, 10**7))
    a, b = sessions(lambda: next(clock) * 10**9)
    now = 0.0
    (init,) = a.path_up(now)
    b.path_up(now)
    (resp,) = b.receive(init, now)[0]
    (ka,) = a.receive(resp, now)[0]
    b.receive(ka, now)
    sent = received = 0
    while now < 400.0:  # three rekeys; 50 packets per second both ways
        now += 0.02
        for sender, receiver in ((a, b), (b, a)):
            packet = sender.seal(1, b"x", now)
            if packet:
                sent += 1
                received += len(receiver.receive(packet, now)[1])
            for datagram in sender.tick(now):
                replies = receiver.receive(datagram, now)[0]
                for reply in replies:
                    for echo in sender.receive(reply, now)[0]:
                        receiver.receive(echo, now)
    assert a.stats.handshakes_completed >= 3
    assert sent > 39000 and received == sent


def test_replay_window_edges():
    window = ReplayWindow(64)
    for counter in (5, 3, 70):
        assert window.would_accept(counter)
        window.record(counter)
    assert not window.would_accept(5)  # 65 behind 70: outside
    assert window.would_accept(7) and not window.would_accept(70) and not window.would_accept(3)


# MARK: §9 media, §10 control


def test_media_example():
    example = h("010112340102030403c003c003c00002f8aaf85051")
    payload = media.MediaPayload.parse(example)
    assert payload.primary == media.Frame(0x1234, 0x01020304, 960, h("f85051"))
    assert payload.copies == (media.Frame(0x1233, 0x01020304 - 960, 960, h("f8aa")),)
    assert payload.encode() == example


@pytest.mark.parametrize(
    "hexstring",
    [
        "020012340102030403c0f8",  # version
        "010512340102030403c0f8",  # R > 4
        "01001234010203040064f8",  # duration 100
        "010012340102030403c0",  # no primary
        "010112340102030403c003c003c00000f8",  # copy of length 0
        "010112340102030403c001e003c00001f8f8",  # copy overlaps the primary
    ],
)
def test_media_rejections(hexstring):
    with pytest.raises(media.MediaError):
        media.MediaPayload.parse(h(hexstring))


def test_control_messages():
    report = control.Report(1, 2, 3, 4, 5, 6, 7, control.MUTED)
    encoded = report.encode()
    assert len(encoded) == 31 and encoded[0] == control.REPORT  # with `queue_delay_ms` (§10.1)
    assert control.parse(encoded) == report
    assert control.parse(encoded + b"later fields") == report
    assert control.parse(encoded[:-2]) == report  # 28 bytes: no queue delay, as `report`
    assert control.parse(encoded[:-3]) is None
    assert control.parse(control.Leave().encode()) == control.Leave()
    assert control.parse(b"\x99") is None


# MARK: §11 security code


CODE = load("protocol-v1-security-code.json")


def test_security_code_view_commitment_and_code():
    room_id = h(CODE["room_id"])
    members = [(h(m["identity_key"]), m["name"]) for m in CODE["view"]["members"]]
    view = security_code.view_hash(room_id, list(reversed(members)))  # any order
    assert view.hex() == CODE["view"]["view_hash"]
    c = CODE["commitment"]
    assert security_code.commitment(h(c["sender"]), view, c["round"], h(c["nonce"])).hex() == c["commitment"]
    assert security_code.code(view, [h(n) for n in CODE["code"]["nonces"]]) == CODE["code"]["digits"]


def vector_nonces(node: int):
    """The vectors' nonces: node index, 23 zero bytes, draw number (u64)."""
    draws = iter(range(1, 10**6))
    return lambda: bytes([node]) + bytes(23) + next(draws).to_bytes(8, "big")


def test_security_code_agreement_run():
    """The whole run of the vector, with this implementation's state machine: the same messages, in the
    same order, and the same codes. Steps are view changes, and "deliver all": everything in flight is
    delivered, first in first out, over sessions both sides hold (what it provokes too)."""
    room_id = h(CODE["room_id"])
    members = [(h(m["identity_key"]), m["name"]) for m in CODE["view"]["members"]]
    # The vector's nodes are alice, bob, carol: identity-vector order, carol last.
    order = [h(i["identity_key"]) for i in load("protocol-v1-identity.json")["identities"]]
    names = dict(members)
    keys = order + [key for key, _ in members if key not in order]
    nodes = [security_code.SecurityCodeAgreement(room_id, key, names[key], vector_nonces(i))
             for i, key in enumerate(keys)]
    links = [set() for _ in keys]
    queue, sent, expected = [], [], []

    def send(node, outgoing):
        for peer, message in outgoing:
            queue.append((node, keys.index(peer), message))
            sent.append({"from": node, "to": keys.index(peer), "message": message.encode().hex()})

    codes_after_runs = []
    for step in CODE["run"]["steps"]:
        if "view" in step:
            node = step["view"]
            links[node] = set(step["peers"])
            send(node, nodes[node].view_changed([(keys[p], names[keys[p]]) for p in step["peers"]]))
        elif "deliver" in step:
            while queue:
                sender, receiver, message = queue.pop(0)
                if receiver in links[sender] and sender in links[receiver]:
                    parsed = security_code.Message.parse(message.encode())
                    send(receiver, nodes[receiver].received(parsed, keys[sender]))
            codes_after_runs.append([node.code for node in nodes])
        else:
            expected.append(step)
    assert sent == expected
    alice_and_bob = {security_code.display(code) for code in codes_after_runs[0][:2]}
    assert alice_and_bob == {CODE["run"]["pair_code"]}
    assert {security_code.display(code) for code in codes_after_runs[-1]} == {CODE["run"]["meeting_code"]}


def test_security_code_messages_parse_strictly():
    message = security_code.Message(security_code.REVEAL, bytes(range(32)), 9, bytes(32), True)
    encoded = message.encode()
    assert len(encoded) == 1 + 73 and security_code.Message.parse(encoded) == message
    assert security_code.Message.parse(encoded + b"later") == message  # §10: longer is allowed
    with pytest.raises(ValueError):
        security_code.Message.parse(encoded[:-1])
    assert control.parse(encoded[:-1]) is None and control.parse(encoded) == message


# MARK: Noise (cacophony)

def _supported(name):
    try:
        parse_protocol_name(name)
        return True
    except ValueError:
        return False


NOISE_VECTORS = [v for v in load("noise-cacophony-25519-chachapoly.json")["vectors"]
                 if v["protocol_name"].endswith("BLAKE2b") and _supported(v["protocol_name"])]


@pytest.mark.parametrize("vector", NOISE_VECTORS, ids=lambda v: v["protocol_name"])
def test_cacophony(vector):
    def opt(key):
        return h(vector[key]) if vector.get(key) else None

    initiator = HandshakeState(vector["protocol_name"], True, h(vector["init_prologue"]), s=opt("init_static"),
                               rs=opt("init_remote_static"), psks=[h(p) for p in vector.get("init_psks", [])],
                               ephemeral=opt("init_ephemeral"))
    responder = HandshakeState(vector["protocol_name"], False, h(vector["resp_prologue"]), s=opt("resp_static"),
                               rs=opt("resp_remote_static"), psks=[h(p) for p in vector.get("resp_psks", [])],
                               ephemeral=opt("resp_ephemeral"))
    one_way = len(initiator.messages) == 1
    ciphers = None
    for i, message in enumerate(vector["messages"]):
        from_initiator = one_way or i % 2 == 0
        sender, receiver = (initiator, responder) if from_initiator else (responder, initiator)
        payload, ciphertext = h(message["payload"]), h(message["ciphertext"])
        if not initiator.finished:
            assert sender.write_message(payload) == ciphertext
            assert receiver.read_message(ciphertext) == payload
            if initiator.finished:
                assert initiator.handshake_hash.hex() == vector["handshake_hash"]
                i_send, i_recv = initiator.split()
                r_recv, r_send = responder.split()
                ciphers = {True: (i_send, r_recv), False: (r_send, i_recv)}
        else:
            send, recv = ciphers[from_initiator]
            assert send.encrypt_with_ad(b"", payload) == ciphertext
            assert recv.decrypt_with_ad(b"", ciphertext) == payload
    assert ciphers is not None


def test_cacophony_covers_ikpsk2():
    assert any(v["protocol_name"] == "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b" for v in NOISE_VECTORS)
    assert len(NOISE_VECTORS) >= 25


# MARK: §15 signed frames and FAN_DELIVER (version 4)


FANOUT = load("protocol-v4-fanout.json")


def test_fanout_vectors_are_what_the_tool_writes():
    """The file is Interop/python-peer/tools/write_fanout_vectors.py's output, unchanged."""
    path = Path(__file__).resolve().parents[1] / "tools" / "write_fanout_vectors.py"
    spec = importlib.util.spec_from_file_location("write_fanout_vectors", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.document() == FANOUT
    assert FANOUT["context"] == b"parley/v4/fan-out\0".hex()


@pytest.mark.parametrize("case", [c for c in FANOUT["cases"] if c["valid"]], ids=lambda c: c["name"])
def test_fanout_signed_frames(case):
    identity = Identity(h(case["identity_seed"]), bytes(32))
    room_id, epoch, counter, payload = h(case["room_id"]), int(case["session_epoch"]), int(case["counter"]), \
        h(case["media"])
    assert identity.identity_key.hex() == case["identity_key"]
    assert fanout.signed_message(room_id, epoch, counter, payload).hex() == case["signed_message"]
    frame = fanout.sign_frame(identity, room_id, epoch, counter, payload)
    assert frame.hex() == case["signed_frame"]
    assert media.MediaPayload.parse(payload).encode() == payload  # a §9.1 payload
    body = h(case["fan_deliver"])
    assert RelayPacket.parse(body, 4) == RelayPacket(fanout.FAN_DELIVER, identity.identity_key, frame)
    assert body == bytes([5]) + identity.identity_key + frame
    assert fanout.open_frame(frame, identity.identity_key, room_id, epoch, ReplayWindow(64)) == (counter, payload)


@pytest.mark.parametrize("case", [c for c in FANOUT["cases"] if not c["valid"]], ids=lambda c: c["name"])
def test_fanout_frames_a_receiver_drops(case):
    dropped = Counter()
    window = ReplayWindow(64)
    assert fanout.open_frame(h(case["signed_frame"]), h(case["identity_key"]), h(case["room_id"]),
                             int(case["session_epoch"]), window, dropped) is None
    assert dropped == Counter({case["dropped"]: 1}) and window.greatest is None
    if case["dropped"] == "length":
        with pytest.raises(WireError):
            RelayPacket.parse(h(case["fan_deliver"]), 4)
    else:
        assert RelayPacket.parse(h(case["fan_deliver"]), 4).payload.hex() == case["signed_frame"]


def test_fanout_replay_sequence():
    replay = FANOUT["replay"]
    window = ReplayWindow(8)
    for frame in replay["frames"]:
        dropped = Counter()
        opened = fanout.open_frame(h(frame["signed_frame"]), h(replay["identity_key"]), h(replay["room_id"]),
                                   int(replay["session_epoch"]), window, dropped)
        assert (opened is not None) == frame["accepted"], frame["counter"]
        assert opened is None or opened[0] == int(frame["counter"])
        assert dropped == (Counter() if frame["accepted"] else Counter({frame["dropped"]: 1}))
