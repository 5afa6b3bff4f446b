"""Relay-only calls through a real coturn with credentials the rendezvous mints (`--turn-secret`, TURN REST
API, §4.6): the peers offer only relayed candidates, so every packet goes through coturn."""

import os

from audio_checks import assert_hears_tones
from harness import new_invite, python_peer, read_status, start_coturn, start_rendezvous


def test_python_peers_relay_only_through_coturn(tmp_path):
    secret = os.urandom(16).hex()
    coturn = start_coturn(tmp_path, secret)
    rendezvous = start_rendezvous(tmp_path, "--turn-secret", secret,
                                  "--turn-url", f"turn:127.0.0.1:{coturn.port}?transport=udp")
    peers = []
    try:
        invite = new_invite(rendezvous.url)
        common = ["--host-address", "127.0.0.1", "--relay-only", "--expect-peers", "1", "--audio-seconds", "3",
                  "--timeout", "40", "--record-dir", str(tmp_path / "rec")]
        peers = [python_peer(tmp_path, "a", invite, "--tone", "500", *common),
                 python_peer(tmp_path, "b", invite, "--tone", "900", *common)]
        for peer in peers:
            assert peer.wait(60) == 0, peer.diagnostics()
    finally:
        for process in [*peers, rendezvous.process, coturn.process]:
            process.stop()
    a, b = read_status(tmp_path, "a"), read_status(tmp_path, "b")
    for status in (a, b):
        (link,) = status["links"]
        assert link["selected_pair"] == "relay->relay", link
    # coturn admitted the minted REST credentials: successful allocations, and channel or send traffic.
    log = (tmp_path / "turnserver.log").read_text()
    assert "ALLOCATE processed, success" in log, log[-3000:]
    assert_hears_tones(b["received"][a["identity"]]["wav"], [500], [900])
    assert_hears_tones(a["received"][b["identity"]]["wav"], [900], [500])
