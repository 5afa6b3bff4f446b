"""Relaying through a member (docs/PROTOCOL.md §13, version 2) between the Python peer and `parleyd`, with real
processes on loopback. Each node has its own loopback address, and iptables drops UDP between two of them, so
that pair has no direct path: ICE cannot connect it, and everything the two send each other (the Noise
handshake, media, session control) goes through the third member, end to end.

- The Python peer relays for two Swift nodes: each hears the other's tone, and `parley status --json` shows the
  link as route "peer" via the Python peer's id.
- A Swift node relays for the Python peer and a Swift node, with the Python peer as the pair's lead (it
  initiates the handshake through the relay) and as the follower (it answers through the relay), and for a
  pair whose direct path is cut mid-call and later works again (both go back to it).
- A Python relay limited to one pair refuses a second pair with RELAY_REFUSED (busy), which parleyd obeys.

The relayed pair's tones can only have come through the relay while the direct path is dropped.
"""

import os
import shutil
import subprocess
from contextlib import ExitStack, contextmanager

import pytest

from audio_checks import assert_hears_tones
from harness import SwiftNode, new_invite, python_peer, read_status, require, wait_until

pytestmark = pytest.mark.root

FRAMES = 250  # 5 s of 20 ms frames through the relay, each way


@contextmanager
def udp_blocked(a: str, b: str):
    """Drops UDP between loopback addresses a and b (both ways) until the block ends."""
    require(os.geteuid() == 0 and shutil.which("iptables") is not None, "iptables as root is not available")
    rules = [["INPUT", "-p", "udp", "-s", a, "-d", b, "-j", "DROP"],
             ["INPUT", "-p", "udp", "-s", b, "-d", a, "-j", "DROP"]]
    added = []
    try:
        for rule in rules:
            subprocess.run(["iptables", "-I", *rule], check=True, capture_output=True)
            added.append(rule)
        yield
    finally:
        for rule in added:
            subprocess.run(["iptables", "-D", *rule], check=False, capture_output=True)


def peer_entry(node: SwiftNode, name: str) -> dict | None:
    status = node.status()
    return next((p for p in status["peers"] if p["name"] == name), None) if status else None


def wait_relayed(node: SwiftNode, name: str, via: str, timeout: float = 45.0) -> dict:
    """`parley status --json` on `node` shows the link to `name` up through member `via`. (Its packet and rate
    counters count the link's own ICE path, which carries nothing while relayed: the relay's counts and the
    recordings are what show the media.)"""
    def relayed():
        entry = peer_entry(node, name)
        if entry and entry["state"] == "up" and entry["route"] == "peer" and entry["via"] == via:
            return entry
        return None

    try:
        return wait_until(relayed, timeout, f"{node.name} to hear {name} through {via}", interval=0.2)
    except AssertionError as error:
        raise AssertionError(f"{error}; last view: {peer_entry(node, name)}") from None


def test_python_peer_relays_for_two_swift_nodes(tmp_path, rendezvous):
    a, b, c = "127.0.14.1", "127.0.14.2", "127.0.14.3"
    invite = new_invite(rendezvous.url)
    with udp_blocked(a, c):
        first = SwiftNode(tmp_path, "swiftA", invite, "tone:440", "--local-address", a)
        third = SwiftNode(tmp_path, "swiftC", invite, "tone:660", "--local-address", c)
        # The relay is silent, so what the two Swift nodes record of each other is the other's tone alone.
        relay = python_peer(tmp_path, "relay", invite, "--silence", "--host-address", b, "--timeout", "120")
        try:
            relay_id = wait_until(lambda: (tmp_path / "relay.json").exists() and read_status(tmp_path, "relay"),
                                  20, "the relay's status")["identity"][:16]
            wait_relayed(first, "swiftC", relay_id)
            wait_relayed(third, "swiftA", relay_id)

            def carried():  # datagrams of the pair the relay carried, both ways: FRAMES of media each way
                counts = read_status(tmp_path, "relay")["relayed_datagrams"]
                return counts if sum(counts.values()) >= 2 * FRAMES else None

            wait_until(carried, 30, "the relay to carry the pair's media")
        finally:
            relay.stop()
            first.stop()
            third.stop()
        relay_view = read_status(tmp_path, "relay")
    assert_hears_tones(str(first.wav), [660], [440])
    assert_hears_tones(str(third.wav), [440], [660])
    # The relay carried exactly one pair, A and C, and its own links were direct links of version 2 or later.
    links = {link["name"]: link for link in relay_view["links"]}
    pair = "-".join(sorted(links[name]["peer"][:16] for name in ("swiftA", "swiftC")))
    assert list(relay_view["relayed_datagrams"]) == [pair], relay_view["relayed_datagrams"]
    assert all(link["version"] >= 2 and link["via"] is None for link in links.values()), links


@pytest.mark.parametrize("role,cut", [("lead", "at start"), ("follower", "at start"), ("lead", "mid-call"),
                                      ("lead", "mid-call, no rendezvous")])
def test_swift_node_relays_for_the_python_peer(tmp_path, rendezvous, role, cut):
    """`cut` "at start": the pair never has a direct path, and its handshake goes through the relay. "mid-call":
    the pair talks directly first, then its path is dropped; both ends notice the silence and go through
    the relay with the keys they have, and go back to the direct path once it works again. "mid-call, no
    rendezvous": the same after the rendezvous stopped, so the ICE restart that finds the direct path again is
    signaled over the mesh (§13.5: the envelopes travel inside the pair's session, through the relay)."""
    p, b, c = "127.0.15.1", "127.0.15.2", "127.0.15.3"
    invite = new_invite(rendezvous.url)
    with ExitStack() as block:
        if cut == "at start":
            block.enter_context(udp_blocked(p, c))
        middle = SwiftNode(tmp_path, "swiftB", invite, "silence", "--local-address", b)
        far = SwiftNode(tmp_path, "swiftC", invite, "tone:660", "--local-address", c)
        peer = python_peer(tmp_path, "python", invite, "--role", role, "--tone", "880", "--host-address", p,
                           "--record-dir", str(tmp_path / "rec"), "--timeout", "120")

        def far_link(route: str, frames: int):
            """The Python peer's link to swiftC goes by `route`, and `frames` more frames went each way (ours
            as swiftC's REPORTs count them)."""
            status = read_status(tmp_path, "python") if (tmp_path / "python.json").exists() else {"links": []}
            link = next((link for link in status["links"] if link["name"] == "swiftC"), None)
            return link if link and link["route"] == route and link["frames_received"] >= frames \
                and link["peer_media_received"] >= frames else None

        try:
            middle_id = wait_until(lambda: middle.status(), 20, "swiftB's status")["self"]["id"]
            before = {"frames_received": 0, "peer_media_received": 0}
            if cut.startswith("mid-call"):
                before = wait_until(lambda: far_link("direct", 50), 30, "the Python peer and swiftC to talk directly")
                if cut == "mid-call, no rendezvous":
                    rendezvous.process.stop()
                    wait_until(lambda: not read_status(tmp_path, "python")["rendezvous_connected"]
                               and far.status()["self"]["rendezvous"] != "connected", 20, "both to lose the rendezvous")
                block.enter_context(udp_blocked(p, c))
            peer_id = wait_until(lambda: (tmp_path / "python.json").exists() and read_status(tmp_path, "python"),
                                 20, "the Python peer's status")["identity"][:16]
            wait_relayed(far, "python", middle_id)
            frames = max(before["frames_received"], before["peer_media_received"]) + FRAMES
            link = wait_until(lambda: far_link("peer", frames), 30,
                              "the Python peer and swiftC to hear each other through swiftB")
            relaying = middle.status()["self"]
            far_id = far.status()["self"]["id"]
            if cut.startswith("mid-call"):
                # §13.4 "Going back": the path works again; the Python peer (the lead) tries it with an ICE
                # restart on its schedule, and both ends go back to it.
                block.close()
                back = wait_until(lambda: far_link("direct", link["frames_received"] + 100), 60,
                                  "the Python peer to go back to the direct path")
                far_view = wait_until(lambda: (e := peer_entry(far, "python")) and e["route"] != "peer" and e,
                                      20, "swiftC to go back to the direct path")
        finally:
            peer.stop()
            middle.stop()
            far.stop()
    assert link["via"] == middle_id and link["version"] >= 2 and link["lead"] == (role == "lead"), link
    assert link["datagrams_via"].get(middle_id, 0) >= FRAMES and link["handshakes"] >= 1, link
    if cut == "at start":  # the pair's only handshake went through swiftB
        assert link["initiations_sent" if role == "lead" else "responses_sent"] >= 1, link
    assert relaying["relaying"] == [sorted([peer_id, far_id])], relaying
    if cut.startswith("mid-call"):
        assert back["via"] is None, back
    mesh = read_status(tmp_path, "python")
    if cut == "mid-call, no rendezvous":  # the restart's envelopes went over the mesh, both ways
        assert mesh["mesh_envelopes_sent"] >= 2 and mesh["mesh_envelopes_received"] >= 2, mesh
        assert far_view["via"] is None and far_view["state"] == "up", far_view
    assert_hears_tones(str(far.wav), [880], [660])
    status = read_status(tmp_path, "python")
    by_name = {entry["name"]: entry for entry in status["received"].values()}
    assert_hears_tones(by_name["swiftC"]["wav"], [660], [880])


def test_a_busy_python_relay_refuses_a_second_pair(tmp_path, rendezvous):
    """The Python peer relays one pair at most (--relay-pairs 1); A has no direct path to C nor to D. It carries
    the first of the two pairs that asks and answers the other with RELAY_REFUSED (busy), which parleyd reads:
    it logs the refusal and does not route that pair through the Python peer. The refusal goes to whichever end of
    the pair sent through the relay, and only the handshake's initiator sends before the session is up, so it may
    be swiftA or the other end that hears it (the end that heard nothing gives the relay up after its trial)."""
    a, b, c, d = "127.0.16.1", "127.0.16.2", "127.0.16.3", "127.0.16.4"
    invite = new_invite(rendezvous.url)
    with udp_blocked(a, c), udp_blocked(a, d):
        first = SwiftNode(tmp_path, "swiftA", invite, "tone:440", "--local-address", a)
        # C and D relay for nobody, so the Python peer is the only member that could carry A's pairs.
        others = [SwiftNode(tmp_path, name, invite, "silence", "--local-address", address, "--relay-pairs", "0")
                  for name, address in (("swiftC", c), ("swiftD", d))]
        relay = python_peer(tmp_path, "relay", invite, "--silence", "--host-address", b, "--relay-pairs", "1",
                            "--timeout", "120")
        try:
            relay_id = wait_until(lambda: (tmp_path / "relay.json").exists() and read_status(tmp_path, "relay"),
                                  20, "the relay's status")["identity"][:16]

            busy = f"member={relay_id} reason=busy"

            def refused_and_relayed():  # the refusal logged, then one pair through the relay and the other not
                if not any(busy in node.process.stderr() for node in [first, *others]):
                    return None
                status = first.status()
                views = {p["name"]: p for p in status["peers"] if p["name"] in ("swiftC", "swiftD")} if status else {}
                carried = [v for v in views.values() if v["state"] == "up" and v["via"] == relay_id]
                refused = [v for v in views.values() if v["state"] != "up" and v["via"] != relay_id]
                return (carried[0], views) if len(carried) == len(refused) == 1 else None

            carried, views = wait_until(refused_and_relayed, 45, "one pair refused, the other relayed")
            # The relay rewrites its status file periodically: a node can log the refusal before the file shows it.
            relay_view = wait_until(lambda: (view := read_status(tmp_path, "relay"))["relay_refusals_sent"] >= 1 and view,
                                    5, "the relay's status to count the refusal it sent")
        finally:
            relay.stop()
            first.stop()
            for node in others:
                node.stop()
    refused_name = next(name for name, view in views.items() if view is not carried)
    refused_node = next(node for node in others if node.name == refused_name)
    assert any(busy in node.process.stderr() for node in (first, refused_node)), views
    assert len(relay_view["relayed_datagrams"]) == 1, relay_view
