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
    /// How many pairs of other members this node relays for at most (§13; 0: never).
    public var maximumRelayedPairs = 4
    /// Whether this node may send one signed copy of its voice through a member when its uplink
    /// cannot carry one per peer (§15; `parleyd --no-fan-out`: never, so every frame stays
    /// deniable).
    public var fanOut = true
    /// Identities never seen before that may start links: a burst of `newIdentityBurst` (a whole
    /// meeting joining at once), then `newIdentityRate` per second. HELLOs from fresh identities
    /// beyond that are dropped, so a flood of them (issue 15, finding 3) costs each member at most
    /// a few links and envelopes a second instead of hundreds.
    public var newIdentityBurst = 16.0
    public var newIdentityRate = 1.0
    /// The send-side bandwidth estimate's range, bits per second per peer with headers (`SendRate`):
    /// the configured encoding's rate and the least the encoder can fit into; nil: send at the
    /// configured encoding whatever the peers report (`parleyd --fixed-rate`).
    public var sendRateRange: ClosedRange<Int>?
    /// At most this many pins (§11.2) in the room's pins file; members met later are not pinned.
    public var maximumPins = 1024
    /// Seeds the core's own randomness (REPORT interval jitter), so a simulation is repeatable.
    public var randomSeed: UInt64

    /// Throws for a display name or epoch that §6.5.1 does not allow.
    public init(
        identity: NodeIdentity, keys: RoomKeys, displayName: String, sessionEpoch: UInt64,
        protocolVersions: [UInt8] = [1, 2, 3, 4], firstEnvelopeSequence: UInt64, randomSeed: UInt64
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
    /// REPORTs go out every `reportInterval` ± `reportJitter` (§10.1), and every
    /// `pausedReportInterval` to all links together while DTX holds our media back: REPORTs are
    /// then the only packets a peer gets, and losing one or two must not make it call the link lost.
    public var reportInterval: Duration = .milliseconds(1000)
    public var reportJitter: Duration = .milliseconds(100)
    public var pausedReportInterval: Duration = .milliseconds(250)
    /// A link answers its peer's media starting to queue with a REPORT at once, at most this often
    /// (a sender lowers its rate at most once a second, so more would tell it nothing new).
    public var queueReportSpacing: Duration = .milliseconds(500)
    /// The data path reports authenticated packets at most this often per link (liveness is
    /// judged in seconds; a fact per packet would wake the meeting 50 times a second per peer).
    public var authenticatedFactInterval: Duration = .milliseconds(250)
    /// How long the member set must stay the same before the security code is recomputed and
    /// published (a join of many at once settles first; `verify` computes it at once if asked).
    public var securityCodeSettle: Duration = .milliseconds(100)
    /// A link that has no direct path this long after it started goes through a member that
    /// reaches both ends (§13), while ICE keeps trying; a link that was up does so as soon as
    /// it is lost.
    public var relayAfter: Duration = .seconds(2)
    /// A lost link goes through a member this long after it was lost (the members' LINKS catch up
    /// with a peer that froze or crashed for everyone in about a round trip) …
    public var relayDelay: Duration = .milliseconds(300)
    /// … and leaves a member that has not brought it up this long after it started carrying it.
    public var relayTrial: Duration = .seconds(2)
    /// While a link goes through a member, its lead tries the direct path again (an ICE restart)
    /// this long after, then twice as long after each attempt that fails, up to once a minute.
    public var probeInterval: Duration = .seconds(5)
    public var maximumProbeInterval: Duration = .seconds(60)
    /// LINKS (§13.1) go out when the set of direct links changes, and this often anyway (RTTs).
    public var linksInterval: Duration = .seconds(5)
    /// A member that refused to relay toward a peer is not asked again for this long.
    public var refusalMemory: Duration = .seconds(30)
    /// Inputs this much later than the core's own deadline mean the process was stopped (a
    /// suspended laptop, SIGSTOP): every path is suspect, so every link restarts.
    public var resumeAfter: Duration = .seconds(3)
    /// A peer whose session has not come up this long after its HELLO is shown in `verify` and
    /// `watch` as someone who has the invite but is not in the meeting (a lurker, or a member
    /// whose network blocks every path).
    public var notConnectedAfter: Duration = .seconds(10)

    public init() {}
}
