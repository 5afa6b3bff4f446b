#!/usr/bin/env python3
"""Scores degraded WAV files against a reference with PESQ-WB (ITU-T P.862.2, 16 kHz).

usage: pesq-score.py REFERENCE.wav DEGRADED.wav...   prints "name  MOS-LQO" per file
"""
import sys
import wave

import numpy as np
from pesq import pesq


def read(path):
    with wave.open(path, "rb") as f:
        if f.getsampwidth() != 2 or f.getnchannels() != 1 or f.getframerate() != 16000:
            sys.exit(f"{path}: need 16-bit mono 16 kHz")
        return np.frombuffer(f.readframes(f.getnframes()), dtype=np.int16).astype(np.float32) / 32768


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    reference = read(sys.argv[1])
    for path in sys.argv[2:]:
        degraded = read(path)
        score = pesq(16000, reference, degraded[: len(reference) + 16000], "wb")
        print(f"{path.rsplit('/', 1)[-1]:<16} {score:.2f}")


if __name__ == "__main__":
    main()
