/// What a stream reports, in order, on `ICEStream.events`.
public enum ICEStreamEvent: Sendable, Equatable {
    /// A local candidate to trickle to the peer (RFC 8838): send `candidate.line`. Already filtered
    /// by the candidate policy.
    case localCandidate(ICECandidate)
    /// This side found all its candidates: tell the peer "end of candidates" (RFC 8838 §4.4), which
    /// the peer passes to `ICEAgent.remoteCandidatesDone`.
    case localCandidatesDone
    case stateChanged(ICEConnectionState)
    /// The pair media now flows on; it may change while checks continue (aggressive nomination).
    case selectedPair(ICECandidatePair)
    /// A restart began a new generation; the new credentials and candidates follow.
    case restarted(generation: Int)
}

/// A stream's connectivity (libnice's component states, RFC 5245 §7.1.3.3 checklist states).
public enum ICEConnectionState: Sendable, Equatable, CustomStringConvertible {
    case gathering
    /// Connectivity checks are running.
    case connecting
    /// A pair works: datagrams flow. Checks may still improve the pair.
    case connected
    /// Checks concluded on the nominated pair.
    case ready
    /// No pair works, or a working path stopped answering; the reason says which.
    case failed(ICEFailure)
    case disconnected

    /// Whether datagrams can be sent now.
    public var isConnected: Bool { self == .connected || self == .ready }

    public var description: String {
        switch self {
        case .gathering: "gathering"
        case .connecting: "connecting"
        case .connected: "connected"
        case .ready: "ready"
        case .failed(let failure): "failed: \(failure)"
        case .disconnected: "disconnected"
        }
    }
}

/// Whether traffic goes straight between the peers or through a TURN relay.
public enum ICERoute: String, Sendable, Hashable, CustomStringConvertible {
    case direct, relayed
    public var description: String { rawValue }
}

/// The local and remote candidate media flows between.
public struct ICECandidatePair: Sendable, Hashable, CustomStringConvertible {
    public var local: ICECandidate
    public var remote: ICECandidate

    public init(local: ICECandidate, remote: ICECandidate) {
        self.local = local
        self.remote = remote
    }

    public var route: ICERoute { local.kind == .relayed || remote.kind == .relayed ? .relayed : .direct }

    /// e.g. "srflx → prflx (direct)".
    public var description: String { "\(local.kind) → \(remote.kind) (\(route))" }
}
