public import ParleyCore
public import ParleyProtocol
public import RendezvousWire

/// One peer link (an ICE stream, a session and an audio channel for one peer in one session
/// epoch). Ids are never reused within a meeting, so a late fact about a removed link is
/// recognisably stale.
public struct LinkID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let value: Int

    public init(_ value: Int) { self.value = value }

    public static func < (lhs: LinkID, rhs: LinkID) -> Bool { lhs.value < rhs.value }
    public var description: String { "link-\(value)" }
}

/// Everything that can happen to a meeting, as the core sees it: facts from the rendezvous, the
/// ICE agent, the encrypted sessions and the audio engine, the user's requests, and time passing.
/// The driver feeds them in the order they happened, each with the current time.
public enum MeetingInput: Sendable {
    /// The meeting starts (the rendezvous client is connecting).
    case start

    // MARK: Rendezvous (docs/PROTOCOL.md §4)

    /// Admitted to the room; `reconnected` after a lost connection (member ids before it are void).
    case rendezvousJoined(RendezvousWelcome, reconnected: Bool)
    case rendezvousMemberJoined(RendezvousMemberID)
    case rendezvousMemberLeft(RendezvousMemberID)
    /// An envelope (§6) relayed by the rendezvous from a member.
    case rendezvousDelivered(from: RendezvousMemberID, payload: [UInt8])
    /// The connection was lost; the client reconnects by itself.
    case rendezvousDisconnected(reason: String)
    /// The client stopped for good: nil after the meeting cancelled it, else why (e.g. room full).
    case rendezvousStopped(reason: String?)

    // MARK: ICE (answers to `createICEAgent`, `createPath`, `restartPath`, and stream events)

    /// The node's ICE agent exists (answer to `.createICEAgent`), or could not be made.
    case iceAgentReady
    case iceAgentFailed(String)
    case path(LinkID, PathFact)

    // MARK: Encrypted sessions (§7–§10), pushed by the data path as they happen

    case session(LinkID, SessionFact)

    // MARK: Audio engine

    case audio(AudioFact)

    // MARK: The user (control API)

    case setMuted(Bool)
    /// This node started (true) or stopped recording the meeting: every version-3 peer is told
    /// (RECORDING, §14.2). The driver feeds it once the file is open, and as it stops writing.
    case setRecording(Bool)
    /// Leave the meeting: LEAVE over every session, BYE through the rendezvous, then end.
    case leave

    // MARK: The node's own network

    /// An address of this machine appeared or went away (Wi-Fi to wired, a VPN, a new lease):
    /// every path may be dead, so every link restarts ICE.
    case localAddressesChanged

    /// Nothing happened but time passed: the driver's timer fired at (or after) `nextDeadline`.
    case tick
}

/// What an ICE stream did. Events of a stream carry the agent generation they came from (the
/// number of restarts the driver had carried out when the event was emitted), so the core can
/// drop what an earlier generation still had in flight.
public enum PathFact: Sendable, Hashable {
    /// The stream exists (answer to `createPath`) with these local credentials.
    case created(PathCredentials)
    /// The stream could not be created.
    case creationFailed(String)
    /// A restart began a new generation with these credentials (answer to `restartPath`).
    case restarted(PathCredentials)
    /// The restart could not be carried out; the stream has no working generation.
    case restartFailed(String)
    /// The agent moved to a new generation: events before this belong to the old one.
    case generationBegan
    /// A local candidate line to trickle to the peer (RFC 8838), with the ufrag it belongs to.
    case localCandidate(line: String, ufrag: String?)
    case localCandidatesDone
    /// The stream found a working pair (connected or ready).
    case connected
    /// ICE gave up on this generation, with the agent's diagnosis.
    case failed(String)
    /// The pair media now flows on.
    case selectedPair(PathRoute)
}

/// Local ICE credentials of one generation (RFC 8445 §5.3).
public struct PathCredentials: Sendable, Hashable {
    public var ufrag: String
    public var password: String
    public init(ufrag: String, password: String) {
        self.ufrag = ufrag
        self.password = password
    }
}

/// How a selected pair reaches the peer, for status.
public struct PathRoute: Sendable, Hashable {
    /// `host`, `srflx`, `prflx` or `relay`: the kind of the peer's candidate media flows to, or
    /// `relay` when either side goes through a TURN relay.
    public var kind: String

    public init(kind: String) { self.kind = kind }
}

/// What a peer's encrypted session learned, pushed by the data path (the ICE receive thread, or
/// the driver running the session's timers).
public enum SessionFact: Sendable, Hashable {
    /// The first keys of this session work both ways (§8.6).
    case established
    /// A new handshake replaced the keys without interrupting traffic.
    case rekeyed
    /// The session has no keys any more: handshake attempts timed out, keys expired, or it was
    /// torn down.
    case keysLost(String)
    /// An authenticated packet arrived, over the direct path (`via` nil) or relayed by the member
    /// with identity key `via` (§13): the link's first, the first over a new route, or the first
    /// after a silence of more than two `MeetingTiming.authenticatedFactInterval`s (news for a
    /// link that may be lost). The data path says it at once.
    case authenticated(via: [UInt8]?)
    /// Authenticated packets keep arriving over the route of the latest `.authenticated`; the
    /// latest of them came at `at`, `spacing` after the packet before it that a fact or REPORT
    /// spoke for (how densely they come). Said at most every `MeetingTiming.authenticatedFactInterval`,
    /// and not urgent: a driver may hold it until the meeting next wakes for anything else, as
    /// long as it hands it over before any other input (the timer's above all), so that liveness
    /// is judged on it; the core runs no timers for it, so that no link's silence is judged before
    /// every held fact is in. With media flowing, packets then wake the meeting only for what they say.
    case stillAuthenticated(at: Instant, spacing: Duration)
    /// A REPORT (§10.1) arrived; `rttMs` is the smoothed round-trip time it let us measure.
    /// `mediaSent` is how many media payloads we have sealed for this peer so far. It counts as
    /// an authenticated packet over the route of the latest `.authenticated` (which comes first
    /// whenever the route changes), so neither fact is said beside it. Once we have sent the peer
    /// media, a REPORT that only repeats the last one said (a DTX pause's, every 250 ms) is said
    /// as `.stillAuthenticated` instead, until a `MeetingTiming.reportInterval` has passed.
    case report(SessionControl.Report, rttMs: Double?, mediaSent: UInt64)
    /// The first media payload of this link arrived (answer with an early REPORT, §10.1).
    case firstMedia
    /// The peer's media comes through a member that passes it on (§15.2): over this link's own
    /// path come only its REPORTs, about once a second. Said at most once a `reportInterval`.
    case mediaPassedOn
    /// The peer's media started to queue on the way: our estimate of its queueing delay reached
    /// `QueueDelayEstimate.backOffMilliseconds` (answer with an early REPORT, §10.1). The data path
    /// says it, from the jitter buffer's estimate.
    case queueRising
    /// The peer said LEAVE (§10.2).
    case leave
    /// The peer's LINKS (§13.1): whom it reaches, and whether it relays.
    case links(SessionControl.Links)
    /// The peer will not relay to `destination` (§13.3).
    case relayRefused(destination: [UInt8], reason: SessionControl.RelayRefusal)
    /// A signaling envelope (§6) that came over the mesh instead of the rendezvous (§13.5): from
    /// this peer, or relayed by it.
    case meshEnvelope([UInt8])
    /// A COMMIT or REVEAL of the security code agreement (§11.1).
    case securityCode(SecurityCodeMessage)
    /// A piece of a chat message from this peer, and its acknowledgement of ours (§14.1).
    case chat(SessionControl.Chat)
    case chatAck(cumulative: UInt32)
    /// The peer's RECORDING (§14.2): whether it records the meeting from now on.
    case recording(Bool)
}

/// What the audio engine reports.
public enum AudioFact: Sendable, Hashable {
    /// A device failed; the engine stopped. The meeting goes on without sound.
    case failed(String)
    /// The engine could not start.
    case unavailable(String)
    /// DTX (§9.3) started or ended a pause: while paused, this node sends no media.
    /// `noMediaSentOn`: the links whose sessions have sealed no media yet (§10.1: once the pause
    /// begins, a peer that has reported on such a link is up).
    case paused(Bool, noMediaSentOn: Set<LinkID>)
}

extension MeetingInput {
    /// `.stillAuthenticated`, which a driver hands over just before its next other input.
    var isHeldLiveness: Bool {
        if case .session(_, .stillAuthenticated) = self { true } else { false }
    }

    /// An authenticated packet or a REPORT: the bulk of a meeting's inputs. They change what the
    /// mesh upkeep reads only by moving a link's state or route, which flags it themselves.
    var isPacketFact: Bool {
        guard case .session(_, let fact) = self else { return false }
        switch fact {
        case .authenticated, .stillAuthenticated, .report, .mediaPassedOn: return true
        default: return false
        }
    }
}
