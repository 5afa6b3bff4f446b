/// Why a stream failed. libnice only says "failed"; the reason is diagnosed from what the stream
/// knows (its candidates, the peer's, what is configured), so the user is told what to change.
public enum ICEFailure: Sendable, Hashable, CustomStringConvertible {
    /// The peer's credentials never arrived: signaling is broken or the peer is gone.
    case noRemoteCredentials
    /// The peer's credentials arrived but none of its candidates did (or all were refused).
    case noRemoteCandidates
    /// A TURN server is configured but no relayed candidate was gathered: the relay is unreachable
    /// or refused the credentials.
    case relayUnavailable
    /// Every check failed and neither side had a relay: the NATs between the peers (symmetric, or a
    /// firewall dropping UDP) leave no direct path. A TURN server fixes this.
    case noDirectPathNeedsRelay
    /// Every check failed although a relay was available on some side.
    case checksFailed
    /// The path worked, then stopped answering (RFC 7675 consent expired): the peer left or a NAT
    /// mapping changed. An ICE restart may recover it.
    case connectionLost

    public var description: String {
        switch self {
        case .noRemoteCredentials: "the peer's ICE credentials never arrived"
        case .noRemoteCandidates: "no usable candidate arrived from the peer"
        case .relayUnavailable:
            "no relayed candidate: the TURN server did not answer or refused the credentials"
        case .noDirectPathNeedsRelay:
            "no direct path between the peers' networks (symmetric NAT or a firewall) and no TURN relay to fall back on"
        case .checksFailed: "every connectivity check failed, relays included"
        case .connectionLost: "the connection stopped answering (consent expired); restart ICE"
        }
    }

    /// What a failed stream knew when it failed.
    public struct Facts: Sendable, Hashable {
        public var wasConnected: Bool
        public var hasRemoteCredentials: Bool
        public var remoteCandidateKinds: Set<ICECandidate.Kind>
        public var localCandidateKinds: Set<ICECandidate.Kind>
        public var relayConfigured: Bool

        public init(
            wasConnected: Bool, hasRemoteCredentials: Bool, remoteCandidateKinds: Set<ICECandidate.Kind>,
            localCandidateKinds: Set<ICECandidate.Kind>, relayConfigured: Bool
        ) {
            self.wasConnected = wasConnected
            self.hasRemoteCredentials = hasRemoteCredentials
            self.remoteCandidateKinds = remoteCandidateKinds
            self.localCandidateKinds = localCandidateKinds
            self.relayConfigured = relayConfigured
        }
    }

    /// The most specific reason the facts support, checked from the cause nearest the user.
    public static func diagnose(_ facts: Facts) -> ICEFailure {
        if facts.wasConnected { return .connectionLost }
        if !facts.hasRemoteCredentials { return .noRemoteCredentials }
        if facts.remoteCandidateKinds.isEmpty { return .noRemoteCandidates }
        if facts.relayConfigured && !facts.localCandidateKinds.contains(.relayed) { return .relayUnavailable }
        if !facts.localCandidateKinds.contains(.relayed) && !facts.remoteCandidateKinds.contains(.relayed) {
            return .noDirectPathNeedsRelay
        }
        return .checksFailed
    }
}
