import ParleyCore
import ParleyProtocol
import RendezvousWire

/// Everything the meeting knows about one peer: who it is (from its authenticated HELLO), where
/// envelopes reach it, and its link, if any.
struct Peer: Sendable {
    let identity: PeerIdentity
    var name: String
    var epoch: UInt64
    /// The rendezvous member id whose DELIVER carried the peer's latest HELLO (§6.6 step 2); nil
    /// after either side reconnected, until its next HELLO.
    var memberID: RendezvousMemberID?
    /// The protocol version both HELLOs share (§12).
    var version: UInt8
    var link: Link?
    /// The peer's latest LINKS (§13.1): whom it reaches directly, and whether it relays.
    var links: SessionControl.Links?
    /// When it last said it will not pass our frames on (§15.3).
    var fanOutRefusedAt: Instant?
    /// Whether a session with it was ever established: it holds the private key of its identity
    /// (Noise IK proved it). Only verified peers are pinned (§11.2); an unverified one gives way to
    /// the next identity its rendezvous connection presents.
    var verified = false
    /// Whether `watch` was told it has not connected (once per link).
    var reportedNotConnected = false

    var shortID: String { identity.shortID }
}

/// One peer link's whole truth: its lifecycle (`PeerLink`), its ICE generation and signaling,
/// and what the peer's session told us. The data path (ICE stream, session keys, audio channel)
/// lives in the driver under the same `LinkID`; counters for status come from there.
struct Link: Sendable {
    let id: LinkID
    var machine: PeerLink
    /// Our ICE generation for this link (§6.6).
    var generation: UInt32 = 0
    /// Whether the driver was asked for the stream, and whether it exists.
    var pathRequested = false
    var pathCreated = false
    /// Our credentials and the candidates sent in this generation (re-sent on re-addressing).
    var localCredentials: PathCredentials?
    var localCandidates: [String] = []
    var localDone = false
    /// Restarts asked of the driver whose new generation has not begun yet: stream events before
    /// it belong to the old generation.
    var restartsInFlight = 0
    /// The peer's signaling for this generation that arrived before the stream existed.
    var heldRemote: [RemoteSignal] = []
    /// The pair ICE selected (for status).
    var route: PathRoute?
    /// Whether ICE has a working pair in the current generation.
    var directConnected = false
    /// The member this link's datagrams go through (§13), nil when they go over ICE.
    var relay: [UInt8]?
    /// When the link started going through its current relay.
    var relayedSince: Instant?
    /// While relayed: when the lead next tries the direct path, and how many tries failed.
    var nextProbe: Instant?
    var probes = 0
    /// Members that refused to relay toward this peer: when, and why (nil: it was given up on
    /// because it carried nothing).
    var refusedBy: [[UInt8]: (at: Instant, reason: SessionControl.RelayRefusal?)] = [:]
    /// The route of the latest authenticated packet: the member it came through, nil: direct.
    var authenticatedVia: [UInt8]?
    /// When packets last came over the direct path and through a member.
    var lastDirectPacket: Instant?
    var lastRelayedPacket: Instant?
    /// When the link was started (for `relayAfter`).
    let startedAt: Instant
    /// Whether the session has keys (facts `.established` / `.keysLost`).
    var established = false
    var peerReport: SessionControl.Report?
    /// When LINKS (§13.1) last went on this link.
    var linksSentAt: Instant?
    /// When the path changed (another ICE pair, through a member or back): its transit changed too.
    var routeChangedAt: Instant?
    /// Whether the peer records the meeting (§14.2: its latest RECORDING or REPORT flag on this
    /// link; version 3 only). A new link starts from false until the peer says otherwise.
    var peerRecording = false
    var rttMs: Double?
    var nextReport: Instant
    /// When a REPORT last went early because the peer's media started to queue (`.queueRising`).
    var queueReportedAt: Instant?

    init(id: LinkID, machine: PeerLink, now: Instant) {
        self.id = id
        self.machine = machine
        startedAt = now
        nextReport = now
    }

    /// A restart to `generation` was asked of the driver: what we signaled is void.
    mutating func beginRestart(generation: UInt32) {
        self.generation = generation
        directConnected = false
        localCandidates = []
        localDone = false
        heldRemote = []
        restartsInFlight += 1
    }
}
