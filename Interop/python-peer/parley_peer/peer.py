"""The Python peer: joins a meeting through the rendezvous (§4), signals with envelopes (§6), connects an ICE
path per peer with aioice, runs the pairwise handshake and transport (§7–§8), sends a tone or a WAV as Opus
media payloads (§9) and session control (§10), and records what it receives. With version 2 (§13) a link
without a working direct path goes through a member that reaches both ends, this node carries pairs of
others the same way, and envelopes travel over the sessions when the rendezvous cannot carry them. With version 3
(§14) it receives chat and recording notices (and gives notice of its own recording); with version 4 (§15) it
plays frames a member fanned out to it once their sender's signature verified, fans out for others, and, when
asked to (`fan_out_through`), sends its own voice as one copy through a member."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import signal
import socket
import time
from collections import Counter
from dataclasses import dataclass, field

import aioice
import aioice.ice
from aioice import Candidate, TransportPolicy

from . import audio, chat, control, fanout, liveness, relay
from .envelope import (BROADCAST, Bye, EnvelopeError, Hello, ICECandidate, ICECandidatesDone, ICECredentials,
                       ICERestart, Signaling)
from .identity import Identity, new_session_epoch
from .invite import Invite, TURNHint
from .keys import RoomKeys
from .media import MAX_PAYLOAD, Frame, MediaError, MediaPayload
from .rendezvous import (DELIVER, EVERYONE, GOING_AWAY, MEMBER_JOINED, MEMBER_LEFT, Backoff, RendezvousClient,
                         RendezvousError, Welcome)
from . import security_code
from .relay import INNER_RELAY, RelayPacket, RelayTable
from .replay import ReplayWindow
from .session import INNER_CONTROL, INNER_MEDIA, REPLAY_WINDOW, PeerSession
from .wire import WireError

log = logging.getLogger("parley-peer")

# Version 2 is the relay protocol (§13), version 3 adds chat and the recording notice (§14; this peer receives
# chat and sends none), version 4 the fan-out of a voice through a member (§15).
SUPPORTED_VERSIONS = (1, 2, 3, 4)
# §10.3: a link is lost after liveness.LOST_AFTER of silence, or QUICK_LOST_AFTER when packets came densely (and its
# media does not come through a member); the lead restarts ICE this long after (the node's choice), and a peer
# silent for REMOVE_AFTER is removed (as Parley).
RESTART_DELAY, REMOVE_AFTER = 1.0, 120.0
REPORT_INTERVAL = 1.0
QUEUE_BACK_OFF = 0.040  # §10.1: a sender lowers its rate at this much queue, so a receiver reaching it reports at once
QUEUE_REPORT_SPACING = 0.5  # ... at most this often per link
QUEUE_BASE_WINDOW = 10.0  # §10.1 `queue_delay_ms`: its base is the lowest transit of this window and the last
# §15.3: a sender fans out only through a member whose LINKS lists at least this many of its other peers.
FAN_OUT_COVERS = 2
# §13.4 (the node's choice; Parley's values).
RELAY_AFTER = 2.0  # a link that found no direct path this long after it started goes through a member
RELAY_DELAY = 0.3  # a lost link goes through a member this long after it was declared lost
RELAY_TRIAL = 2.0  # a member that carried nothing of a link not up for this long is treated as refusing
FOLLOW_QUIET = 1.0  # the peer's packets through a member, none direct for this long: send through it too
LINKS_INTERVAL = 5.0  # §13.1: LINKS when the set changes, and this often anyway
PROBE_FIRST, PROBE_MAX = 5.0, 60.0  # §13.4 "Going back": ICE restarts at 5, 10, 20, 40 s, then every minute


@dataclass
class PeerOptions:
    name: str = "python"
    source: object = field(default_factory=lambda: audio.ToneSource(440.0))
    frame_ms: int = 20
    bitrate: int = 32000
    host_addresses: list[str] | None = None  # None: every interface address aioice finds
    relay_only: bool = False
    record_dir: str | None = None
    write_ogg: bool = False
    status_path: str | None = None
    expect_peers: int = 0  # stop once this many peers exchanged audio_seconds of audio both ways
    audio_seconds: float = 0.0
    identity: Identity | None = None
    log_packets: str | None = None  # a CSV of (arrival wall time, peer, sequence, timestamp) per media payload
    relay_pairs: int = relay.DEFAULT_PAIRS  # §13.3: pairs of others carried at most (0: never; --relay-only: 0)
    # §15.3: send our media as FAN_OUT through this member (a display name or an identity key's hex prefix) while
    # it can carry it; None: a copy per peer, always (Parley's own choice of when to fan out is not made here).
    fan_out_through: str | None = None


@dataclass
class ReportState:
    """What this side measures about one peer's media, and what the peer said in its REPORTs (§10.1)."""

    last_peer_timestamp: int | None = None
    last_peer_report_at: float = 0.0
    reports_received: int = 0
    peer_media_received: int = 0
    peer_media_expected: int = 0
    peer_loss_permille: int = 0
    peer_queue_delay_ms: int | None = None  # how long our media waits in queues, as the peer's latest REPORT says
    rtt_ms: float | None = None
    smoothed_rtt_ms: float | None = None  # RFC 6298 (α = 1/8), what LINKS reports (§13.1)
    interval_received: int = 0
    interval_first_expected: int = 0
    loss_permille: int = 0  # what the last REPORT said; kept over intervals without media (DTX)
    jitter: float = 0.0  # RFC 3550 §6.4.1, in 48 kHz samples
    last_transit: float | None = None  # seconds: arrival (monotonic) − timestamp / 48 kHz
    last_timestamp: int | None = None  # the latest primary's timestamp, unwrapped
    queue_delay: float | None = None  # §10.1 `queue_delay_ms`, in seconds; None before the first primary
    base_window_start: float | None = None  # arrival that opened the current window of QUEUE_BASE_WINDOW
    base_minimum: float = math.inf  # the lowest transit of the current window ...
    previous_base_minimum: float = math.inf  # ... and of the previous one
    primaries_since_report: int = 0

    def note_primary(self, arrival: float, timestamp: int, duration: int) -> bool:
        """A primary frame (not a copy) of `duration` samples arrived at `arrival`, monotonic seconds. The jitter
        and the queueing delay are both measured on its transit, so they share one clock and one unwrapped
        timestamp. Returns whether the queueing delay just reached QUEUE_BACK_OFF from below (§10.1: report
        at once)."""
        if self.last_timestamp is None:
            extended = timestamp
        else:  # RFC 3550 A.1 style: the unwrapped value nearest the latest (§9.1 timestamps wrap)
            extended = self.last_timestamp + (timestamp - self.last_timestamp + 2**31) % 2**32 - 2**31
        self.last_timestamp = extended
        transit = arrival - extended / audio.RATE
        if self.last_transit is not None:
            d = abs(transit - self.last_transit) * audio.RATE
            if d < audio.RATE:  # a jump of a second is no jitter: the sender started its timestamps anew
                self.jitter += (d - self.jitter) / 16
        self.last_transit = transit
        # §10.1: the queueing delay counts to the frame's end (a sender that lengthens its packets does not look
        # queued); the base is the lowest transit of the last 10–20 s, kept per window of arrivals, so a queue
        # that lasts stays visible for at least one window and a path that got faster is followed.
        end_transit = transit - duration / audio.RATE
        if self.base_window_start is not None and end_transit - min(self.base_minimum,
                                                                     self.previous_base_minimum) > 2.0:
            self.base_window_start, self.queue_delay = None, 0.0  # the sender started its timestamps anew
        if self.base_window_start is None or arrival - self.base_window_start >= QUEUE_BASE_WINDOW:
            first = self.base_window_start is None
            self.previous_base_minimum = end_transit if first else self.base_minimum
            self.base_minimum = end_transit
            self.base_window_start = arrival
        else:
            self.base_minimum = min(self.base_minimum, end_transit)
        base = min(self.base_minimum, self.previous_base_minimum)
        queue = self.queue_delay or 0.0
        self.queue_delay = queue + ((end_transit - base) - queue) / 16
        self.primaries_since_report += 1
        return queue < QUEUE_BACK_OFF <= self.queue_delay

    @property
    def queue_delay_ms(self) -> int | None:
        """Our current estimate for the peer's stream, as `queue_delay_ms` carries it (None: no media yet)."""
        if self.queue_delay is None:
            return None
        return max(0, min(round(self.queue_delay * 1000), control.NO_QUEUE_DELAY - 1))

    def queue_delay_for_report(self) -> int | None:
        """`queue_delay_ms` for the REPORT being sent: None (65535 on the wire) when no media from the peer
        arrived since our previous REPORT on this link, so an estimate is never repeated after media stopped."""
        fresh = self.primaries_since_report > 0
        self.primaries_since_report = 0
        return self.queue_delay_ms if fresh else None


class Link:
    """One peer: its HELLO, the ICE path (one aioice Connection per generation) and the session."""

    def __init__(self, node: Node, peer: bytes, hello: Hello, member_id: int | None, version: int):
        self.node = node
        self.peer = peer
        self.hello = hello
        self.member_id = member_id
        self.version = version
        self.is_lead = node.identity.identity_key < peer
        self.generation = 0
        self.ice: aioice.Connection | None = None  # the current generation's agent
        self.path: aioice.Connection | None = None  # the connected agent carrying packets (maybe older)
        self.remote_credentials_set = False
        self.remote_done = False
        self.local_ready = False
        self.connect_task: asyncio.Task | None = None
        self.tasks: set[asyncio.Task] = set()
        self.session = PeerSession(identity_key=node.identity.identity_key, static_secret=node.identity.static_secret,
                                   peer_identity_key=peer, peer_static_key=hello.static_key,
                                   room_id=node.room_keys.room_id, noise_psk=node.room_keys.noise_psk,
                                   mac_key=node.room_keys.mac_key, version=version)
        self.receive_log = node.receive_logs.setdefault(peer, audio.ReceiveLog())
        self.report = ReportState()
        self.state = "signaling"
        self.carried_traffic = False
        self.queue_reported_at = float("-inf")  # when a REPORT last went early for a queue (§10.1)
        self.ended = False
        self.restart_requested_for: int | None = None
        self.selected_pair: str | None = None
        self.media_sent = 0
        self.next_report_at = time.monotonic() + random.uniform(0.9, 1.1)
        # §13: the route. `relay` is the member our datagrams to this peer go through (None: the direct path).
        self.started_at = time.monotonic()
        self.relay: bytes | None = None
        self.relayed_since: float | None = None
        self.next_probe: float | None = None
        self.probes = 0
        self.last_direct_at: float | None = None  # the last authenticated datagram over the direct path
        self.last_relayed_at: float | None = None  # ... and through a member
        # members that would not relay toward this peer: when, and the §13.3 reason (None: it carried nothing)
        self.refused_by: dict[bytes, tuple[float, int | None]] = {}
        self.peer_links: control.Links | None = None  # the peer's latest LINKS: whom it can relay to
        self.datagrams_via: dict[bytes, int] = {}  # authenticated datagrams received through each member
        self.peer_records = False  # §14.2: the latest RECORDING or REPORT flag bit 1 says the peer records
        self.fan_out_refused_at = float("-inf")  # §15.3: when the peer last refused our fan-out
        self.media_fanned_in = 0  # the peer's frames a member fanned out to us that verified (§15.2)
        self.liveness = liveness.Liveness()  # §10.3: how densely its packets came, and whether its media is fanned

    @property
    def label(self) -> str:
        return f"{self.hello.display_name} ({self.peer.hex()[:8]})"

    # MARK: ICE (§6.6 steps 4–5)

    @property
    def ice_connected(self) -> bool:
        return self.path is not None

    async def start(self, generation: int) -> None:
        """Start (or restart) ICE at `generation`. The connected path of an older generation keeps carrying
        packets until the new one connects (§6.6 step 5)."""
        old = self.ice
        self.generation = generation
        self.remote_credentials_set = self.remote_done = self.local_ready = False
        self.connect_task = None
        self.ice = aioice.Connection(ice_controlling=self.is_lead, components=1, use_ipv6=False,
                                     **self.node.ice_options())
        if old is not None and old is not self.path:
            self._spawn(old.close())  # never connected: nothing to keep
        if not self.session.has_keys:
            self.state = "signaling"
        log.info("link %s: ICE generation %d, %s", self.label, generation,
                 "controlling" if self.is_lead else "controlled")
        await self.node.send_envelope(self, ICECredentials(generation, self.ice.local_username,
                                                           self.ice.local_password))
        self._spawn(self._gather(self.ice, generation))

    async def _gather(self, ice: aioice.Connection, generation: int) -> None:
        await ice.gather_candidates()
        if ice is not self.ice:
            return
        for candidate in ice.local_candidates:
            await self.node.send_envelope(self, ICECandidate(generation, "candidate:" + candidate.to_sdp()))
        await self.node.send_envelope(self, ICECandidatesDone(generation))
        self.local_ready = True
        self._maybe_connect()

    async def on_signal(self, message) -> None:
        generation = getattr(message, "generation", None)
        if isinstance(message, (ICERestart, ICECredentials)) and generation > self.generation:
            await self.start(generation)  # §6.6 step 5: the peer restarted; follow it, once
        if generation != self.generation or self.ice is None:
            return  # another generation's candidates, and older credentials, are ignored
        if isinstance(message, ICECredentials):
            self.ice.remote_username = message.ufrag
            self.ice.remote_password = message.password
            self.remote_credentials_set = True
            self._maybe_connect()
        elif isinstance(message, ICECandidate) and not self.remote_done:
            try:
                # The line may end with libnice's "generation <n> ufrag <u>" extensions; aioice ignores them.
                candidate = Candidate.from_sdp(message.candidate[len("candidate:"):])
            except (ValueError, IndexError):
                log.warning("link %s: unusable candidate ignored", self.label)
                return
            await self.ice.add_remote_candidate(candidate)
        elif isinstance(message, ICECandidatesDone) and not self.remote_done:
            self.remote_done = True
            await self.ice.add_remote_candidate(None)

    def _maybe_connect(self) -> None:
        if self.local_ready and self.remote_credentials_set and self.connect_task is None:
            if not self.session.has_keys:
                self.state = "checking"
            self.connect_task = self._spawn(self._connect(self.ice, self.generation))

    async def _connect(self, ice: aioice.Connection, generation: int) -> None:
        started = time.monotonic()
        try:
            await ice.connect()
        except ConnectionError as error:
            if ice is self.ice and not self.ended:
                self.connect_task = None
                log.warning("link %s: ICE generation %d failed (%s)", self.label, generation, error)
                # §10.3: only the lead restarts on its own; while a member carries the link, §13.4's probe
                # schedule decides when the direct path is tried again.
                if self.is_lead and self.relay is None:
                    await asyncio.sleep(1.0)
                    await self.request_restart()
            return
        if ice is not self.ice:
            await ice.close()  # a newer generation started meanwhile
            return
        old_path, self.path = self.path, ice
        if old_path is not None:
            self._spawn(old_path.close())
        pair = ice._nominated.get(1)  # aioice keeps the selected pair here; read for the status only
        self.selected_pair = f"{pair.local_candidate.type}->{pair.remote_candidate.type}" if pair else None
        log.info("link %s: ICE generation %d connected in %.0f ms (%s)", self.label, generation,
                 (time.monotonic() - started) * 1000, self.selected_pair)
        if not self.session.has_keys:
            self.state = "handshaking"
        self.node.ice_connected_at.setdefault(self.peer, time.time())
        self._spawn(self._receive(ice))
        if self.relay is not None:
            await self.route(None, "the direct path works again")  # §13.4 "Going back"
        now = time.monotonic()
        datagrams = self.session.path_up(now)
        if not datagrams and self.is_lead and generation > 0 and self.session.pending is None:
            datagrams = [self.session.create_initiation(now)]  # a fresh handshake over the new path (§6.6 step 5)
        for datagram in datagrams:
            await self.send_datagram(datagram)

    async def request_restart(self) -> None:
        if self.ended or self.restart_requested_for == self.generation + 1:
            return
        self.restart_requested_for = self.generation + 1
        await self.node.send_envelope(self, ICERestart(self.generation + 1))
        await self.start(self.generation + 1)

    async def _receive(self, ice: aioice.Connection) -> None:
        while True:
            try:
                datagram = await ice.recv()
            except ConnectionError:
                break
            if datagram is None:
                break
            await self.on_datagram(datagram, via=None)
        if ice is self.path:
            self.path = None

    async def on_datagram(self, datagram: bytes, via: bytes | None) -> None:
        """One ICE-path datagram of this link's session, over the direct path (`via` None) or carried by the
        member `via` (§13.2 DELIVER). Either way the session checks it (mac1, Noise, the replay window): what a
        member changed, made up or repeated is dropped here."""
        now = time.monotonic()
        had_keys = self.session.has_keys
        authenticated = self.session.stats.authenticated
        replies, delivered = self.session.receive(datagram, now)
        if self.session.stats.authenticated != authenticated:
            self.liveness.packet(now)  # §10.3: a sign of life of this link (a member's FAN_DELIVER is none)
            await self.note_authenticated(via, now)  # before the replies, which follow the route it chose
        for reply in replies:
            await self.send_datagram(reply)
        if self.session.has_keys and not had_keys:
            await self.send_report(now)  # §10.1: one at once when the session is established
        for inner_type, body in delivered:
            self.carried_traffic = True
            if inner_type == INNER_MEDIA:
                await self.receive_media(body, now)
            elif inner_type == INNER_CONTROL:
                await self.on_control(body)
            elif inner_type == INNER_RELAY and self.version >= 2:  # on a version-1 link: an unknown type
                await self.node.on_relay(self, body)
            elif inner_type == fanout.INNER_FAN_OUT and self.version >= fanout.VERSION:  # below 4: unknown
                await self.node.on_fan_out(self, body, now)

    async def receive_media(self, body: bytes, now: float) -> None:
        """A media payload from this peer: over the session (inner type 0x01), the media of a FAN_OUT the peer
        sent us, or of a FAN_DELIVER that verified (§15.2). All three are the same to §9.2 and §10.1."""
        first = self.receive_log.packets == 0
        queue_rising = self.on_media(body, now)
        if first:
            await self.send_report(now)  # §10.1: and when the first media payload arrives
        elif queue_rising and now - self.queue_reported_at >= QUEUE_REPORT_SPACING:
            self.queue_reported_at = now  # §10.1: and when the peer's media starts to queue
            await self.send_report(now)

    async def send_datagram(self, datagram: bytes | None) -> None:
        """A datagram of this link's session: over the direct path, or through the member the route names."""
        if datagram is None:
            return
        if self.relay is not None:
            through = self.node.links.get(self.relay)
            if through is not None:
                await through.send_relay(RelayPacket(relay.FORWARD, self.peer, datagram))
            return
        path = self.path
        if path is not None:
            try:
                await path.send(datagram)
            except ConnectionError:
                if path is self.path:
                    self.path = None

    async def send_relay(self, packet: RelayPacket) -> None:
        """A relay packet (§13.2) sealed in this link's session: something we ask the peer to carry, or
        something we carry for others to it."""
        if self.version >= 2:
            await self.send_datagram(self.session.seal(INNER_RELAY, packet.encode(), time.monotonic()))

    async def send_control(self, body: bytes) -> None:
        await self.send_datagram(self.session.seal(INNER_CONTROL, body, time.monotonic()))

    # MARK: routes (§13.4)

    @property
    def can_send(self) -> bool:
        return self.path is not None or self.relay is not None

    @property
    def direct_up(self) -> bool:
        """Up over its own direct path (not through a member), version 2: what LINKS lists, and whom this
        node relays between (§13.1, §13.3)."""
        return self.version >= 2 and self.state == "up" and self.relay is None and self.path is not None

    def needs_relay(self, now: float) -> bool:
        """§13.4 "When": lost (a moment after, so a member that lost the same peer says so in its LINKS first),
        or no direct path RELAY_AFTER after the link started."""
        if self.version < 2:
            return False
        if self.state in ("lost", "restarting"):
            last = self.session.last_authenticated_at
            return last is None or now - last >= self.liveness.silence_limit(now) + RELAY_DELAY
        if self.state in ("signaling", "checking", "handshaking"):
            return self.path is None and now - self.started_at >= RELAY_AFTER
        return False

    async def route(self, via: bytes | None, why: str) -> None:
        """Sends this link's datagrams through member `via` from now on (None: over the direct path)."""
        if via == self.relay:
            return
        now = time.monotonic()
        was = self.relay
        self.relay = via
        self.relayed_since = None if via is None else now
        if via is None:
            self.next_probe, self.probes = None, 0
        elif was is None:
            self.next_probe, self.probes = now + PROBE_FIRST, 0
        log.info("link %s: %s (%s)", self.label,
                 "back on the direct path" if via is None else f"through member {via.hex()[:16]}", why)
        if via is not None and not self.session.has_keys and self.session.pending is None:
            # A link that never had a session starts its handshake over the member's path (the lead
            # initiates; the other side starts its timers, §7.5).
            for datagram in self.session.path_up(now):
                await self.send_datagram(datagram)

    async def note_authenticated(self, via: bytes | None, now: float) -> None:
        """§13.4 "Following": the peer's route is a fact about the path. Packets through a member while none
        came directly for FOLLOW_QUIET: ours go through it too. Packets directly again while ICE has a path:
        back to it. Only authenticated datagrams count, so a relay cannot move a route by itself."""
        if via is None:
            self.last_direct_at = now
            if self.relay is not None and self.path is not None:
                await self.route(None, "direct packets again")
            return
        self.last_relayed_at = now
        self.datagrams_via[via] = self.datagrams_via.get(via, 0) + 1
        quiet = self.last_direct_at is None or now - self.last_direct_at >= FOLLOW_QUIET
        if self.relay is None and quiet and via in self.node.links:
            await self.route(via, "the peer's packets come through a member")

    async def probe_direct_path(self, now: float) -> None:
        """§13.4 "Going back": while a member carries the link, its lead restarts ICE now and then."""
        if self.relay is None or not self.is_lead or self.next_probe is None or now < self.next_probe:
            return
        self.probes += 1
        self.next_probe = now + min(PROBE_FIRST * 2**self.probes, PROBE_MAX)
        log.info("link %s: trying the direct path again", self.label)
        await self.request_restart()

    # MARK: media (§9) and control (§10)

    def on_media(self, body: bytes, now: float) -> bool:
        """A media payload that arrived at `now` (monotonic seconds). Returns whether the peer's media just
        started to queue on the way (§10.1: answer with a REPORT at once)."""
        log_ = self.receive_log
        try:
            payload = MediaPayload.parse(body)
        except MediaError:
            log_.packets += 1
            self.node.malformed_media += 1
            return False
        if log_.holds_primary(payload.primary.sequence):
            # The same frame directly and fanned out (§15.3, while the groups change): played once, and counted
            # once, so `media_received` stays a count of the peer's payloads. Directly alone this never happens:
            # the session's replay window makes packets distinct, and a sender never repeats a sequence.
            log_.duplicates += 1
            return False
        log_.packets += 1
        arrived = time.time()
        new_primary = log_.add(payload.primary.sequence, payload.primary.timestamp, payload.primary.duration,
                               payload.primary.opus, arrived, redundant=False)
        for copy in payload.copies:
            log_.add(copy.sequence, copy.timestamp, copy.duration, copy.opus, arrived, redundant=True)
        self.report.interval_received += 1
        queue_rising = new_primary and self.report.note_primary(  # jitter and queueing delay (§10.1)
            now, payload.primary.timestamp, payload.primary.duration)
        if self.node.packet_log is not None:
            self.node.packet_log.write(f"{arrived:.6f},{self.peer.hex()[:16]},{payload.primary.sequence},"
                                       f"{payload.primary.timestamp}\n")
        return queue_rising

    async def on_control(self, body: bytes) -> None:
        message = control.parse(body)
        now = time.monotonic()
        if isinstance(message, control.Report):
            r = self.report
            r.reports_received += 1
            r.last_peer_timestamp = message.timestamp_ms
            r.last_peer_report_at = now
            r.peer_media_received = message.media_received
            r.peer_media_expected = message.media_expected
            r.peer_loss_permille = message.loss_permille
            r.peer_queue_delay_ms = message.queue_delay_ms
            if message.echo_timestamp_ms:
                rtt = (self.node.clock_ms() - message.echo_timestamp_ms - message.echo_delay_ms) % 2**32
                if rtt <= 60000:
                    r.rtt_ms = rtt
                    previous = r.smoothed_rtt_ms
                    r.smoothed_rtt_ms = rtt if previous is None else previous + (rtt - previous) / 8
            if message.media_received > 0:  # §10.1: audio flows both ways
                self.state = "up"
            if self.version >= chat.VERSION:  # §14.2: bit 1 is the recording notice, on version-3 links only
                self.note_recording(bool(message.flags & control.RECORDING_FLAG))
            self.node.note_progress(self)
        elif isinstance(message, security_code.Message):
            await self.node.send_code_messages(self.node.code_agreement.received(message, self.peer))
        elif isinstance(message, control.Links) and self.version >= 2:
            self.peer_links = message
            for key, _ in message.peers:  # §13.3: a "not linked" refusal ends when its LINKS lists the destination
                target = self.node.links.get(key)
                if target is not None and target.refused_by.get(self.peer, (0, None))[1] == relay.NOT_LINKED:
                    del target.refused_by[self.peer]
        elif isinstance(message, control.RelayRefused) and self.version >= 2:
            destination = self.node.links.get(message.destination)
            if message.destination == relay.EVERYONE and self.version >= fanout.VERSION:
                # §15.3: the member will not fan out for us; direct copies again at once, and not it for 30 s.
                log.info("link %s: will not fan out for us (reason %d)", self.label, message.reason)
                self.fan_out_refused_at = now
            elif destination is not None:
                log.info("link %s: will not relay toward %s (reason %d)", self.label, destination.label,
                         message.reason)
                destination.refused_by[self.peer] = (now, message.reason)
        elif isinstance(message, chat.Chat) and self.version >= chat.VERSION:
            for text in self.node.chat_receiver(self).receive(message):
                log.info("chat from %s: %s", self.label, text)
                self.node.chat_messages.append({"from": self.peer.hex(), "name": self.hello.display_name,
                                                "text": text})
            await self.send_control(chat.ChatAck(self.node.chat_receiver(self).received).encode())
        elif isinstance(message, chat.Recording) and self.version >= chat.VERSION:
            self.note_recording(message.records)
        elif isinstance(message, control.Leave):
            log.info("link %s: LEAVE", self.label)
            # The peer stopped: if it heard us (its last REPORT) and we heard it, this link is complete.
            self.node.note_progress(self)
            await self.node.end_link(self, "left")

    def note_recording(self, records: bool) -> None:
        if records != self.peer_records:
            log.info("link %s: %s recording", self.label, "started" if records else "stopped")
        self.peer_records = records

    async def send_report(self, now: float) -> None:
        await self.send_control(self.make_report(now))
        # §11.1: until the code is agreed, the current COMMIT or REVEAL goes with every REPORT.
        repeated = self.node.code_agreement.repeated(self.peer)
        if repeated is not None:
            await self.send_control(repeated.encode())

    def make_report(self, now: float) -> bytes:
        r = self.report
        rl = self.receive_log
        received = rl.packets  # authenticated media packets (the replay window makes them distinct)
        expected = 0 if rl.first is None else rl.highest - rl.first + 1
        interval_expected = expected - r.interval_first_expected
        if interval_expected > 0:  # else the peer sent nothing (DTX): the previous figure stands
            lost = interval_expected - r.interval_received
            r.loss_permille = max(0, min(1000, round(1000 * lost / interval_expected)))
        loss = r.loss_permille
        r.interval_first_expected = expected
        r.interval_received = 0
        echo, delay = 0, 0
        if r.last_peer_timestamp is not None:
            echo = r.last_peer_timestamp
            delay = round((now - r.last_peer_report_at) * 1000)
        # §14.2: every REPORT on a version-3 link says whether we record (this peer does for its whole run when it
        # writes what it hears to files), so a peer learns it within a REPORT interval of any link starting.
        flags = control.RECORDING_FLAG if self.version >= chat.VERSION and self.node.options.record_dir else 0
        return control.Report(self.node.clock_ms(), echo, delay, received, expected, loss,
                              round(r.jitter / audio.RATE * 1e6), flags,
                              queue_delay_ms=r.queue_delay_for_report()).encode()

    async def tick(self, now: float) -> None:
        for datagram in self.session.tick(now):
            await self.send_datagram(datagram)
        if self.session.has_keys and now >= self.next_report_at:
            self.next_report_at = now + random.uniform(0.9, 1.1)
            await self.send_report(now)
        last = self.session.last_authenticated_at
        if last is not None and self.carried_traffic:
            silent = now - last
            limit = self.liveness.silence_limit(now)  # §10.3: 1 s after dense packets, else (or fanned in) 2 s
            if silent >= REMOVE_AFTER:
                log.warning("link %s: nothing for %.0f s; removing the peer", self.label, silent)
                await self.node.end_link(self, "lost")
            elif silent >= limit + RESTART_DELAY:
                self.state = "restarting"
                if self.is_lead:  # §10.3: the other side follows the lead's ICE_RESTART
                    await self.request_restart()
            elif silent >= limit:
                if self.state != "lost":
                    log.info("link %s: lost (nothing for %.1f s)", self.label, silent)
                self.state = "lost"
        if (self.session.has_keys and self.state in ("lost", "restarting") and last
                and now - last < liveness.QUICK_LOST_AFTER):
            self.state = "up" if self.report.reports_received else "handshaking"
            self.restart_requested_for = None

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("link %s: task failed: %r", self.label, task.exception())

    async def close(self) -> None:
        self.ended = True
        for ice in {self.ice, self.path} - {None}:
            await ice.close()
        self.ice = self.path = None
        for task in list(self.tasks):
            if task is not asyncio.current_task():
                task.cancel()

    def status(self) -> dict:
        rl = self.receive_log
        return {
            "peer": self.peer.hex(), "name": self.hello.display_name, "member_id": self.member_id,
            "state": self.state, "lead": self.is_lead, "ice_controlling": self.is_lead, "version": self.version,
            "generation": self.generation, "selected_pair": self.selected_pair,
            # as `parley status`: "peer" while the link goes through a member, `via` its id (16 hex digits)
            "route": "peer" if self.relay else ("direct" if self.path else None),
            "via": self.relay.hex()[:16] if self.relay else None,
            "datagrams_via": {k.hex()[:16]: n for k, n in self.datagrams_via.items()},
            "handshakes": self.session.stats.handshakes_completed, "has_keys": self.session.has_keys,
            "initiations_sent": self.session.stats.initiations_sent,
            "responses_sent": self.session.stats.responses_sent,
            "dropped_datagrams": self.session.stats.dropped,
            "media_sent": self.media_sent, "media_packets_received": rl.packets,
            "frames_received": rl.primaries_received, "frames_recovered_by_copies": rl.recovered_by_copies,
            "reports_received": self.report.reports_received, "rtt_ms": self.report.rtt_ms,
            "peer_media_received": self.report.peer_media_received,
            "peer_media_expected": self.report.peer_media_expected,
            "peer_loss_permille": self.report.peer_loss_permille,
            # §10.1 `queue_delay_ms`: the peer's latest about our stream (None: absent), and ours about its
            "peer_queue_delay_ms": self.report.peer_queue_delay_ms,
            "queue_delay_ms": self.report.queue_delay_ms,
            "recording": self.peer_records,  # §14.2, as `parley status` shows it for a peer
            "media_fanned_in": self.media_fanned_in,  # the peer's frames fanned out to us by a member (§15.2)
            "duplicate_frames": rl.duplicates,  # primaries of frames already held (e.g. directly and fanned out)
        }


class Node:
    def __init__(self, invite: Invite, options: PeerOptions):
        self.invite = invite
        self.options = options
        self.identity = options.identity or Identity.generate()
        self.room_keys = RoomKeys.derive(invite.room_secret)
        self.signaling = Signaling(self.room_keys.room_id, self.room_keys.signaling_key, self.identity)
        self.epoch = new_session_epoch()
        self.links: dict[bytes, Link] = {}
        self.receive_logs: dict[bytes, audio.ReceiveLog] = {}
        self.names: dict[bytes, str] = {}
        self.ice_connected_at: dict[bytes, float] = {}
        self.rendezvous: RendezvousClient | None = None
        self.welcome: Welcome | None = None
        self.malformed_media = 0
        self.dropped_envelopes = 0
        self.started_monotonic = time.monotonic()
        self.joined_at: float | None = None
        self.stopping = asyncio.Event()
        self.finished_reason = "running"
        self.completed: set[bytes] = set()
        self.code_agreement = security_code.SecurityCodeAgreement(
            self.room_keys.room_id, self.identity.identity_key, options.name)
        self.code_view: list[tuple[bytes, str]] | None = None
        self.security_codes: list[dict] = []  # every code agreed (§11.1), with its members
        self.ended_links: dict[bytes, dict] = {}  # the last status of links that ended, by peer
        self.packet_log = open(options.log_packets, "w") if options.log_packets else None
        self.wav_started_at: float | None = None
        self.rendezvous_connected = False
        # §13: what this node carries for others, and the LINKS it last sent.
        self.relay_table = RelayTable(max_pairs=0 if options.relay_only else options.relay_pairs)
        self.links_sent: list[bytes] | None = None
        self.links_sent_at = 0.0
        self.malformed_relay = 0
        self.relay_refusals_sent = 0
        self.mesh_envelopes_sent = self.mesh_envelopes_received = 0  # §13.5, DELIVER_ENVELOPE both ways
        # What outlives a link with one run of a peer (its identity and session epoch, §6.6's link): the receiving
        # end of its chat stream (§14.1) and its fan-out replay window (§15.2).
        self.chat_receivers: dict[tuple[bytes, int], chat.ChatReceiver] = {}
        self.fan_out_windows: dict[tuple[bytes, int], ReplayWindow] = {}
        self.chat_messages: list[dict] = []
        # §15: fanning out for others (the member B), receiving fanned frames, and our own fan-out (the sender A).
        self.fan_out_table = fanout.FanOutTable(relays=self.relay_table.max_pairs > 0)
        self.fan_outs_received = self.fan_outs_passed_on = self.fan_delivers_sent = 0
        self.malformed_fan_outs = 0  # FAN_OUTs not 82–1272 bytes long: dropped (§15.2)
        self.fan_out_refusals_sent = 0
        self.fan_delivers_received = 0  # FAN_DELIVERs whose frame verified and was played
        self.fan_out_dropped: Counter = Counter()  # ... and why the others were dropped (rate, origin, length, replay,
        # signature)
        self.delivery_budget = fanout.DeliveryBudget()  # §15.2 step 0: FAN_DELIVERs checked per member
        self.fan_out_counter = 0  # §15.1: the next signed frame's counter, from 0 in our session epoch
        self.fan_outs_sent = 0
        self.fanning_out_through: bytes | None = None  # the member our media goes through now (status)

    def clock_ms(self) -> int:
        """§10.1 timestamp_ms: monotonic milliseconds mod 2^32, never 0."""
        return int((time.monotonic() - self.started_monotonic) * 1000) % 2**32 or 1

    def hello(self) -> Hello:
        return Hello(self.identity.static_key, self.identity.binding_signature, self.epoch, SUPPORTED_VERSIONS,
                     self.options.name)

    # MARK: ICE servers from the WELCOME and the invite

    def ice_options(self) -> dict:
        options: dict = {}
        welcome = self.welcome
        if welcome and welcome.stun_servers:
            host, _, port = welcome.stun_servers[0].rpartition(":")
            options["stun_server"] = (resolve(host.strip("[]")), int(port))
        turn = self._turn_server()
        if turn:
            (host, port, transport), username, password = turn
            options.update(turn_server=(resolve(host), port), turn_username=username, turn_password=password,
                           turn_transport=transport)
        if self.options.relay_only:
            options["transport_policy"] = TransportPolicy.RELAY
        return options

    def _turn_server(self):
        hints = [(h.server(), h.username, h.password) for h in self.invite.turn_hints if h.username]
        if self.welcome:
            for credential in self.welcome.turn:
                hints.append((TURNHint(TURNHint.parse_uri(credential.url)[3]).server(), credential.username,
                              credential.password))
        udp = [h for h in hints if h[0][2] == "udp"]
        return (udp or hints or [None])[0]

    # MARK: signaling (§6.6)

    async def send_envelope(self, link: Link, message) -> None:
        sealed = self.signaling.seal(message, recipient=link.peer, recipient_static_key=link.hello.static_key)
        await self.send_sealed(link.peer, link.member_id, sealed)

    async def send_sealed(self, peer: bytes, member_id: int | None, sealed: bytes) -> None:
        """Through the rendezvous to the peer's member id; over the mesh (§13.5) while the rendezvous is not
        connected or the peer has no member id (§6.6 step 2: version 1 would not send it at all)."""
        if self.rendezvous_connected and member_id is not None:
            await self._send(member_id, sealed)
        else:
            await self.send_over_mesh(sealed, peer)

    async def _send(self, member_id: int, payload: bytes) -> None:
        try:
            await self.rendezvous.send(member_id, payload)
        except Exception as error:  # a lost rendezvous connection; the run loop reconnects
            log.warning("rendezvous send failed: %s", error)

    async def send_over_mesh(self, envelope: bytes, peer: bytes | None) -> None:
        """§13.5: an envelope over sessions instead of the rendezvous. To one peer: on its own link if that is up,
        else through a member that can relay toward it. To everyone: on every link that is up, and through
        each of them to everyone when some member has no working link with us."""
        reachable = [link for link in self.links.values()
                     if link.version >= 2 and link.session.has_keys and link.state == "up"]
        mine = self.identity.identity_key
        if peer is not None:
            link = self.links.get(peer)
            if link is not None and link in reachable:
                self.mesh_envelopes_sent += 1
                await link.send_relay(RelayPacket(relay.DELIVER_ENVELOPE, mine, envelope))
            elif (through := self.relay_candidate(peer)) is not None:
                await self.links[through].send_relay(RelayPacket(relay.FORWARD_ENVELOPE, peer, envelope))
            else:
                log.info("no way to reach %s without the rendezvous; envelope dropped", peer.hex()[:16])
            return
        unreached = len(reachable) < len(self.links)
        for link in reachable:
            self.mesh_envelopes_sent += 1
            await link.send_relay(RelayPacket(relay.DELIVER_ENVELOPE, mine, envelope))
            if unreached:
                await link.send_relay(RelayPacket(relay.FORWARD_ENVELOPE, relay.EVERYONE, envelope))

    async def on_envelope(self, member_id: int | None, payload: bytes) -> None:
        """An envelope from the rendezvous (`member_id`), or over the mesh (None, §13.5: a HELLO that came
        that way changes no member id)."""
        try:
            received = self.signaling.open(payload)
        except EnvelopeError as error:
            self.dropped_envelopes += 1
            log.info("envelope dropped: %s", error)
            return
        message, peer = received.message, received.sender
        if message is None:
            return
        link = self.links.get(peer)
        if isinstance(message, Hello):
            self.names[peer] = message.display_name
            self.signaling.keep(peer)
            if received.recipient == BROADCAST:
                # §6.6 step 2: answer every broadcast HELLO (the sender may have missed ours), never a unicast one.
                answer_to = member_id if member_id is not None else link.member_id if link is not None else None
                await self.send_sealed(peer, answer_to, self.signaling.seal(self.hello(), recipient=peer))
            if link is not None and link.hello.session_epoch == message.session_epoch:
                if member_id is not None:
                    link.member_id = member_id  # same epoch: only the member id changes
                return
            if link is not None:
                await self.end_link(link, "new session epoch")
            # A new run of the peer knows nothing of an old one's chat stream and counters (§14.1, §15.2).
            for runs in (self.chat_receivers, self.fan_out_windows):
                for key in [key for key in runs if key[0] == peer and key[1] != message.session_epoch]:
                    del runs[key]
            common = set(SUPPORTED_VERSIONS) & set(message.versions)
            if not common:
                log.warning("%s needs another Parley version (%s)", message.display_name, message.versions)
                return
            link = Link(self, peer, message, member_id, max(common))
            self.links[peer] = link
            if link.version < chat.VERSION and self.options.record_dir:
                # §14.2 "Older peers": they cannot be told that we record; our user is told who was not.
                log.warning("%s (version %d) is not told that this peer records", link.label, link.version)
            await link.start(0)
        elif isinstance(message, Bye):
            if link is not None:
                await self.end_link(link, "bye")
        elif link is not None:
            await link.on_signal(message)

    async def end_link(self, link: Link, reason: str) -> None:
        if self.links.get(link.peer) is link:
            del self.links[link.peer]
            self.ended_links[link.peer] = link.status() | {"ended": reason}
            log.info("link %s ended: %s", link.label, reason)
            await link.close()

    def chat_receiver(self, link: Link) -> chat.ChatReceiver:
        return self.chat_receivers.setdefault((link.peer, link.hello.session_epoch), chat.ChatReceiver())

    def fan_out_window(self, link: Link) -> ReplayWindow:
        return self.fan_out_windows.setdefault((link.peer, link.hello.session_epoch), ReplayWindow(REPLAY_WINDOW))

    # MARK: relaying (§13)

    async def on_relay(self, origin: Link, body: bytes) -> None:
        """A relay packet `origin`'s peer sent us over its session (§13.2). FORWARD and FORWARD_ENVELOPE ask us
        to carry something we cannot open; DELIVER, DELIVER_ENVELOPE and FAN_DELIVER carry something to us."""
        try:
            packet = RelayPacket.parse(body, origin.version)
        except WireError:
            self.malformed_relay += 1
            return
        now = time.monotonic()
        source = origin.peer
        if packet.kind == relay.FORWARD:
            refusal = self.relay_table.decide(source, packet.peer, now)
            destination = self.links.get(packet.peer)
            if refusal is None and destination is not None:
                # The datagram, unchanged, sealed in our session with the destination: we cannot read or
                # forge it (the pair's own session authenticates it), only carry or drop it.
                await destination.send_relay(RelayPacket(relay.DELIVER, source, packet.payload))
            elif refusal is not None and refusal.tell:
                self.relay_refusals_sent += 1
                await origin.send_control(control.RelayRefused(packet.peer, refusal.reason).encode())
        elif packet.kind == relay.DELIVER:
            target = self.links.get(packet.peer)
            if target is not None and target is not origin and target.version >= 2:
                await target.on_datagram(packet.payload, via=source)
        elif packet.kind == relay.FORWARD_ENVELOPE:
            if self.relay_table.accept_envelope(source, now):
                for key in self.relay_table.envelope_targets(source, packet.peer):
                    if (target := self.links.get(key)) is not None:
                        await target.send_relay(RelayPacket(relay.DELIVER_ENVELOPE, source, packet.payload))
        elif packet.kind == relay.DELIVER_ENVELOPE:
            self.mesh_envelopes_received += 1
            await self.on_envelope(None, packet.payload)
        elif packet.kind == relay.FAN_DELIVER:
            await self.on_fan_deliver(origin, packet, now)

    # MARK: fan-out (§15)

    async def on_fan_out(self, sender: Link, signed_frame: bytes, now: float) -> None:
        """A FAN_OUT from `sender` (§15.2): its media is the sender's media to us, played whether or not we pass
        it on; then, if we fan out for the sender (§15.3), the signed frame goes on unchanged to every other member
        whose link with us is up directly and speaks version 4. We need not check the signature: they do."""
        self.fan_outs_received += 1
        if not fanout.SIGNED_FRAME_MIN <= len(signed_frame) <= fanout.SIGNED_FRAME_MAX:
            self.malformed_fan_outs += 1  # §15.2: neither played nor passed on (nor refused)
            return
        await sender.receive_media(signed_frame[fanout.MEDIA_OFFSET:], now)
        decision = self.fan_out_table.decide(sender.peer, now)
        if decision.passed_on:
            self.fan_outs_passed_on += 1
            deliver = RelayPacket(relay.FAN_DELIVER, sender.peer, signed_frame)
            # The members our LINKS lists (up over their own direct path) that speak version 4, but the sender.
            for key in sorted(self.fan_out_table.linked - {sender.peer}):
                link = self.links.get(key)
                if link is not None and link.version >= fanout.VERSION and link.session.has_keys:
                    self.fan_delivers_sent += 1
                    await link.send_relay(deliver)
        elif decision.refusal is not None and decision.refusal.tell:
            self.fan_out_refusals_sent += 1
            await sender.send_control(control.RelayRefused(relay.EVERYONE, decision.refusal.reason).encode())

    async def on_fan_deliver(self, via: Link, packet: RelayPacket, now: float) -> None:
        """A FAN_DELIVER from member `via` (§15.2 steps 1–4): played as media from its origin once the origin's
        signature verified over this room and the origin's session epoch, and its counter passed the origin's
        fan-out window. The member authenticated itself (its session), not the frame."""
        if not self.delivery_budget.accept(via.peer, now):
            self.fan_out_dropped["rate"] += 1  # step 0: beyond what honest members send, dropped unchecked
            return
        origin = self.links.get(packet.peer)
        if (origin is None or origin is via or origin.version < fanout.VERSION
                or not origin.session.has_keys):
            self.fan_out_dropped["origin"] += 1
            return
        opened = fanout.open_frame(packet.payload, origin.peer, self.room_keys.room_id,
                                   origin.hello.session_epoch, self.fan_out_window(origin), self.fan_out_dropped)
        if opened is None:
            return
        self.fan_delivers_received += 1
        origin.media_fanned_in += 1
        origin.liveness.fanned_in(now)  # §10.3: judge the origin's link by the 2 s rule; no sign of life for it
        await origin.receive_media(opened[1], now)

    def fan_out_link(self, now: float) -> Link | None:
        """§15.3 "the sender": the member named by `fan_out_through` while it can carry our media: it speaks 4,
        its link is up over its own direct path, its latest LINKS says it relays and lists at least two of our other
        peers (FAN_OUT_COVERS: those that speak version 4 with us, the ones it would pass our frames to), and it has
        not refused our fan-out in the last 30 s. Checked at every frame; None: a copy to every peer. (When to fan
        out is the sender's choice; this peer is told, for tests, and makes none of Parley's.)"""
        wanted = (self.options.fan_out_through or "").lower()
        if not wanted:
            return None
        ordered = [link for _, link in sorted(self.links.items())]
        # A display name first: a short name such as "b" is also the prefix of some identity keys' hex.
        link = next((link for link in ordered if link.hello.display_name.lower() == wanted), None) or next(
            (link for link in ordered if link.peer.hex().startswith(wanted)), None)
        if (link is None or link.version < fanout.VERSION or not link.direct_up or not link.session.has_keys
                or now - link.fan_out_refused_at < fanout.REFUSAL_MEMORY):
            return None
        if link.peer_links is None or not link.peer_links.relays or len(self.fanned_to(link)) < FAN_OUT_COVERS:
            return None
        return link

    def fanned_to(self, through: Link) -> set[bytes]:
        """The peers that get our media only through member `through` (§15.3): those its latest LINKS lists that
        speak version 4 with us. Every other peer gets its own copy."""
        listed = {key for key, _ in through.peer_links.peers} if through.peer_links else set()
        return {key for key in listed - {through.peer}
                if (link := self.links.get(key)) is not None and link.version >= fanout.VERSION}

    async def share_links(self, now: float) -> None:
        """§13.1: LINKS when the set of direct links changes, and every LINKS_INTERVAL anyway; the relay table
        follows the same set (§13.3). They go only to the members in that set: one whose link with us is not
        up yet in our view would be refused (not linked) and then avoid us for 30 s, so it learns of our links
        only once we would carry its packets."""
        direct = sorted(((link.peer, link) for link in self.links.values() if link.direct_up), key=lambda e: e[0])
        keys = [key for key, _ in direct]
        self.relay_table.update(frozenset(keys))
        self.fan_out_table.update(frozenset(keys), self.relay_table.max_pairs > 0)
        self.delivery_budget.keep_only(self.links)
        if keys == self.links_sent and now - self.links_sent_at < LINKS_INTERVAL:
            return
        self.links_sent, self.links_sent_at = keys, now
        entries = tuple((key, control.UNMEASURED_RTT if link.report.smoothed_rtt_ms is None
                         else min(round(link.report.smoothed_rtt_ms), control.UNMEASURED_RTT))
                        for key, link in direct)
        message = control.Links(self.relay_table.max_pairs > 0, entries).encode()
        for _, link in direct:
            await link.send_control(message)

    def can_relay(self, member: bytes, destination: bytes, now: float | None = None) -> bool:
        """§13.4: `member` can carry our datagrams toward `destination`: its own link is up directly, its latest
        LINKS says it relays and lists the destination, and it has no refusal in force (§13.3)."""
        now = time.monotonic() if now is None else now
        through = self.links.get(member)
        if member == destination or through is None or not through.direct_up:
            return False
        links = through.peer_links
        if links is None or not links.relays or links.rtt_to(destination) is None:
            return False
        target = self.links.get(destination)
        refused = target.refused_by.get(member) if target is not None else None
        return refused is None or now - refused[0] >= relay.REFUSAL_MEMORY

    def relay_candidate(self, destination: bytes, exclude: frozenset[bytes] = frozenset()) -> bytes | None:
        """The member with the lowest RTT(us, it) + RTT(it, destination) (unmeasured counts as 1 s)."""
        best: tuple[float, bytes] | None = None
        for key in sorted(self.links):
            if key in exclude or not self.can_relay(key, destination):
                continue
            first = self.links[key].report.smoothed_rtt_ms
            second = self.links[key].peer_links.rtt_to(destination)
            cost = (1000.0 if first is None else first) + (1000.0 if second == control.UNMEASURED_RTT else second)
            if best is None or cost < best[0]:
                best = (cost, key)
        return best[1] if best else None

    async def choose_routes(self, now: float) -> None:
        """§13.4: links without a working direct path go through a member; a member that cannot carry a link
        any more (it left, its link is not up, its LINKS dropped the destination, it refused, or it carried
        nothing for RELAY_TRIAL while the link was not up) is replaced by the next best, or the direct path."""
        for link in list(self.links.values()):
            if link.version < 2:
                continue
            if link.relay is not None:
                via = link.relay
                carried = link.last_relayed_at is not None and now - link.last_relayed_at < RELAY_TRIAL
                if link.state != "up" and now - link.relayed_since >= RELAY_TRIAL and not carried:
                    link.refused_by[via] = (now, None)
                if not self.can_relay(via, link.peer, now):
                    await link.route(self.relay_candidate(link.peer, frozenset({via})),
                                     "the relaying member cannot carry it")
            elif link.needs_relay(now) and (candidate := self.relay_candidate(link.peer)) is not None:
                await link.route(candidate, "no direct path")

    # MARK: the run loop

    async def run(self, timeout: float | None = None) -> str:
        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGTERM, signal.SIGINT):
            # Stopping leaves the meeting (LEAVE, BYE) and writes the recordings and the final status.
            loop.add_signal_handler(signal_number, self.stop, "terminated")
        tasks = [asyncio.create_task(self._rendezvous_loop()), asyncio.create_task(self._media_loop()),
                 asyncio.create_task(self._timer_loop())]
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout)
        except asyncio.TimeoutError:
            self.finished_reason = "timeout"
        if self.finished_reason == "done":
            # Peers stop on our REPORTs: keep going for one more REPORT interval so each gets a fresh one.
            await asyncio.sleep(REPORT_INTERVAL * 1.2)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception():
                log.error("task failed: %r", task.exception())
        await self.leave()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.write_outputs()
        return self.finished_reason

    def stop(self, reason: str) -> None:
        if not self.stopping.is_set():
            self.finished_reason = reason
            self.stopping.set()

    async def _rendezvous_loop(self) -> None:
        backoff = Backoff()
        while True:
            client = RendezvousClient(self.invite, self.room_keys)
            try:
                self.welcome = await client.connect()
                self.rendezvous = client
                self.rendezvous_connected = True
                for link in self.links.values():
                    link.member_id = None  # every member id of the previous connection is void (§4.2)
                if self.joined_at is None:
                    self.joined_at = time.time()
                backoff.attempt = 0
                log.info("joined as member %d with %d others", self.welcome.member_id, len(self.welcome.members))
                await self._send(EVERYONE, self.signaling.seal(self.hello()))
                async for event in client.events():
                    if event.kind == DELIVER:
                        await self.on_envelope(event.member_id, event.payload)
                    elif event.kind == MEMBER_LEFT:
                        for link in list(self.links.values()):
                            if link.member_id == event.member_id and not link.carried_traffic:
                                await self.end_link(link, "left the rendezvous before any traffic")
                    elif event.kind == GOING_AWAY:
                        delay = backoff.after_going_away(event.retry_after_ms)
                        break
                    elif event.kind == MEMBER_JOINED:
                        pass  # the newcomer broadcasts HELLO
                else:
                    delay = backoff.next_delay()
            except RendezvousError as error:
                self.rendezvous_connected = False
                if not error.retryable:
                    log.error("%s", error)
                    self.stop(f"rendezvous: {error}")
                    return
                log.warning("%s", error)
                delay = backoff.next_delay()
            self.rendezvous_connected = False
            await asyncio.sleep(delay)

    async def _media_loop(self) -> None:
        frame = audio.RATE * self.options.frame_ms // 1000
        encoder = audio.make_encoder(self.options.bitrate)
        sequence, timestamp = random.getrandbits(16), random.getrandbits(32)  # RFC 3550 §5.1
        history: list[Frame] = []
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        self.wav_started_at = time.time()
        while True:
            pcm = self.options.source.read(frame)
            worst = max((link.report.peer_loss_permille for link in self.links.values()), default=0) / 1000
            copies = 0 if worst < 0.01 else 1 if worst < 0.05 else 2 if worst < 0.15 else 3  # §9.3
            encoder.packet_loss_perc = min(100, int(-(-100 * worst ** (copies + 1) // 1)))
            opus = encoder.encode(pcm, frame)
            primary = Frame(sequence, timestamp, frame, opus)
            chosen = tuple(history[len(history) - copies:]) if copies else ()
            payload = MediaPayload(primary, chosen)
            while len(payload.encode()) > MAX_PAYLOAD and payload.copies:
                payload = MediaPayload(primary, payload.copies[1:])
            await self.send_media(payload.encode(), time.monotonic())
            history = (history + [primary])[-4:]
            sequence = (sequence + 1) % 2**16
            timestamp = (timestamp + frame) % 2**32
            next_at += frame / audio.RATE
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def send_media(self, body: bytes, now: float) -> None:
        """One media payload to every peer (§9.3), or (§15.3) one signed copy through a member, which is that
        member's copy too, and direct copies to the peers it does not reach."""
        through = self.fan_out_link(now)
        if (through.peer if through else None) != self.fanning_out_through:
            log.info("media: %s", f"fanned out through {through.label}" if through else "a copy per peer")
            self.fanning_out_through = through.peer if through else None
        fanned: set[bytes] = set()
        signed = b""
        if through is not None:
            fanned = self.fanned_to(through)
            signed = fanout.sign_frame(self.identity, self.room_keys.room_id, self.epoch, self.fan_out_counter, body)
            self.fan_out_counter += 1
        for link in list(self.links.values()):
            if link.peer in fanned or not (link.can_send and link.session.has_keys):
                continue
            if link is through:
                packet = link.session.seal(fanout.INNER_FAN_OUT, signed, now)
                self.fan_outs_sent += packet is not None
            else:
                packet = link.session.seal(INNER_MEDIA, body, now)
            if packet:
                link.media_sent += 1
                await link.send_datagram(packet)

    async def _timer_loop(self) -> None:
        while True:
            now = time.monotonic()
            for link in list(self.links.values()):
                await link.tick(now)
            await self.share_links(now)
            await self.choose_routes(now)
            for link in list(self.links.values()):
                await link.probe_direct_path(now)
            for link in list(self.links.values()):
                self.note_progress(link)
            await self._update_security_code()
            if self.options.status_path:
                self.write_status()
            await asyncio.sleep(0.05)

    def note_progress(self, link: Link) -> None:
        """A peer is done once audio_seconds of audio went each way (our count, and its REPORT's)."""
        frames = self.options.audio_seconds * 1000 / self.options.frame_ms
        if link.receive_log.primaries_received >= frames and link.report.peer_media_received >= frames:
            self.completed.add(link.peer)
        if self.options.expect_peers and len(self.completed) >= self.options.expect_peers:
            self.stop("done")

    async def leave(self) -> None:
        """§10.2 LEAVE over every session (after a last REPORT, so peers see what we received), BYE through
        the rendezvous (§6.5)."""
        now = time.monotonic()
        for link in list(self.links.values()):
            await link.send_control(link.make_report(now))
            await link.send_control(control.Leave().encode())
        bye = self.signaling.seal(Bye(0))
        if self.rendezvous_connected:
            await self._send(EVERYONE, bye)
        else:  # §13.5: over the mesh, so members we have no working link with hear it too
            await self.send_over_mesh(bye, None)
        if self.rendezvous is not None:
            await self.rendezvous.close()
        for link in list(self.links.values()):
            await link.close()

    # MARK: outputs

    async def _update_security_code(self) -> None:
        """§11.1: the view is every member with an established session, and this node; each change starts a
        round of the agreement. Records each code once agreed."""
        peers = sorted((p, self.names.get(p, "")) for p, link in self.links.items() if link.session.has_keys)
        if peers != self.code_view:
            self.code_view = peers
            await self.send_code_messages(self.code_agreement.view_changed(peers))
        agreement = self.code_agreement
        if agreement.code is not None and (not self.security_codes
                                          or self.security_codes[-1]["round"] != agreement.round):
            self.security_codes.append({"members": [m.hex() for m in agreement.members], "code": agreement.code,
                                        "round": agreement.round})

    async def send_code_messages(self, outgoing: list) -> None:
        now = time.monotonic()
        for peer, message in outgoing:
            link = self.links.get(peer)
            if link is not None:
                await link.send_control(message.encode())

    def status(self) -> dict:
        return {
            "identity": self.identity.identity_key.hex(), "name": self.options.name, "epoch": self.epoch,
            "room_id": self.room_keys.room_id.hex(),
            "member_id": self.welcome.member_id if self.welcome else None,
            "joined_at": self.joined_at, "wav_started_at": self.wav_started_at,
            "finished": self.finished_reason, "dropped_envelopes": self.dropped_envelopes,
            "malformed_media": self.malformed_media, "malformed_relay": self.malformed_relay,
            "rendezvous_connected": self.rendezvous_connected,
            # §13.3: the pairs this node carries now (as `parley status`'s "relaying"), and how much
            "relay_pairs": self.relay_table.max_pairs,
            "relaying": [[a.hex()[:16], b.hex()[:16]] for a, b in self.relay_table.active_pairs(time.monotonic())],
            "relayed_datagrams": {f"{a.hex()[:16]}-{b.hex()[:16]}": n
                                  for (a, b), n in self.relay_table.forwarded.items()},
            "relay_refusals_sent": self.relay_refusals_sent,
            "mesh_envelopes_sent": self.mesh_envelopes_sent, "mesh_envelopes_received": self.mesh_envelopes_received,
            # §15: as the member B (FAN_OUTs received and passed on, FAN_DELIVERs sent, refusals), as a receiver C
            # (FAN_DELIVERs played; dropped by reason, the forged ones as fan_out_auth_failures), as the sender A.
            "fan_outs_received": self.fan_outs_received, "fan_outs_passed_on": self.fan_outs_passed_on,
            "malformed_fan_outs": self.malformed_fan_outs,
            "fan_outs_over_rate": sum(self.fan_out_table.over_rate.values()),
            "fan_delivers_sent": self.fan_delivers_sent, "fan_out_refusals_sent": self.fan_out_refusals_sent,
            "fanning_out_for": [k.hex()[:16] for k in self.fan_out_table.active_senders(time.monotonic())],
            "fan_delivers_received": self.fan_delivers_received, "fan_out_dropped": dict(self.fan_out_dropped),
            "fan_out_auth_failures": self.fan_out_dropped["signature"],
            "fan_out": self.fanning_out_through.hex()[:16] if self.fanning_out_through else None,
            "fan_outs_sent": self.fan_outs_sent,
            "chat": self.chat_messages,
            "ice_connected_at": {p.hex(): t for p, t in self.ice_connected_at.items()},
            "security_codes": self.security_codes,
            "links": [self.ended_links[p] for p in self.ended_links if p not in self.links]
            + [link.status() for link in self.links.values()],
        }

    def write_status(self, extra: dict | None = None) -> None:
        status = self.status() | (extra or {})
        temporary = self.options.status_path + ".tmp"
        with open(temporary, "w") as f:
            json.dump(status, f, indent=1)
        os.replace(temporary, self.options.status_path)

    def write_outputs(self) -> None:
        if self.packet_log is not None:
            self.packet_log.close()
        extra: dict = {"received": {}}
        for peer, receive_log in self.receive_logs.items():
            pcm, counts = receive_log.decode()
            entry = {"name": self.names.get(peer, ""), "frames": len(receive_log.frames),
                     "packets": receive_log.packets, "first_arrival": receive_log.first_arrival(),
                     "seconds": len(pcm) / audio.RATE, **counts}
            if self.options.record_dir:
                base = os.path.join(self.options.record_dir, peer.hex()[:16])
                audio.write_wav(base + ".wav", pcm)
                entry["wav"] = base + ".wav"
                if self.options.write_ogg:
                    audio.write_ogg(base + ".opus", receive_log)
                    entry["ogg"] = base + ".opus"
            extra["received"][peer.hex()] = entry
        if self.options.status_path:
            self.write_status(extra)


def resolve(host: str) -> str:
    return socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_DGRAM)[0][4][0]


def restrict_host_addresses(addresses: list[str] | None) -> None:
    """aioice offers every interface address but 127.0.0.1 and has no option to choose; loopback tests and
    namespaced hosts need exactly the addresses they name (as the Swift node's local-address restriction)."""
    if addresses is not None:
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: list(addresses)


def seed_for_role(lead: bool, bits: int = 12) -> Identity:
    """An identity whose key starts with `bits` zero bits (lead against almost anyone) or one bits (follower)."""
    while True:
        identity = Identity.generate()
        top = int.from_bytes(identity.identity_key[:4], "big") >> (32 - bits)
        if top == (0 if lead else (1 << bits) - 1):
            return identity
