"""§2 Invite string: text form, binary form, rendezvous URL and TURN hints."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field

from .wire import Reader, WireError, u16

PREFIX = "parley1:"
MIN_LENGTH = 38
MAX_LENGTH = 1024

# §2.1 step 1: Unicode White_Space (exactly, not Python's str.isspace, which also takes U+001C–U+001F)
# plus the invisible characters chat apps insert.
WHITE_SPACE = set(
    [chr(c) for c in range(0x09, 0x0E)]
    + ["\u0020", "\u0085", "\u00a0", "\u1680"]
    + [chr(c) for c in range(0x2000, 0x200B)]
    + ["\u2028", "\u2029", "\u202f", "\u205f", "\u3000"]
)
_INVISIBLE = {"\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"}
# §2.1 step 2: quotes and brackets around a pasted invite.
_WRAPPERS = "\"'`<>\u2018\u2019\u201c\u201d\u00ab\u00bb"
_BASE32 = set("abcdefghijklmnopqrstuvwxyz234567ABCDEFGHIJKLMNOPQRSTUVWXYZ")

TAG_URL, TAG_PIN, TAG_TURN = 0x01, 0x02, 0x03


class InviteError(ValueError):
    """A refused invite; `code` is one of §2.5's stable codes."""

    def __init__(self, code: str, detail: str = ""):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class HostPort:
    host: str  # lowercase; an IPv6 address without brackets
    port: int | None  # as given, or None

    def host_for_url(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host


@dataclass(frozen=True)
class RendezvousURL:
    """§2.3: ws:// or wss://, host, optional port, optional path."""

    scheme: str
    endpoint: HostPort
    path: str  # "" when not given

    @property
    def port(self) -> int:
        return self.endpoint.port or (443 if self.scheme == "wss" else 80)

    @property
    def request_path(self) -> str:
        return self.path or "/"

    def canonical(self) -> str:
        text = f"{self.scheme}://{self.endpoint.host_for_url()}"
        if self.endpoint.port is not None:
            text += f":{self.endpoint.port}"
        if self.path not in ("", "/"):
            text += self.path
        return text

    @staticmethod
    def parse(text: str) -> RendezvousURL:
        def fail(reason: str) -> InviteError:
            return InviteError("bad-rendezvous-url", reason)

        if len(text.encode()) > 255:
            raise fail("longer than 255 bytes")
        match = re.fullmatch(r"([A-Za-z]+)://(.*)", text, re.DOTALL)
        if not match:
            raise fail("no scheme")
        scheme = match.group(1).lower()
        if scheme not in ("ws", "wss"):
            raise fail(f"scheme {match.group(1)!r} is not ws or wss")
        rest = match.group(2)
        slash = rest.find("/")
        authority, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
        endpoint = _parse_host_port(authority, fail)
        if path and not re.fullmatch(r"/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*", path):
            raise fail("the path has a character RFC 3986 does not allow (query and fragment are not allowed)")
        return RendezvousURL(scheme, endpoint, path)


def _parse_host_port(authority: str, fail) -> HostPort:
    """Host and port of §2.3 (shared by TURN hints, §2.4)."""
    if "@" in authority:
        raise fail("user info is not allowed")
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise fail("unclosed [")
        host = authority[1:close]
        if not (2 <= len(host) <= 45 and re.fullmatch(r"[0-9A-Fa-f:.]+", host) and ":" in host):
            raise fail("bad IPv6 address")
        after = authority[close + 1 :]
        host = host.lower()
    else:
        colon = authority.find(":")
        host, after = (authority, "") if colon < 0 else (authority[:colon], authority[colon:])
        if not host or len(host) > 253:
            raise fail("host empty or longer than 253 bytes")
        for label in host.split("."):
            if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", label):
                raise fail(f"bad host label {label!r}")
        host = host.lower()
    port = None
    if after:
        if not re.fullmatch(r":[0-9]{1,5}", after):
            raise fail("bad port")
        port = int(after[1:])
        if not 1 <= port <= 65535:
            raise fail("port out of range")
    return HostPort(host, port)


@dataclass(frozen=True)
class TURNHint:
    """§2.4: a TURN server URI (RFC 7065) with optional long-term credentials."""

    uri: str  # canonical: lowercase scheme and transport
    username: str = ""
    password: str = ""

    @staticmethod
    def parse_uri(text: str) -> tuple[str, HostPort, str | None, str]:
        """Returns (scheme, host and port, transport or None, canonical text)."""

        def fail(reason: str) -> InviteError:
            return InviteError("bad-turn-hint", reason)

        match = re.fullmatch(r"(turns?):([^?]*)(?:\?transport=([A-Za-z]+))?", text, re.IGNORECASE)
        if not match:
            raise fail("not a turn: or turns: URI")
        scheme = match.group(1).lower()
        transport = match.group(3).lower() if match.group(3) else None
        if transport not in (None, "udp", "tcp"):
            raise fail("transport must be udp or tcp")
        endpoint = _parse_host_port(match.group(2), fail)
        canonical = f"{scheme}:{endpoint.host_for_url()}"
        if endpoint.port is not None:
            canonical += f":{endpoint.port}"
        if transport:
            canonical += f"?transport={transport}"
        return scheme, endpoint, transport, canonical

    def server(self) -> tuple[str, int, str]:
        """(host, port, transport) with §2.4's default ports."""
        scheme, endpoint, transport, _ = TURNHint.parse_uri(self.uri)
        return endpoint.host, endpoint.port or (5349 if scheme == "turns" else 3478), transport or "udp"


@dataclass(frozen=True)
class Invite:
    room_secret: bytes
    rendezvous_url: RendezvousURL
    tls_pin: bytes | None = None
    turn_hints: tuple[TURNHint, ...] = field(default_factory=tuple)

    # §2.2 binary form
    def binary(self) -> bytes:
        fields = _field(TAG_URL, self.rendezvous_url.canonical().encode())
        if self.tls_pin is not None:
            fields += _field(TAG_PIN, self.tls_pin)
        for hint in self.turn_hints:
            value = b""
            for part in (hint.uri, hint.username, hint.password):
                encoded = part.encode()
                value += bytes([len(encoded)]) + encoded
            fields += _field(TAG_TURN, value)
        length = 2 + 32 + len(fields) + 4
        if length > MAX_LENGTH:
            raise InviteError("too-long", f"{length} bytes, at most {MAX_LENGTH}")
        body = u16(length) + self.room_secret + fields
        return body + _checksum(body)

    def text(self) -> str:
        return PREFIX + base64.b32encode(self.binary()).decode().rstrip("=").lower()

    @staticmethod
    def parse(text: str) -> Invite:
        return parse_binary(decode_text(text))


def _field(tag: int, value: bytes) -> bytes:
    if len(value) > 255:
        raise InviteError("too-long", f"field 0x{tag:02x} has {len(value)} bytes, at most 255")
    return bytes([tag, len(value)]) + value


def _checksum(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()[:4]


def decode_text(text: str) -> bytes:
    """§2.1 steps 1–7: pasted text to the checked binary form."""
    text = "".join(c for c in text if c not in WHITE_SPACE and c not in _INVISIBLE)
    text = text.strip(_WRAPPERS)
    if not text:
        raise InviteError("empty")
    prefix, colon, data = text.partition(":")
    version = re.fullmatch(r"parley([0-9]+)", prefix, re.IGNORECASE | re.ASCII)
    if not colon or not version:
        raise InviteError("not-an-invite", "a Parley invite starts with parley1:")
    if version.group(1) != "1":
        raise InviteError("unsupported-version", f"the invite is for Parley invite version {version.group(1)}")
    for position, character in enumerate(data, start=1):
        if character not in _BASE32:
            raise InviteError("invalid-character", f"character {character!r} at position {position}")
    if len(data) < 4:
        raise InviteError("truncated", f"{len(data)} characters")
    declared = int.from_bytes(_b32decode(data[:4])[:2], "big")
    if not MIN_LENGTH <= declared <= MAX_LENGTH:
        raise InviteError("checksum-mismatch", "the length is impossible (a typo)")
    needed = -(-8 * declared // 5)
    if len(data) < needed:
        raise InviteError("truncated", f"it has {len(data)} of its {needed} characters")
    if len(data) > needed:
        raise InviteError("extra-characters", f"{len(data) - needed} characters after the invite")
    binary = _b32decode(data)[:declared]
    if _checksum(binary[:-4]) != binary[-4:]:
        raise InviteError("checksum-mismatch")
    return binary


def _b32decode(data: str) -> bytes:
    """RFC 4648 base32 in either case, dropping the bits of an incomplete last byte (§2.1 step 7)."""
    # Fill the last 8-character group with "A" (zero bits) so b32decode takes it, then cut.
    filled = data.upper() + "A" * (-len(data) % 8)
    return base64.b32decode(filled)[: len(data) * 5 // 8]


def parse_binary(binary: bytes) -> Invite:
    """§2.2: the fields of a checked binary invite."""
    reader = Reader(binary[:-4], "invite")
    try:
        length = reader.u16()
        if length != len(binary):
            raise InviteError("malformed", "length field does not match")
        room_secret = reader.take(32, "room secret")
        url: RendezvousURL | None = None
        pin: bytes | None = None
        hints: list[TURNHint] = []
        while reader.remaining:
            tag = reader.u8("tag")
            value = reader.take(reader.u8("value length"), f"field 0x{tag:02x}")
            if tag == TAG_URL:
                if url is not None:
                    raise InviteError("duplicate-field", "a second rendezvous URL")
                try:
                    text = value.decode("utf-8")
                except UnicodeDecodeError:
                    raise InviteError("bad-rendezvous-url", "not UTF-8") from None
                url = RendezvousURL.parse(text)
            elif tag == TAG_PIN:
                if pin is not None:
                    raise InviteError("duplicate-field", "a second TLS pin")
                pin = value
            elif tag == TAG_TURN:
                hints.append(_parse_turn_hint(value))
            elif tag < 0x80:
                raise InviteError("unknown-required-field", f"tag 0x{tag:02x}")
    except WireError as error:
        raise InviteError("malformed", str(error)) from None
    # Checked after the last field, in this order (§2.2).
    if url is None:
        raise InviteError("missing-rendezvous-url")
    if pin is not None and len(pin) != 32:
        raise InviteError("bad-tls-pin", f"{len(pin)} bytes, not 32")
    if pin is not None and url.scheme != "wss":
        raise InviteError("pin-without-tls", "a TLS pin with a ws:// URL")
    if len(hints) > 4:
        raise InviteError("bad-turn-hint", "more than 4 TURN hints")
    return Invite(room_secret, url, pin, tuple(hints))


def _utf8(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise InviteError("malformed", "text that is not UTF-8") from None


def _parse_turn_hint(value: bytes) -> TURNHint:
    reader = Reader(value, "TURN hint")
    parts = [_utf8(reader.take(reader.u8(name), name)) for name in ("uri", "user", "password")]
    reader.finish()  # a WireError here is `malformed` (§2.2)
    uri, user, password = parts
    _, _, _, canonical = TURNHint.parse_uri(uri)
    if bool(user) != bool(password):
        raise InviteError("bad-turn-hint", "user and password must both be empty or both be given")
    return TURNHint(canonical, user, password)
