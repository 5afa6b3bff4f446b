"""Writes Tests/Fixtures/protocol-v1-invite-errors.json: invites with a valid length and checksum whose
fields break §2.2 in one way each, with the error code §2.2 gives (None: must parse). Made by the
independent Python implementation; the Swift tests check the same file (InviteErrorVectorTests)."""

import base64
import hashlib
import json
from pathlib import Path


def invite_text(fields: bytes) -> str:
    body = (2 + 32 + len(fields) + 4).to_bytes(2, "big") + bytes(range(32)) + fields
    binary = body + hashlib.blake2b(body, digest_size=32).digest()[:4]
    return "parley1:" + base64.b32encode(binary).decode().rstrip("=").lower()


def field(tag: int, value: bytes) -> bytes:
    return bytes([tag, len(value)]) + value


def hint(uri=b"turn:t.example", user=b"", password=b"", extra=b"") -> bytes:
    return field(3, bytes([len(uri)]) + uri + bytes([len(user)]) + user + bytes([len(password)]) + password + extra)


URL = field(1, b"wss://rv.example")
CASES = [
    ("no fields", b"", "missing-rendezvous-url"),
    ("two URLs", URL + URL, "duplicate-field"),
    ("two pins", URL + field(2, bytes(32)) + field(2, bytes(32)), "duplicate-field"),
    ("http URL", field(1, b"http://x"), "bad-rendezvous-url"),
    ("URL not UTF-8", field(1, b"ws://\xff"), "bad-rendezvous-url"),
    ("TURN password not UTF-8", URL + hint(user=b"u", password=b"\xff"), "malformed"),
    ("unknown required tag", URL + field(0x04, b"new"), "unknown-required-field"),
    ("unknown optional tag skipped", URL + field(0x80, b"optional"), None),
    ("TURN hint with trailing bytes", URL + hint(extra=b"x"), "malformed"),
    ("TURN hint not turn:", URL + hint(uri=b"stun:t.example"), "bad-turn-hint"),
    ("TURN user without password", URL + hint(user=b"u"), "bad-turn-hint"),
    ("five TURN hints", URL + hint() * 5, "bad-turn-hint"),
    ("four TURN hints", URL + hint() * 4, None),
    ("31-byte pin", field(2, bytes(31)) + URL, "bad-tls-pin"),
    ("pin with ws://", field(2, bytes(32)) + field(1, b"ws://rv.example"), "pin-without-tls"),
    ("per-field error before after-the-fields error", field(2, bytes(31)) + field(0x05, b""), "unknown-required-field"),
    ("missing URL before bad pin", field(2, bytes(31)), "missing-rendezvous-url"),
    ("bad pin before five hints", URL + field(2, bytes(31)) + hint() * 5, "bad-tls-pin"),
    ("field runs into the checksum", URL + bytes([3, 200]), "malformed"),
]

if __name__ == "__main__":
    path = Path(__file__).resolve().parents[3] / "Tests" / "Fixtures" / "protocol-v1-invite-errors.json"
    document = {
        "description": "§2.2: invites with a valid length and checksum whose fields are wrong in one way each, "
        "and the error code (null: the invite must parse). Written by Interop/python-peer/tools/"
        "write_invite_error_vectors.py (the independent implementation).",
        "cases": [{"name": name, "invite": invite_text(fields), "error": code} for name, fields, code in CASES],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {len(CASES)} cases to {path}")
