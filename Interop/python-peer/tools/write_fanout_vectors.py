"""Writes Tests/Fixtures/protocol-v4-fanout.json: signed frames (§15.1) and FAN_DELIVER relay bodies (relay kind 5,
§15.2) from fixed inputs, frames a receiver must drop, and a replay sequence. Ed25519 is deterministic, so every
value is fixed. Made by the independent Python implementation (parley_peer.fanout); its tests/test_vectors.py
recomputes the file, and the Swift tests are to check the same file.

    .venv/bin/python Interop/python-peer/tools/write_fanout_vectors.py
"""

import json
import sys
from collections import Counter
from pathlib import Path

PEER = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PEER))

from parley_peer import fanout  # noqa: E402
from parley_peer.identity import Identity  # noqa: E402
from parley_peer.relay import FAN_DELIVER, RelayPacket  # noqa: E402
from parley_peer.replay import ReplayWindow  # noqa: E402

FIXTURES = PEER.parents[1] / "Tests" / "Fixtures"
h = bytes.fromhex

# The inputs: the identities of protocol-v1-identity.json (alice, bob) and the room of protocol-v1-keys.json.
ALICE_SEED = h("404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f")
BOB_SEED = h("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
ROOM_ID = h("137818d4c45436ac28368d6b33c4adf3c6fb966f91208937756ef36fb2f07c18")
EPOCH = 0x0102030405060708  # the session epoch of protocol-v1-envelope.json's HELLO
BIG_EPOCH = 0xFEDCBA9876543210  # above 2^63: an unsigned u64
EXAMPLE_MEDIA = h("010112340102030403c003c003c00002f8aaf85051")  # §9.1's example, 21 bytes
SMALL_MEDIA = h("0100123501020" "6c403c0" "f8")  # sequence 0x1235, the next frame, a 1-byte Opus packet: 11 bytes
LARGE_MEDIA = h("0100123601020a8403c0") + bytes((7 * i) % 256 for i in range(1190))  # 1200 bytes, the most


def valid_case(name: str, seed: bytes, room_id: bytes, epoch: int, counter: int, media: bytes) -> dict:
    identity = Identity(seed, bytes(32))  # the static key plays no part
    frame = fanout.sign_frame(identity, room_id, epoch, counter, media)
    return {
        "name": name, "valid": True,
        "identity_seed": seed.hex(), "identity_key": identity.identity_key.hex(), "room_id": room_id.hex(),
        "session_epoch": str(epoch), "counter": str(counter), "media": media.hex(),
        "signed_message": fanout.signed_message(room_id, epoch, counter, media).hex(),
        "signed_frame": frame.hex(),
        "fan_deliver": RelayPacket(FAN_DELIVER, identity.identity_key, frame).encode().hex(),
    }


def invalid_case(name: str, identity_key: bytes, room_id: bytes, epoch: int, frame: bytes, dropped: str) -> dict:
    return {
        "name": name, "valid": False,
        "identity_key": identity_key.hex(), "room_id": room_id.hex(), "session_epoch": str(epoch),
        "signed_frame": frame.hex(), "fan_deliver": RelayPacket(FAN_DELIVER, identity_key, frame).encode().hex(),
        "dropped": dropped,
    }


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1:]


def document() -> dict:
    alice, bob = Identity(ALICE_SEED, bytes(32)), Identity(BOB_SEED, bytes(32))
    first = valid_case("alice, counter 0, the §9.1 example", ALICE_SEED, ROOM_ID, EPOCH, 0, EXAMPLE_MEDIA)
    second = valid_case("alice, counter 1, an 11-byte payload", ALICE_SEED, ROOM_ID, EPOCH, 1, SMALL_MEDIA)
    third = valid_case("bob, an epoch above 2^63, counter 2^32 + 5, a 1200-byte payload (a 1272-byte frame)",
                       BOB_SEED, ROOM_ID, BIG_EPOCH, 2**32 + 5, LARGE_MEDIA)
    frame = h(first["signed_frame"])
    counter_changed = (1).to_bytes(8, "big") + frame[8:]
    cases = [first, second, third,
             invalid_case("a media byte flipped", alice.identity_key, ROOM_ID, EPOCH, flip(frame, len(frame) - 1),
                          "signature"),
             invalid_case("the counter changed (0 to 1)", alice.identity_key, ROOM_ID, EPOCH, counter_changed,
                          "signature"),
             invalid_case("a signature byte flipped", alice.identity_key, ROOM_ID, EPOCH, flip(frame, 8),
                          "signature"),
             invalid_case("another room (the receiver's room id differs in one bit)", alice.identity_key,
                          flip(ROOM_ID, 0), EPOCH, frame, "signature"),
             invalid_case("another run of the sender (the receiver knows epoch + 1)", alice.identity_key, ROOM_ID,
                          EPOCH + 1, frame, "signature"),
             invalid_case("another identity (bob's key for alice's frame)", bob.identity_key, ROOM_ID, EPOCH, frame,
                          "signature"),
             invalid_case("81 bytes, one short of the least", alice.identity_key, ROOM_ID, EPOCH,
                          h(second["signed_frame"])[:81], "length"),
             invalid_case("1273 bytes, one past the most", bob.identity_key, ROOM_ID, BIG_EPOCH,
                          h(third["signed_frame"]) + b"\x00", "length")]
    # A replay sequence against one empty window: a copy is dropped, an older counter not seen yet is played, and a
    # forgery (a counter not seen yet, a bad signature) moves nothing: the genuine frame with that counter plays.
    replay = []
    window = ReplayWindow(64)
    for counter, forged in ((5, False), (3, False), (5, False), (4, False), (3, False), (7, True), (7, False),
                            (6, False), (7, False)):
        signed = fanout.sign_frame(alice, ROOM_ID, EPOCH, counter, EXAMPLE_MEDIA)
        if forged:
            signed = flip(signed, len(signed) - 1)
        dropped: Counter = Counter()
        accepted = fanout.open_frame(signed, alice.identity_key, ROOM_ID, EPOCH, window, dropped) is not None
        replay.append({"counter": str(counter), "signed_frame": signed.hex(), "accepted": accepted,
                       **({} if accepted else {"dropped": next(iter(dropped))})})
    return {
        "description": "§15: signed frames (§15.1) and the FAN_DELIVER relay packets (relay kind 5, §15.2) "
        "that carry them. Numbers that are u64 (session_epoch, counter) are decimal strings; byte strings are hex. valid: sign "
        "`signed_message` (context || room_id || session_epoch || counter || media) with the Ed25519 identity_seed "
        "and compare signed_frame byte for byte (Ed25519 is deterministic), then open it as a receiver that knows "
        "identity_key, room_id and session_epoch, with an empty fan-out replay window: counter and media come out. "
        "fan_deliver is the relay packet body kind || peer (identity_key) || payload (signed_frame). invalid: "
        "such a receiver drops signed_frame, for `dropped`: 'length' (outside 82-1272 bytes; a version-4 relay packet "
        "parser drops the fan_deliver body too) or 'signature'. replay: the frames, in order, through one empty "
        "window (any width of at least 8) of a receiver that knows alice's identity_key, room_id and session_epoch. "
        "Written by Interop/python-peer/tools/write_fanout_vectors.py (the independent implementation).",
        "context": fanout.CONTEXT.hex(),
        "cases": cases,
        "replay": {"identity_key": alice.identity_key.hex(), "room_id": ROOM_ID.hex(), "session_epoch": str(EPOCH),
                   "frames": replay},
    }


if __name__ == "__main__":
    path = FIXTURES / "protocol-v4-fanout.json"
    written = document()
    path.write_text(json.dumps(written, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {len(written['cases'])} cases and {len(written['replay']['frames'])} replayed frames to {path}")
