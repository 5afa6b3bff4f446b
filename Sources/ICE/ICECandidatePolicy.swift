/// Which candidates a stream offers to its peer and accepts from it. Pure logic, applied to local
/// candidates before they are signalled and to remote ones before libnice sees them: a remote
/// candidate is an address this node will send connectivity checks to, so a peer must not be able
/// to aim them at multicast groups, broadcast, the unspecified address, or (unless wanted) this
/// machine's loopback services.
public struct ICECandidatePolicy: Hashable, Sendable {
    /// Loopback candidates are wanted only when the node itself is restricted to loopback (tests
    /// and meetings on one machine).
    public var allowLoopback: Bool
    /// RFC 6544 ICE-TCP candidates. Off by default: it triples connect time here
    /// (measured with libnice here), and UDP with a TURN/TCP relay covers UDP-blocking networks.
    public var allowTCP: Bool
    /// Offer only relayed candidates, so the peer never learns this node's addresses.
    public var relayOnly: Bool
    /// The most candidates offered and the most accepted per stream and ICE generation. Bounds the
    /// connectivity checks a peer can make this node send (RFC 8445 §5.1.3 asks for a limit).
    public var maxCandidatesPerStream: Int

    public init(
        allowLoopback: Bool = false, allowTCP: Bool = false, relayOnly: Bool = false, maxCandidatesPerStream: Int = 16
    ) {
        self.allowLoopback = allowLoopback
        self.allowTCP = allowTCP
        self.relayOnly = relayOnly
        self.maxCandidatesPerStream = maxCandidatesPerStream
    }

    public enum Side: Sendable { case local, remote }

    /// Why a candidate is refused; nil when it passes. `count` is how many of that side's
    /// candidates the stream already holds in this generation.
    public func rejection(of candidate: ICECandidate, side: Side, count: Int) -> ICECandidateRejection? {
        let address = candidate.address
        if candidate.component != 1 { return .unusedComponent }
        if address.isUnspecified { return .unspecifiedAddress }
        if address.isMulticast { return .multicastAddress }
        if address.isBroadcastOrReserved { return .broadcastAddress }
        if address.isLinkLocal { return .linkLocalAddress }
        if address.isLoopback && !allowLoopback { return .loopbackAddress }
        if case .tcp = candidate.transport, !allowTCP { return .tcpDisabled }
        if side == .local && relayOnly && candidate.kind != .relayed { return .notRelayed }
        if count >= maxCandidatesPerStream { return .tooMany(limit: maxCandidatesPerStream) }
        return nil
    }

    /// What this node signals for `candidate`: in relay-only mode the related address (the mapped
    /// address a relay allocation came from, RFC 5245 §15.1) is replaced by 0.0.0.0 0, as it
    /// would reveal exactly what relay-only mode hides.
    public func signalled(_ candidate: ICECandidate) -> ICECandidate {
        guard relayOnly, candidate.relatedAddress != nil || candidate.relatedPort != nil else { return candidate }
        var scrubbed = candidate
        scrubbed.relatedAddress = IPAddress(bytes: [0, 0, 0, 0])
        scrubbed.relatedPort = 0
        return scrubbed
    }
}

/// Why a candidate was not offered or not accepted.
public enum ICECandidateRejection: Hashable, Sendable, CustomStringConvertible {
    case unusedComponent, unspecifiedAddress, multicastAddress, broadcastAddress, linkLocalAddress
    case loopbackAddress, tcpDisabled, notRelayed
    case tooMany(limit: Int)

    public var description: String {
        switch self {
        case .unusedComponent: "Parley streams have one component (id 1)"
        case .unspecifiedAddress: "the unspecified address (0.0.0.0 or ::) is not a peer address"
        case .multicastAddress: "multicast addresses are not peer addresses"
        case .broadcastAddress: "broadcast and reserved (240.0.0.0/4) addresses are not peer addresses"
        case .linkLocalAddress: "link-local addresses (169.254/16, fe80::/10) are refused"
        case .loopbackAddress: "loopback addresses are refused unless the node runs on loopback only"
        case .tcpDisabled: "ICE-TCP candidates are disabled"
        case .notRelayed: "relay-only mode offers relayed candidates only"
        case .tooMany(let limit): "more than \(limit) candidates for one stream"
        }
    }
}
