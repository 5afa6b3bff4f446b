"""FFT checks on recorded audio, shared by the interop tests."""

from parley_peer.audio import read_wav, rms_dbfs, tone_share

SKIP_SECONDS = 0.2  # the decoder's first frames ramp up


def active(pcm, rate: int, threshold_dbfs: float = -45.0):
    """The 20 ms blocks louder than the threshold, joined: a recording before a call starts and after it
    ends is silent, and only the call is judged."""
    import numpy

    block = rate // 50
    blocks = [pcm[i : i + block] for i in range(0, len(pcm) - block + 1, block)]
    loud = [b for b in blocks if rms_dbfs(b) > threshold_dbfs]
    return numpy.concatenate(loud) if loud else pcm[:0]


def assert_hears_tones(path: str, present: list[float], absent: list[float], minimum_seconds: float = 2.0,
                       share: float = 0.5) -> None:
    """Each frequency in `present` carries at least share/len(present) of the energy; each in `absent` < 2 %."""
    pcm, rate = read_wav(path)
    pcm = active(pcm[int(SKIP_SECONDS * rate):], rate)
    assert len(pcm) >= minimum_seconds * rate, f"{path}: only {len(pcm) / rate:.2f} s of sound"
    for frequency in present:
        value = tone_share(pcm, rate, frequency)
        assert value >= share / len(present), f"{path}: {frequency} Hz has only {value:.1%} of the energy"
    for frequency in absent:
        value = tone_share(pcm, rate, frequency)
        assert value < 0.02, f"{path}: {frequency} Hz should be absent but has {value:.1%}"


def meeting_codes(status: dict, members: int) -> set[str]:
    """Every security code a Python peer agreed on (§11.1) while `members` members (itself included) had
    sessions: one per round of the agreement, and a view can go through several (a rekey, a member whose
    session came up a moment later), so a code read from parleyd at one moment is one of these."""
    codes = {entry["code"] for entry in status["security_codes"] if len(entry["members"]) == members}
    assert codes, f"{status['name']} never had a code for {members} members: {status['security_codes']}"
    return codes


def assert_ogg_decodes(ogg_path: str, tone: float, work_dir) -> None:
    """opus-tools (not our code) reads the Ogg Opus file: opusinfo finds no problem, opusdec decodes it, and the
    decoded audio carries the tone."""
    import shutil
    import subprocess
    from pathlib import Path

    assert shutil.which("opusdec"), "opus-tools is not installed (Scripts/bootstrap)"
    info = subprocess.run(["opusinfo", ogg_path], capture_output=True, text=True, timeout=30)
    assert info.returncode == 0 and "WARNING" not in info.stdout + info.stderr, info.stdout + info.stderr
    decoded = str(Path(work_dir) / (Path(ogg_path).stem + ".opusdec.wav"))
    result = subprocess.run(["opusdec", "--quiet", "--rate", "48000", ogg_path, decoded], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert_hears_tones(decoded, [tone], [], minimum_seconds=1.0)
