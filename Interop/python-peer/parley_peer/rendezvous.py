"""§4 Rendezvous protocol: messages, and a client over WebSocket (the `websockets` package)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import ssl
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from .invite import Invite
from .keys import RoomKeys
from .wire import Reader, WireError, u8, u32

SUBPROTOCOL = "parley.v1"
CHALLENGE, JOIN, WELCOME, MEMBER_JOINED, MEMBER_LEFT, SEND, DELIVER, ERROR, GOING_AWAY = range(1, 10)
EVERYONE = 0
MAX_MESSAGE = 16384
SERVICE_STUN, SERVICE_TURN = 0x01, 0x02

ERROR_NAMES = {1: "malformed", 2: "bad-proof", 3: "room-full", 4: "rate-limited", 5: "too-large",
               6: "too-many-connections", 7: "timeout", 8: "slow-reader", 9: "unsupported", 10: "misrouted"}
RETRYABLE_ERRORS = {"timeout", "slow-reader"}
# §4.1: answers a proxy gives while no rendezvous behind it is available; retried like a lost connection.
TRANSIENT_HTTP_STATUSES = {408, 429} | set(range(500, 600))


class RendezvousError(Exception):
    """The rendezvous refused us, or does not speak the protocol. `retryable` per §4.4."""

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class TURNCredential:
    ttl_seconds: int
    url: str
    username: str
    password: str

    def __repr__(self) -> str:  # never print the password
        return f"TURNCredential(url={self.url!r}, username={self.username!r}, ttl={self.ttl_seconds})"


@dataclass(frozen=True)
class Welcome:
    member_id: int
    members: tuple[int, ...]
    stun_servers: tuple[str, ...] = ()
    turn: tuple[TURNCredential, ...] = ()


@dataclass(frozen=True)
class Event:
    kind: int  # MEMBER_JOINED, MEMBER_LEFT, DELIVER, GOING_AWAY
    member_id: int = 0
    payload: bytes = b""
    retry_after_ms: int = 0


def parse_welcome(reader: Reader) -> Welcome:
    member_id = reader.u32("member_id")
    members = tuple(reader.u32("member") for _ in range(reader.u8("n")))
    if member_id == 0 or 0 in members or member_id in members or len(set(members)) != len(members):
        raise WireError("WELCOME: bad member ids")
    stun, turn = [], []
    for _ in range(reader.u8("services count")):
        kind = reader.u8("service kind")
        value = Reader(reader.take(reader.u16("service length"), "service"), "service")
        if kind == SERVICE_STUN:
            text = value.rest().decode()
            if not text:
                raise WireError("WELCOME: empty STUN service")
            stun.append(text)
        elif kind == SERVICE_TURN:
            ttl = value.u32("ttl")
            parts = [value.take(value.u16(name), name).decode() for name in ("url", "user", "pass")]
            value.finish()
            turn.append(TURNCredential(ttl, *parts))
        # unknown kinds are skipped by their length (forward compatibility)
    reader.finish()
    return Welcome(member_id, members, tuple(stun), tuple(turn))


SHARD_HASH_KEY = b"parley/v1/shard"


def shard_key(room_id: bytes) -> str:
    """§4.1: base32 (lowercase, unpadded) of the first 8 bytes of BLAKE2b-256 keyed with "parley/v1/shard"."""
    digest = hashlib.blake2b(room_id, digest_size=32, key=SHARD_HASH_KEY).digest()
    return base64.b32encode(digest[:8]).decode().rstrip("=").lower()


def shard_path(invite_path: str, room_id: bytes) -> str:
    """§4.1: the invite's path without its trailing slashes, then /r/ and the room's shard key."""
    return f"{invite_path.rstrip('/')}/r/{shard_key(room_id)}"


def parse_server_message(data: bytes) -> tuple[int, Reader]:
    if not data:
        raise WireError("empty message")
    return data[0], Reader(data[1:], f"message type {data[0]}")


def spki_sha256(der_certificate: bytes) -> bytes:
    """SHA-256 of the DER SubjectPublicKeyInfo of an X.509 certificate (§2.2 TLS pin), by walking its DER."""

    def element(data: bytes, offset: int) -> tuple[int, int, int]:
        """(tag, start of contents, end) of the DER element at offset."""
        tag, length = data[offset], data[offset + 1]
        offset += 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(data[offset : offset + count], "big")
            offset += count
        return tag, offset, offset + length

    _, cert_start, _ = element(der_certificate, 0)  # Certificate ::= SEQUENCE
    _, tbs_start, tbs_end = element(der_certificate, cert_start)  # tbsCertificate ::= SEQUENCE
    offset = tbs_start
    tag, _, end = element(der_certificate, offset)
    if tag == 0xA0:  # [0] version, optional
        offset = end
    for _ in range(5):  # serialNumber, signature, issuer, validity, subject
        offset = element(der_certificate, offset)[2]
    tag, _, end = element(der_certificate, offset)
    if tag != 0x30 or end > tbs_end:
        raise ValueError("no SubjectPublicKeyInfo")
    return hashlib.sha256(der_certificate[offset:end]).digest()


class RendezvousClient:
    """One connection to the rendezvous: CHALLENGE → JOIN → WELCOME, then SEND/DELIVER (§4.3)."""

    def __init__(self, invite: Invite, room_keys: RoomKeys, open_timeout: float = 10.0):
        self.invite = invite
        self.room_keys = room_keys
        self.open_timeout = open_timeout
        self.websocket: ClientConnection | None = None
        self.welcome: Welcome | None = None

    async def connect(self) -> Welcome:
        url = self.invite.rendezvous_url
        path = shard_path(url.request_path, self.room_keys.room_id)
        uri = f"{url.scheme}://{url.endpoint.host_for_url()}:{url.port}{path}"
        context = None
        if url.scheme == "wss":
            context = ssl.create_default_context()
            if self.invite.tls_pin is not None:  # §4.1: with a pin only the key counts
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        try:
            self.websocket = await connect(
                uri, subprotocols=[Subprotocol(SUBPROTOCOL)], ssl=context, open_timeout=self.open_timeout,
                ping_interval=15, ping_timeout=30, max_size=1 << 20, compression=None)
        except InvalidStatus as error:
            status = error.response.status_code
            if status in TRANSIENT_HTTP_STATUSES:  # §4.1: a proxy with no server available behind it
                raise RendezvousError(f"the rendezvous answered HTTP {status}", retryable=True) from None
            raise RendezvousError(f"rendezvous does not speak Parley protocol v1 ({error})") from None
        except InvalidHandshake as error:
            raise RendezvousError(f"rendezvous does not speak Parley protocol v1 ({error})") from None
        except (OSError, asyncio.TimeoutError) as error:
            raise RendezvousError(f"cannot reach the rendezvous: {error}", retryable=True) from None
        if self.websocket.subprotocol != SUBPROTOCOL:
            await self.websocket.close()
            raise RendezvousError("rendezvous does not speak Parley protocol v1")
        if self.invite.tls_pin is not None:
            ssl_object = self.websocket.transport.get_extra_info("ssl_object")
            leaf = ssl_object.getpeercert(binary_form=True) if ssl_object else None
            if leaf is None or spki_sha256(leaf) != self.invite.tls_pin:
                await self.websocket.close()
                raise RendezvousError("the rendezvous' certificate does not match the invite's pin")
        kind, reader = parse_server_message(await self._receive())
        if kind == ERROR:
            raise self._error(reader)
        if kind != CHALLENGE:
            raise RendezvousError(f"expected CHALLENGE, got type {kind}")
        nonce = reader.take(32, "nonce")
        reader.finish()
        await self.websocket.send(u8(JOIN) + self.room_keys.room_id + self.room_keys.join_proof(nonce))
        kind, reader = parse_server_message(await self._receive())
        if kind == ERROR:
            raise self._error(reader)
        if kind != WELCOME:
            raise RendezvousError(f"expected WELCOME, got type {kind}")
        self.welcome = parse_welcome(reader)
        return self.welcome

    async def _receive(self) -> bytes:
        try:
            message = await self.websocket.recv()
        except ConnectionClosed as error:
            raise RendezvousError(f"rendezvous closed the connection ({error})", retryable=True) from None
        if isinstance(message, str):
            raise RendezvousError("the rendezvous sent a text message")
        return message

    @staticmethod
    def _error(reader: Reader) -> RendezvousError:
        code = reader.u16("code")
        reason = reader.take(reader.u16("reason_length"), "reason").decode("utf-8", "replace")
        name = ERROR_NAMES.get(code, f"error {code}")
        return RendezvousError(f"rendezvous refused: {name}: {reason}", retryable=name in RETRYABLE_ERRORS)

    async def send(self, to: int, payload: bytes) -> None:
        if len(payload) > MAX_MESSAGE - 5:
            raise ValueError("payload too large for the rendezvous")
        await self.websocket.send(u8(SEND) + u32(to) + payload)

    async def events(self):
        """Yields Events until the connection ends; then raises RendezvousError (retryable or not)."""
        while True:
            kind, reader = parse_server_message(await self._receive())
            if kind in (MEMBER_JOINED, MEMBER_LEFT):
                member = reader.u32("member_id")
                reader.finish()
                yield Event(kind, member)
            elif kind == DELIVER:
                yield Event(kind, reader.u32("from"), reader.rest())
            elif kind == GOING_AWAY:
                yield Event(kind, retry_after_ms=reader.u32("retry_after_ms"))
                await self.close()
                return
            elif kind == ERROR:
                raise self._error(reader)
            else:
                raise RendezvousError(f"unexpected message type {kind}")

    async def close(self) -> None:
        if self.websocket is not None:
            await self.websocket.close()


@dataclass
class Backoff:
    """§4.3 step 7: the k-th consecutive attempt waits min(30 s, 0.5 s × 2^k) × U[0.5, 1]."""

    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        delay = min(30.0, 0.5 * 2**self.attempt) * self.rng.uniform(0.5, 1.0)
        self.attempt += 1
        return delay

    def after_going_away(self, retry_after_ms: int) -> float:
        self.attempt = 1
        return retry_after_ms / 1000 * (1 + self.rng.random())
