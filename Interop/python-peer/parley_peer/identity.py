"""§5 Node identity: an Ed25519 identity key, an X25519 static key, and the binding between them."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions
import nacl.signing

BINDING_LABEL = b"parley/v1/x25519-binding\0"


def binding_message(identity_key: bytes, static_key: bytes) -> bytes:
    return BINDING_LABEL + identity_key + static_key


def verify_binding(identity_key: bytes, static_key: bytes, signature: bytes) -> bool:
    try:
        nacl.signing.VerifyKey(identity_key).verify(binding_message(identity_key, static_key), signature)
        return True
    except (nacl.exceptions.BadSignatureError, ValueError):
        return False


@dataclass(frozen=True)
class Identity:
    seed: bytes  # Ed25519 seed
    static_secret: bytes  # X25519 scalar

    @staticmethod
    def generate() -> Identity:
        return Identity(os.urandom(32), os.urandom(32))

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    @property
    def identity_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def static_key(self) -> bytes:
        # X25519 clamps the scalar itself (RFC 7748 §5).
        return nacl.bindings.crypto_scalarmult_base(self.static_secret)

    @property
    def binding_signature(self) -> bytes:
        return self.sign(binding_message(self.identity_key, self.static_key))

    def sign(self, message: bytes) -> bytes:
        return self.signing_key.sign(message).signature


def is_lead(mine: bytes, theirs: bytes) -> bool:
    """§5.1: the identity whose bytes sort first leads (initiates, controls ICE)."""
    return mine < theirs


def new_session_epoch() -> int:
    """§5.1: a random non-zero u64 per start."""
    while True:
        epoch = secrets.randbits(64)
        if epoch:
            return epoch
