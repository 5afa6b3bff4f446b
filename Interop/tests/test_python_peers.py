"""Python peers meet through the real rendezvous: signaling, aioice paths, the handshake in both roles,
media and session control, and each hears the other's tone (FFT). This checks the Python implementation
against itself end to end before it meets the Swift node (test_swift_nodes.py)."""

from audio_checks import assert_hears_tones, assert_ogg_decodes, meeting_codes
from harness import new_invite, python_peer, read_status

LOOPBACK = ["--host-address", "127.0.0.1"]


def test_two_python_peers(tmp_path, rendezvous):
    invite = new_invite(rendezvous.url)
    common = [*LOOPBACK, "--expect-peers", "1", "--audio-seconds", "3", "--timeout", "40",
              "--record-dir", str(tmp_path / "rec"), "--ogg"]
    lead = python_peer(tmp_path, "lead", invite, "--role", "lead", "--tone", "440", *common)
    follower = python_peer(tmp_path, "follower", invite, "--role", "follower", "--tone", "660", *common)
    try:
        assert lead.wait(60) == 0, lead.diagnostics()
        assert follower.wait(60) == 0, follower.diagnostics()
    finally:
        lead.stop(), follower.stop()
    a, b = read_status(tmp_path, "lead"), read_status(tmp_path, "follower")
    (link_a,), (link_b,) = a["links"], b["links"]
    assert link_a["lead"] and not link_b["lead"]
    assert link_a["initiations_sent"] >= 1 and link_b["responses_sent"] >= 1  # the lead initiated
    assert link_a["reports_received"] >= 2 and link_a["rtt_ms"] is not None
    assert meeting_codes(a, 2) & meeting_codes(b, 2)  # a round both agreed on
    assert_hears_tones(b["received"][a["identity"]]["wav"], [440], [660])
    assert_hears_tones(a["received"][b["identity"]]["wav"], [660], [440])
    # The Opus packets as received, written to Ogg, decode with opus-tools.
    assert_ogg_decodes(b["received"][a["identity"]]["ogg"], 440, tmp_path)
    assert_ogg_decodes(a["received"][b["identity"]]["ogg"], 660, tmp_path)


def test_four_python_peers_one_fanning_out_through_another(tmp_path, rendezvous):
    """Version 4 (§15): A sends one signed copy to B, which plays it and passes it on to C and D; they play it once
    A's signature verified. Everyone still hears everyone. (§15.3: a sender fans out only through a member whose
    LINKS lists at least two of its other peers, hence four.)"""
    invite = new_invite(rendezvous.url)
    common = [*LOOPBACK, "--expect-peers", "3", "--audio-seconds", "6", "--timeout", "60",
              "--record-dir", str(tmp_path / "rec")]
    tones = {"a": 440, "b": 550, "c": 660, "d": 770}
    peers = {name: python_peer(tmp_path, name, invite, "--tone", str(tone), *common,
                               *(["--fan-out-through", "b"] if name == "a" else []))
             for name, tone in tones.items()}
    try:
        for process in peers.values():
            assert process.wait(90) == 0, process.diagnostics()
    finally:
        for process in peers.values():
            process.stop()
    statuses = {name: read_status(tmp_path, name) for name in tones}
    a, b = statuses["a"], statuses["b"]
    assert all(link["version"] == 4 for status in statuses.values() for link in status["links"])
    assert a["fan_outs_sent"] >= 250, a
    # Each frame B passed on went to both others but at the edges: a frame while one of its links had no keys
    # yet, or after C or D had left (a clean clone's run sent 743 for 372 frames). What C and D got is below.
    passed_on = b["fan_outs_passed_on"]
    assert passed_on >= 250 and 2 * passed_on - 25 <= b["fan_delivers_sent"] <= 2 * passed_on, b
    assert b["fanning_out_for"] in ([], [a["identity"][:16]]) and b["fan_out_refusals_sent"] == 0
    for name in "cd":
        status = statuses[name]
        link = next(link for link in status["links"] if link["peer"] == a["identity"])
        assert link["media_fanned_in"] >= 250, link
        assert status["fan_out_auth_failures"] == 0 and status["fan_out_dropped"] == {}, status["fan_out_dropped"]
        assert link["peer_media_received"] > 0  # A's REPORTs: what A sends counts, through B or not
        assert link["state"] == "up"  # §10.3: only A's REPORTs come over the link, judged by the 2 s rule
    for listener, status in statuses.items():  # each recording of a peer holds its tone and no other
        for name, tone in tones.items():
            if name != listener:
                assert_hears_tones(status["received"][statuses[name]["identity"]]["wav"], [tone],
                                   [t for t in tones.values() if t != tone])
