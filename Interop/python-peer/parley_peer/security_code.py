"""§11 Meeting security code."""

import hashlib

LABEL = b"parley/v1/security-code\0"


def security_code(room_id: bytes, identity_keys: list[bytes]) -> str:
    """12 decimal digits over the room id and the sorted, de-duplicated member identities."""
    members = sorted(set(identity_keys))
    assert len(members) <= 255
    data = LABEL + room_id + bytes([len(members)]) + b"".join(members)
    h = hashlib.blake2b(data, digest_size=64).digest()
    for _ in range(16383):
        h = hashlib.blake2b(h + data, digest_size=64).digest()
    return f"{int.from_bytes(h[:8], 'big') % 10**12:012d}"


def display(code: str) -> str:
    return " ".join(code[i : i + 4] for i in range(0, 12, 4))
