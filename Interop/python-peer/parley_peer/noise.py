"""The Noise Protocol Framework (revision 34) for 25519 / ChaChaPoly / BLAKE2b, as §7.1 requires.

Generic over the fundamental handshake patterns and their psk modifiers, so it can be checked against
the public cacophony test vectors, not only against Parley's own.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re

import nacl.bindings
import nacl.exceptions

HASHLEN = 64
DHLEN = 32
MAX_NONCE = 2**64 - 1

# Noise §7.4 and §7.5: pre-messages (initiator's, responder's) and message patterns.
PATTERNS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, ...], ...]]] = {
    "N": ((), ("s",), (("e", "es"),)),
    "K": (("s",), ("s",), (("e", "es", "ss"),)),
    "X": ((), ("s",), (("e", "es", "s", "ss"),)),
    "NN": ((), (), (("e",), ("e", "ee"))),
    "NK": ((), ("s",), (("e", "es"), ("e", "ee"))),
    "NX": ((), (), (("e",), ("e", "ee", "s", "es"))),
    "XN": ((), (), (("e",), ("e", "ee"), ("s", "se"))),
    "XK": ((), ("s",), (("e", "es"), ("e", "ee"), ("s", "se"))),
    "XX": ((), (), (("e",), ("e", "ee", "s", "es"), ("s", "se"))),
    "KN": (("s",), (), (("e",), ("e", "ee", "se"))),
    "KK": (("s",), ("s",), (("e", "es", "ss"), ("e", "ee", "se"))),
    "KX": (("s",), (), (("e",), ("e", "ee", "se", "s", "es"))),
    "IN": ((), (), (("e", "s"), ("e", "ee", "se"))),
    "IK": ((), ("s",), (("e", "es", "s", "ss"), ("e", "ee", "se"))),
    "IX": ((), (), (("e", "s"), ("e", "ee", "se", "s", "es"))),
}


class NoiseError(ValueError):
    """A handshake or transport message that does not authenticate or parse."""


def blake2b(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=HASHLEN).digest()


def hkdf(chaining_key: bytes, input_key_material: bytes, outputs: int) -> list[bytes]:
    """Noise §4.3 HKDF with HMAC-BLAKE2b (RFC 2104, 128-byte block)."""
    temp_key = hmac.new(chaining_key, input_key_material, hashlib.blake2b).digest()
    result, previous = [], b""
    for i in range(1, outputs + 1):
        previous = hmac.new(temp_key, previous + bytes([i]), hashlib.blake2b).digest()
        result.append(previous)
    return result


def dh(secret: bytes, public: bytes) -> bytes:
    return nacl.bindings.crypto_scalarmult(secret, public)


def aead_encrypt(key: bytes, counter: int, ad: bytes, plaintext: bytes) -> bytes:
    """ChaCha20-Poly1305-IETF with the nonce 4 zero bytes || LE64(counter) (Noise §12.3)."""
    return nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, ad, nonce(counter), key)


def aead_decrypt(key: bytes, counter: int, ad: bytes, ciphertext: bytes) -> bytes:
    try:
        return nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(ciphertext, ad, nonce(counter), key)
    except nacl.exceptions.CryptoError:
        raise NoiseError("decryption failed") from None


def nonce(counter: int) -> bytes:
    return bytes(4) + counter.to_bytes(8, "little")


class CipherState:
    def __init__(self, key: bytes | None = None):
        self.key = key
        self.n = 0

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self.key is None:
            return plaintext
        if self.n == MAX_NONCE:
            raise NoiseError("nonce exhausted")
        ciphertext = aead_encrypt(self.key, self.n, ad, plaintext)
        self.n += 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self.key is None:
            return ciphertext
        if self.n == MAX_NONCE:
            raise NoiseError("nonce exhausted")
        plaintext = aead_decrypt(self.key, self.n, ad, ciphertext)
        self.n += 1
        return plaintext


class SymmetricState:
    def __init__(self, protocol_name: bytes):
        self.h = protocol_name.ljust(HASHLEN, b"\0") if len(protocol_name) <= HASHLEN else blake2b(protocol_name)
        self.ck = self.h
        self.cipher = CipherState()

    def mix_key(self, input_key_material: bytes) -> None:
        self.ck, temp_k = hkdf(self.ck, input_key_material, 2)
        self.cipher = CipherState(temp_k[:32])

    def mix_hash(self, data: bytes) -> None:
        self.h = blake2b(self.h + data)

    def mix_key_and_hash(self, input_key_material: bytes) -> None:
        self.ck, temp_h, temp_k = hkdf(self.ck, input_key_material, 3)
        self.mix_hash(temp_h)
        self.cipher = CipherState(temp_k[:32])

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        temp_k1, temp_k2 = hkdf(self.ck, b"", 2)
        return CipherState(temp_k1[:32]), CipherState(temp_k2[:32])


def parse_protocol_name(name: str) -> tuple[str, list[int]]:
    """'Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b' -> ('IK', [2])."""
    match = re.fullmatch(r"Noise_([A-Z]+)((?:psk\d)(?:\+psk\d)*)?_25519_ChaChaPoly_BLAKE2b", name)
    if not match or match.group(1) not in PATTERNS:
        raise ValueError(f"unsupported Noise protocol {name}")
    psks = [int(p) for p in re.findall(r"psk(\d)", match.group(2) or "")]
    return match.group(1), psks


class HandshakeState:
    """Noise §5.3. `ephemeral` may be fixed (test vectors); otherwise it is generated when needed."""

    def __init__(self, protocol_name: str, initiator: bool, prologue: bytes = b"", s: bytes | None = None,
                 rs: bytes | None = None, psks: list[bytes] | tuple[bytes, ...] = (), ephemeral: bytes | None = None,
                 re_: bytes | None = None):
        pattern, psk_positions = parse_protocol_name(protocol_name)
        initiator_pre, responder_pre, messages = PATTERNS[pattern]
        self.messages = [list(m) for m in messages]
        for position in psk_positions:  # Noise §9.2
            if position == 0:
                self.messages[0].insert(0, "psk")
            else:
                self.messages[position - 1].append("psk")
        self.has_psk = bool(psk_positions)
        self.psks = list(psks)
        self.initiator = initiator
        self.s = s  # local static secret
        self.s_public = nacl.bindings.crypto_scalarmult_base(s) if s else None
        self.e_fixed = ephemeral
        self.e: bytes | None = None
        self.e_public: bytes | None = None
        self.rs = rs
        self.re = re_
        self.symmetric = SymmetricState(protocol_name.encode())
        self.symmetric.mix_hash(prologue)
        for owner_is_initiator, tokens in ((True, initiator_pre), (False, responder_pre)):
            for token in tokens:
                assert token == "s"
                key = self.s_public if owner_is_initiator == initiator else rs
                if key is None:
                    raise ValueError("a pre-message needs a static key")
                self.symmetric.mix_hash(key)
        self.message_index = 0

    @property
    def finished(self) -> bool:
        return self.message_index == len(self.messages)

    @property
    def handshake_hash(self) -> bytes:
        return self.symmetric.h

    def _my_turn(self) -> bool:
        return (self.message_index % 2 == 0) == self.initiator

    def _dh_token(self, token: str) -> bytes:
        # "es": initiator's ephemeral with responder's static; from the responder's side, the mirror.
        first, second = token
        mine = first if self.initiator else second
        theirs = second if self.initiator else first
        secret = self.e if mine == "e" else self.s
        public = self.re if theirs == "e" else self.rs
        if secret is None or public is None:
            raise NoiseError(f"missing key for {token}")
        return dh(secret, public)

    def write_message(self, payload: bytes = b"") -> bytes:
        if self.finished or not self._my_turn():
            raise NoiseError("not our turn to write")
        out = b""
        for token in self.messages[self.message_index]:
            if token == "e":
                self.e = self.e_fixed if self.e_fixed is not None else os.urandom(32)
                self.e_public = nacl.bindings.crypto_scalarmult_base(self.e)
                out += self.e_public
                self.symmetric.mix_hash(self.e_public)
                if self.has_psk:
                    self.symmetric.mix_key(self.e_public)
            elif token == "s":
                out += self.symmetric.encrypt_and_hash(self.s_public)
            elif token == "psk":
                self.symmetric.mix_key_and_hash(self.psks.pop(0))
            else:
                self.symmetric.mix_key(self._dh_token(token))
        out += self.symmetric.encrypt_and_hash(payload)
        self.message_index += 1
        return out

    def read_message(self, message: bytes) -> bytes:
        if self.finished or self._my_turn():
            raise NoiseError("not our turn to read")
        offset = 0
        for token in self.messages[self.message_index]:
            if token == "e":
                if len(message) - offset < DHLEN:
                    raise NoiseError("message too short")
                self.re = message[offset : offset + DHLEN]
                offset += DHLEN
                self.symmetric.mix_hash(self.re)
                if self.has_psk:
                    self.symmetric.mix_key(self.re)
            elif token == "s":
                length = DHLEN + (16 if self.symmetric.cipher.key is not None else 0)
                if len(message) - offset < length:
                    raise NoiseError("message too short")
                self.rs = self.symmetric.decrypt_and_hash(message[offset : offset + length])
                offset += length
            elif token == "psk":
                self.symmetric.mix_key_and_hash(self.psks.pop(0))
            else:
                self.symmetric.mix_key(self._dh_token(token))
        payload = self.symmetric.decrypt_and_hash(message[offset:])
        self.message_index += 1
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """(initiator → responder, responder → initiator)."""
        if not self.finished:
            raise NoiseError("handshake not finished")
        return self.symmetric.split()
