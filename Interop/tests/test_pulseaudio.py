"""PulseAudio end to end: node A captures from a null sink's monitor where espeak-ng speech is played (as a
microphone would hear it), node B plays to another null sink, whose monitor we record; the recording must
be the speech; and a quiet room heard through the same path is a DTX pause. Needs the private server of
Scripts/with-pulseaudio (Scripts/test provides it)."""

import os
import shutil
import subprocess
import time
import wave

import numpy
from parley_peer.audio import write_wav

from harness import Process, SwiftNode, new_invite, require, wait_until
import test_swift_nodes
from test_swift_nodes import LOOPBACK

pytestmark = test_swift_nodes.pytestmark  # skipped while parleyd is the stub

SPEECH = "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background."


def envelope(samples: numpy.ndarray, rate: int) -> numpy.ndarray:
    block = rate // 50
    usable = samples[: len(samples) - len(samples) % block].astype(numpy.float64)
    return numpy.sqrt((usable.reshape(-1, block) ** 2).mean(axis=1))


def speech_ended(path) -> bool:
    data = path.read_bytes()
    samples = numpy.frombuffer(data[: len(data) - len(data) % 2], dtype="<i2")
    loud = envelope(samples, 48000) > 10 ** (-40 / 20) * 32768
    if not loud.any():
        return False
    quiet_blocks = len(loud) - 1 - int(numpy.flatnonzero(loud)[-1])
    return quiet_blocks >= 25  # 500 ms of 20 ms blocks


def read(path) -> tuple[numpy.ndarray, int]:
    with wave.open(str(path), "rb") as f:
        return numpy.frombuffer(f.readframes(f.getnframes()), dtype="<i2"), f.getframerate()


def test_speech_through_pulseaudio(tmp_path, rendezvous):
    require(bool(os.environ.get("PULSE_SERVER")), "no PulseAudio server (run under Scripts/with-pulseaudio)")
    require(shutil.which("espeak-ng") is not None and shutil.which("parecord") is not None,
            "espeak-ng and pulseaudio-utils are needed (Scripts/bootstrap)")
    mic, speaker = os.environ["PARLEY_PULSE_MIC"], os.environ["PARLEY_PULSE_SPEAKER"]
    speech = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en+f3", "-s", "150", "-w", str(speech), SPEECH], check=True)
    invite = new_invite(rendezvous.url)
    talker = SwiftNode(tmp_path, "talker", invite, f"pulse:{mic}.monitor", *LOOPBACK)
    listener = SwiftNode(tmp_path, "listener", invite, "silence", *LOOPBACK, audio_out=f"pulse:{speaker}")
    recorder = None
    try:
        talker.wait_for_peers_up(1)
        listener.wait_for_peers_up(1)
        # parec: raw 16-bit mono 48 kHz on stdout (the Process' .out file), readable while it grows.
        recorder = Process(["parec", "-d", f"{speaker}.monitor", "--channels=1", "--rate=48000",
                            "--format=s16le"], tmp_path, "heard")
        wait_until(lambda: recorder.stdout_path.stat().st_size >= 9600, 10, "parec to record")  # 100 ms in
        subprocess.run(["paplay", "-d", mic, str(speech)], check=True, timeout=60)
        # Done when the speech has arrived and the listener's speaker has been quiet for half a second since.
        wait_until(lambda: speech_ended(recorder.stdout_path), 10, "the end of the speech at the listener")
    finally:
        if recorder:
            recorder.stop()
        talker.stop()
        listener.stop()
    original, original_rate = read(speech)
    data = recorder.stdout_path.read_bytes()
    heard, rate = numpy.frombuffer(data[: len(data) - len(data) % 2], dtype="<i2"), 48000
    spoken, received = envelope(original, original_rate), envelope(heard, rate)
    assert received.max() > 10 ** (-35 / 20) * 32768, "the listener's speaker stayed silent"
    # The speech's loudness contour reappears in the recording, shifted by the call's delay.
    a = (spoken - spoken.mean()) / spoken.std()
    b = (received - received.mean()) / received.std()
    correlations = [float(numpy.dot(a, b[lag : lag + len(a)])) / len(a) for lag in range(0, len(b) - len(a))]
    best = max(range(len(correlations)), key=correlations.__getitem__)
    assert correlations[best] > 0.6, f"recording does not follow the speech (correlation {correlations[best]:.2f})"
    assert best * 20 < 2000, f"the speech arrived {best * 20} ms late"


def packets_sent(node: SwiftNode) -> int:
    status = node.status()
    return sum(peer["packets_tx"] for peer in status["peers"]) if status else 0


def packet_rate(node: SwiftNode, seconds: float = 1.0) -> float:
    """Packets per second the node sends to all its peers, over the next `seconds`."""
    before = packets_sent(node)
    time.sleep(seconds)  # a measurement window, not a wait for an event
    return (packets_sent(node) - before) / seconds


def test_a_quiet_room_through_pulseaudio_is_a_dtx_pause(tmp_path, rendezvous):
    """A microphone in a quiet room hears a noise floor, not digital silence. Through the real capture path
    (PulseAudio, then parleyd's noise suppression) that floor must fall below the DTX level, so a listening
    participant sends only REPORTs (PROTOCOL §9.3) — and its first word goes out at once."""
    require(bool(os.environ.get("PULSE_SERVER")), "no PulseAudio server (run under Scripts/with-pulseaudio)")
    require(shutil.which("espeak-ng") is not None and shutil.which("paplay") is not None,
            "espeak-ng and pulseaudio-utils are needed (Scripts/bootstrap)")
    mic = os.environ["PARLEY_PULSE_MIC"]
    # 30 s of white noise at -45 dBFS RMS: above the -50 dBFS DTX level as captured.
    noise = tmp_path / "room.wav"
    samples = numpy.random.default_rng(1).normal(0, 10 ** (-45 / 20) * 32767, 48000 * 30)
    write_wav(str(noise), numpy.clip(samples, -32768, 32767))
    speech = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en+f3", "-s", "150", "-w", str(speech), SPEECH], check=True)
    room = Process(["paplay", "-d", mic, str(noise)], tmp_path, "room")
    invite = new_invite(rendezvous.url)
    talker = SwiftNode(tmp_path, "talker", invite, f"pulse:{mic}.monitor", *LOOPBACK)
    listener = SwiftNode(tmp_path, "listener", invite, "silence", *LOOPBACK)
    try:
        talker.wait_for_peers_up(1)
        listener.wait_for_peers_up(1)
        # Sending a frame every 20 ms is 50 packets a second; a pause is REPORTs only (4 a second).
        wait_until(lambda: packet_rate(talker) <= 10, 15, "the talker to pause in the quiet room")
        assert talker.status()["peers"][0]["state"] == "up", "the link went down in the pause"
        speaker = Process(["paplay", "-d", mic, str(speech)], tmp_path, "speaker")
        try:
            wait_until(lambda: packet_rate(talker, 0.5) >= 30, 5, "the talker's first word to be sent")
        finally:
            speaker.stop()
    finally:
        room.stop()
        talker.stop()
        listener.stop()
