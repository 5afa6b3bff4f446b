"""Parley as people run it: as an ordinary user. Every program here runs as uid 65534 ("nobody")
through setpriv(1), the way the packaged rendezvous service and a user's parleyd run. Tests that run
as root cannot see an operation that needs privileges: the rendezvous once set SO_DEBUG (meaning
TCP_NODELAY, at the wrong socket level), which only root may, so it dropped every connection of a
non-root server and a non-root node could not connect at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from audio_checks import assert_hears_tones
from harness import SwiftNode, executable, new_invite, require, start_rendezvous, wait_until

NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


@pytest.fixture
def home():
    """A directory of nobody's in /tmp, with copies of the programs: the build directory may sit
    where nobody cannot reach it (CI clones into a 0700 directory)."""
    require(os.geteuid() == 0, "running programs as another user needs root")
    directory = Path(tempfile.mkdtemp(prefix="parley-unprivileged-", dir="/tmp"))
    try:
        programs = directory / "bin"
        programs.mkdir()
        for name in ("parley-rendezvous", "parleyd", "parley"):
            shutil.copy2(executable(name), programs / name)
        for path in [directory, programs, *programs.iterdir()]:
            os.chown(path, NOBODY, NOBODY)
            os.chmod(path, 0o700)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_a_meeting_of_ordinary_users(home, monkeypatch):
    monkeypatch.setenv("PARLEY_BIN", str(home / "bin"))
    rendezvous = start_rendezvous(home, prefix=AS_NOBODY)
    nodes = []
    try:
        invite = new_invite(rendezvous.url)
        nodes = [SwiftNode(home, "alice", invite, "tone:440", "--local-address", "127.0.0.1", prefix=AS_NOBODY),
                 SwiftNode(home, "bob", invite, "tone:660", "--local-address", "127.0.0.1", prefix=AS_NOBODY)]
        for node in nodes:
            node.wait_for_peers_up(1, timeout=30)
        # Three seconds of each other's audio (50 packets a second) before the WAVs are judged.
        for node in nodes:
            wait_until(lambda: all(p["packets_rx"] >= 150 for p in node.status()["peers"]), 20,
                       f"{node.name} to receive 3 s of audio")
    finally:
        for node in nodes:
            node.stop()
        rendezvous.process.stop()
    assert_hears_tones(str(nodes[0].wav), [660], [440])
    assert_hears_tones(str(nodes[1].wav), [440], [660])
