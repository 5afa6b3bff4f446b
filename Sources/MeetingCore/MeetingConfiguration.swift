public import ParleyProtocol

/// Who this node is in the meeting, and the core's timers.
public struct MeetingConfiguration: Sendable {
    public let identity: NodeIdentity
    public var keys: RoomKeys
    /// What this node announces (§6.5.1): its identity, session epoch (random, non-zero, new at
    /// every start, §5.1), protocol versions (§12) and display name, checked once here.
    public let hello: Hello
    public var displayName: String { hello.displayName }
    /// The first envelope sequence number (§6.4: the wall clock in microseconds at start).
    public var firstEnvelopeSequence: UInt64
    /// Whether the audio engine holds quiet frames back (§9.3); affects when a link is up (§10.1).
    public var dtx = true
    public var timing = MeetingTiming()
    /// Seeds the core's own randomness (REPORT interval jitter), so a simulation is repeatable.
    public var randomSeed: UInt64

    /// Throws for a display name or epoch that §6.5.1 does not allow.
    public init(
        identity: NodeIdentity, keys: RoomKeys, displayName: String, sessionEpoch: UInt64,
        protocolVersions: [UInt8] = [1], firstEnvelopeSequence: UInt64, randomSeed: UInt64
    ) throws(EnvelopeError) {
        self.identity = identity
        self.keys = keys
        hello = try Hello(
            identity: identity.peerIdentity, sessionEpoch: sessionEpoch, protocolVersions: protocolVersions,
            displayName: displayName)
        self.firstEnvelopeSequence = firstEnvelopeSequence
        self.randomSeed = randomSeed
    }
}

/// The meeting's timers. The defaults are what docs/PROTOCOL.md §10 describes.
public struct MeetingTiming: Sendable, Equatable {
    public var link = PeerLink.Timing()
    /// REPORTs go out every `reportInterval` ± `reportJitter` (§10.1), and at least every
    /// `pausedReportInterval` while DTX holds our media back: REPORTs are then the only packets a
    /// peer gets, and losing one or two must not make it call the link lost.
    public var reportInterval: Duration = .milliseconds(1000)
    public var reportJitter: Duration = .milliseconds(100)
    public var pausedReportInterval: Duration = .milliseconds(250)
    /// The data path reports authenticated packets at most this often per link (liveness is
    /// judged in seconds; a fact per packet would wake the meeting 50 times a second per peer).
    public var authenticatedFactInterval: Duration = .milliseconds(250)
    /// How long the member set must stay the same before the security code is recomputed and
    /// published (a join of many at once settles first; `verify` computes it at once if asked).
    public var securityCodeSettle: Duration = .milliseconds(100)

    public init() {}
}
