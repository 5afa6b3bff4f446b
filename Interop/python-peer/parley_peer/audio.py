"""Audio for the Python peer: sources (tone, WAV), the Opus encoder, a receive log per peer that is decoded
after the call (§9.2: copies, in-band FEC, concealment), WAV/Ogg writers and FFT checks."""

from __future__ import annotations

import math
import struct
import wave
import zlib
from dataclasses import dataclass, field

import numpy
import opuslib
import opuslib.api.ctl
import opuslib.api.encoder

RATE = 48000


class ToneSource:
    """A sine tone with continuous phase."""

    def __init__(self, frequency: float, amplitude: float = 0.3):
        self.frequency = frequency
        self.amplitude = amplitude
        self.position = 0

    def read(self, samples: int) -> bytes:
        t = (numpy.arange(samples) + self.position) / RATE
        self.position += samples
        pcm = numpy.round(self.amplitude * 32767 * numpy.sin(2 * math.pi * self.frequency * t))
        return pcm.astype("<i2").tobytes()


class WavSource:
    """16-bit mono 48 kHz WAV; silence after its end."""

    def __init__(self, path: str):
        with wave.open(path, "rb") as f:
            if f.getsampwidth() != 2 or f.getnchannels() != 1 or f.getframerate() != RATE:
                raise ValueError(f"{path}: need 16-bit mono 48 kHz WAV")
            self.data = f.readframes(f.getnframes())
        self.position = 0

    def read(self, samples: int) -> bytes:
        chunk = self.data[self.position * 2 : (self.position + samples) * 2]
        self.position += samples
        return chunk + bytes(samples * 2 - len(chunk))


class SilenceSource:
    def read(self, samples: int) -> bytes:
        return bytes(samples * 2)


def make_encoder(bitrate: int = 32000) -> opuslib.Encoder:
    encoder = opuslib.Encoder(RATE, 1, opuslib.APPLICATION_VOIP)
    encoder.bitrate = bitrate
    # opuslib 3.0.1's `inband_fec` setter drops its value (a bug), so call the ctl directly.
    opuslib.api.encoder.encoder_ctl(encoder.encoder_state, opuslib.api.ctl.set_inband_fec, 1)
    return encoder


@dataclass
class Arrival:
    opus: bytes
    duration: int
    timestamp: int
    arrived: float  # wall clock (time.time()) when the payload carrying it arrived
    redundant: bool


@dataclass
class ReceiveLog:
    """Every frame received from one peer, keyed by extended sequence number (§9.2)."""

    frames: dict[int, Arrival] = field(default_factory=dict)
    packets: int = 0
    duplicates: int = 0
    recovered_by_copies: int = 0
    highest: int | None = None  # extended sequence
    first: int | None = None

    def extend(self, sequence: int) -> int:
        """Map a 16-bit sequence to the extended sequence nearest the highest seen (RFC 3550 A.1 style)."""
        if self.highest is None:
            return sequence
        base = self.highest - (self.highest % 65536)
        candidates = (base - 65536 + sequence, base + sequence, base + 65536 + sequence)
        return min(candidates, key=lambda c: abs(c - self.highest))

    def add(self, sequence: int, timestamp: int, duration: int, opus: bytes, arrived: float, redundant: bool) -> bool:
        extended = self.extend(sequence)
        if extended in self.frames:
            if not redundant:
                self.duplicates += 1
            return False
        if redundant:
            self.recovered_by_copies += 1
        self.frames[extended] = Arrival(opus, duration, timestamp, arrived, redundant)
        if self.highest is None or extended > self.highest:
            self.highest = extended
        if self.first is None or extended < self.first:
            self.first = extended
        return True

    def holds_primary(self, sequence: int) -> bool:
        """Whether the frame `sequence` already arrived as a primary: with fan-out (§15.3) the same payload can
        come both directly and through a member, and it is played (and counted) once."""
        held = self.frames.get(self.extend(sequence))
        return held is not None and not held.redundant

    @property
    def primaries_received(self) -> int:
        return sum(1 for a in self.frames.values() if not a.redundant)

    def decode(self) -> tuple[numpy.ndarray, dict]:
        """Decode in sequence order: a frame held (primary or copy) decodes normally; a missing one from the
        next frame's in-band FEC if that is held, else by concealment; a timestamp jump with consecutive
        sequence numbers is a DTX pause (silence)."""
        if self.first is None:
            return numpy.zeros(0, dtype=numpy.int16), {"decoded": 0, "fec": 0, "concealed": 0}
        decoder = opuslib.Decoder(RATE, 1)
        out: list[bytes] = []
        counts = {"decoded": 0, "fec": 0, "concealed": 0}
        previous: Arrival | None = None
        for sequence in range(self.first, self.highest + 1):
            frame = self.frames.get(sequence)
            if frame is not None:
                if previous is not None:
                    gap = (frame.timestamp - previous.timestamp - previous.duration) % 2**32
                    if 0 < gap < RATE * 10 and sequence - 1 in self.frames:
                        out.append(bytes(gap * 2))  # DTX pause
                out.append(decoder.decode(frame.opus, frame.duration))
                counts["decoded"] += 1
                previous = frame
                continue
            following = self.frames.get(sequence + 1)
            duration = previous.duration if previous else (following.duration if following else 960)
            if following is not None:
                out.append(decoder.decode(following.opus, duration, decode_fec=True))
                counts["fec"] += 1
            else:
                out.append(decoder.decode(b"", duration))
                counts["concealed"] += 1
            if previous is not None:
                previous = Arrival(b"", duration, (previous.timestamp + previous.duration) % 2**32, 0.0, True)
        pcm = numpy.frombuffer(b"".join(out), dtype="<i2")
        return pcm, counts

    def first_arrival(self) -> float | None:
        return min((a.arrived for a in self.frames.values()), default=None)


def write_wav(path: str, pcm: numpy.ndarray, rate: int = RATE) -> None:
    with wave.open(path, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.astype("<i2").tobytes())


def read_wav(path: str) -> tuple[numpy.ndarray, int]:
    with wave.open(path, "rb") as f:
        data = numpy.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
        if f.getnchannels() > 1:
            data = data.reshape(-1, f.getnchannels())[:, 0]
        return data, f.getframerate()


def tone_share(pcm: numpy.ndarray, rate: int, frequency: float, width: float = 25.0) -> float:
    """Share of the signal's spectral energy within ±width Hz of frequency (0 for silence)."""
    if len(pcm) < rate // 10:
        return 0.0
    samples = pcm.astype(numpy.float64) * numpy.hanning(len(pcm))
    power = numpy.abs(numpy.fft.rfft(samples)) ** 2
    frequencies = numpy.fft.rfftfreq(len(samples), 1 / rate)
    total = power[frequencies > 20].sum()
    if total <= 0:
        return 0.0
    return float(power[numpy.abs(frequencies - frequency) <= width].sum() / total)


def rms_dbfs(pcm: numpy.ndarray) -> float:
    if len(pcm) == 0:
        return -math.inf
    rms = math.sqrt(float(numpy.mean(pcm.astype(numpy.float64) ** 2)))
    return 20 * math.log10(rms / 32768) if rms > 0 else -math.inf


# MARK: Ogg Opus (RFC 7845 on RFC 3533 pages)

_OGG_CRC_TABLE = []
for _i in range(256):
    _r = _i << 24
    for _ in range(8):
        _r = ((_r << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if _r & 0x80000000 else (_r << 1) & 0xFFFFFFFF
    _OGG_CRC_TABLE.append(_r)


def ogg_crc(data: bytes) -> int:
    """Ogg's CRC-32: polynomial 0x04C11DB7, not reflected, initial value 0 (RFC 3533 §6)."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC_TABLE[((crc >> 24) ^ byte) & 0xFF]
    return crc


class OggOpusWriter:
    """Writes one Opus packet per Ogg page; granule positions count 48 kHz samples after pre-skip."""

    PRE_SKIP = 312  # libopus' encoder lookahead at 48 kHz (RFC 7845 §4.2 leaves it to the encoder)

    def __init__(self, path: str, serial: int = 0x5041524C):
        self.file = open(path, "wb")
        self.serial = serial
        self.sequence = 0
        self.granule = 0  # granule positions count decoded samples, pre-skip included (RFC 7845 §4)
        head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, self.PRE_SKIP, RATE, 0, 0)
        self._page(head, granule=0, flags=0x02)
        vendor = b"parley python peer"
        self._page(b"OpusTags" + struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", 0), granule=0)

    def _page(self, packet: bytes, granule: int, flags: int = 0) -> None:
        lacing = [255] * (len(packet) // 255) + [len(packet) % 255]
        header = b"OggS" + struct.pack("<BBqIII", 0, flags, granule, self.serial, self.sequence, 0)
        header += bytes([len(lacing)]) + bytes(lacing)
        page = bytearray(header + packet)
        struct.pack_into("<I", page, 22, ogg_crc(bytes(page)))
        self.file.write(page)
        self.sequence += 1

    def write(self, packet: bytes, samples: int, last: bool = False) -> None:
        self.granule += samples
        self._page(packet, self.granule, 0x04 if last else 0)

    def close(self) -> None:
        self.file.close()


def write_ogg(path: str, log: ReceiveLog) -> int:
    """The frames held from one peer, in sequence order, as an Ogg Opus file; returns the packet count."""
    sequences = sorted(log.frames)
    writer = OggOpusWriter(path, serial=zlib.crc32(path.encode()))
    for i, sequence in enumerate(sequences):
        frame = log.frames[sequence]
        writer.write(frame.opus, frame.duration, last=i == len(sequences) - 1)
    writer.close()
    return len(sequences)
