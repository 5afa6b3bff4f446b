"""§3 Key schedule and join proof."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import nacl.signing

JOIN_PROOF_LABEL = b"parley/v1/join\0"


def kdf(room_secret: bytes, context: bytes) -> bytes:
    """libsodium's crypto_kdf_derive_from_key(32, subkey_id = 1, context, key), as §3.1 spells it out."""
    assert len(room_secret) == 32 and len(context) == 8
    return hashlib.blake2b(
        b"", key=room_secret, digest_size=32, salt=(1).to_bytes(8, "little") + bytes(8), person=context + bytes(8)
    ).digest()


@dataclass(frozen=True)
class RoomKeys:
    room_key_seed: bytes
    signaling_key: bytes
    noise_psk: bytes
    mac_key: bytes

    @staticmethod
    def derive(room_secret: bytes) -> RoomKeys:
        return RoomKeys(
            kdf(room_secret, b"parl-rid"),
            kdf(room_secret, b"parl-sig"),
            kdf(room_secret, b"parl-psk"),
            kdf(room_secret, b"parl-mac"),
        )

    @property
    def room_signing_key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.room_key_seed)

    @property
    def room_id(self) -> bytes:
        """§3.2: the room key's Ed25519 public key."""
        return bytes(self.room_signing_key.verify_key)

    def join_proof(self, nonce: bytes) -> bytes:
        """§3.3: a signature over the rendezvous' CHALLENGE nonce and the room id."""
        assert len(nonce) == 32
        return self.room_signing_key.sign(JOIN_PROOF_LABEL + nonce + self.room_id).signature
