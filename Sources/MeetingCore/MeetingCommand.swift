public import ControlAPI
public import ParleyProtocol
public import RendezvousWire

/// What the core asks its driver to do, in order. The driver carries each out and feeds back
/// what the core asked to learn (`createPath` → `.path(id, .created)`, …); it never decides
/// anything itself.
public enum MeetingCommand: Sendable {
    // MARK: Rendezvous

    /// Relay a sealed envelope (§6) through the rendezvous.
    case sendEnvelope([UInt8], to: Recipient)

    // MARK: ICE

    /// Create the node's ICE agent with the STUN/TURN services the rendezvous offered (WELCOME),
    /// then answer `.iceAgentReady` or `.iceAgentFailed`. Resolving server names may take time.
    case createICEAgent(services: [RendezvousService])
    /// Create the peer's stream (controlling when `controlling`), its session and its audio
    /// channel; answer `.path(id, .created(credentials))` or `.creationFailed`. `epoch`: the
    /// peer's session epoch (§5.1), which its fanned-out frames are signed for (§15.1).
    case createPath(LinkID, peer: PeerIdentity, protocolVersion: UInt8, epoch: UInt64, controlling: Bool)
    case setRemoteCredentials(LinkID, PathCredentials)
    case addRemoteCandidate(LinkID, line: String)
    case remoteCandidatesDone(LinkID)
    /// ICE restart (§6.6 step 5): answer `.path(id, .restarted(credentials))`. `keepingOldPath`:
    /// the old generation still carries packets until the new one works.
    case restartPath(LinkID, keepingOldPath: Bool)
    /// Forget the link: stream (released in the background), session keys, audio channel.
    case removePath(LinkID)
    /// Send the link's datagrams over ICE (`via` nil) or through the link of the member that
    /// relays them (§13.2). Receiving takes either way at any time.
    case setRoute(LinkID, via: LinkID?)
    /// What this node will carry for others (§13.3): the data path checks every relayed packet
    /// against it.
    case setRelayPolicy(RelayPolicy)

    // MARK: Sessions

    /// The path is up: send what the session held back, and let the pair's lead start the
    /// handshake. `rehandshake`: drop the keys first (after an ICE restart, §6.6 step 5).
    case startSession(LinkID, rehandshake: Bool)
    /// Send a REPORT (§10.1) now. `closesInterval`: this one ends a once-a-second loss
    /// measurement interval (the others, sent while we pause, repeat its figure). `recording`:
    /// flag bit 1, which repeats this node's RECORDING state on a version-3 link (§14.2).
    case sendReport(LinkID, closesInterval: Bool, muted: Bool, recording: Bool)
    /// Send a session control message (LEAVE, LINKS, RELAY_REFUSED …, §10, §13).
    case sendControl(LinkID, SessionControl)
    /// Send an envelope over the mesh (§13.5) on `link`: to that link's peer itself, or for the
    /// peer to forward to `forwardTo` (an identity key; all zeros: to everyone it reaches).
    case sendMeshEnvelope([UInt8], over: LinkID, forwardTo: [UInt8]?)

    // MARK: Audio

    case setMuted(Bool)
    /// The loss the encoder protects against (§9.3), 0...1.
    case setEncoderLoss(Double)
    /// Bits per second the path to each peer takes, headers included (the bandwidth estimate);
    /// nil: no limit, send the configured encoding.
    case setSendRate(Int?)
    /// Send our frames as FAN_OUT through a member, no copy to the peers it covers (§15.3); nil:
    /// a copy to every peer. The encoding fits `MeetingCore.fanOutPacketExtra` more bytes a
    /// packet into the send rate while it does.
    case setFanOut(FanOutRoute?)

    // MARK: The user and the daemon

    case publish(ControlEvent)
    case log(MeetingLog)
    /// Save the room's identity pins (§11.2); off the meeting's loop.
    case savePins(IdentityPins)
    /// The rendezvous admitted us for the first time (`parley join` may answer).
    case admitted
    /// The meeting is over: nil when left, else why it failed. Nothing follows.
    case end(failure: String?)

    /// Who an envelope goes to on the rendezvous.
    public enum Recipient: Sendable, Hashable {
        case member(RendezvousMemberID)
        case everyone
    }
}

/// A log line from the core, for the driver's logger (the core itself does no I/O). Never holds a
/// secret, an invite or an envelope's contents.
public struct MeetingLog: Sendable, Hashable {
    public enum Level: Sendable, Hashable { case debug, info, notice, warning, error }

    public var level: Level
    public var message: String
    public var metadata: [String: String]

    public init(_ level: Level, _ message: String, _ metadata: [String: String] = [:]) {
        self.level = level
        self.message = message
        self.metadata = metadata
    }
}
