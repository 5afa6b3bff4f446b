public import ControlAPI
import ParleyCore
import ParleyProtocol

/// What the core shows of the meeting (`parley status`, `parley verify`): pure reads of its
/// state. Counters of the data path (traffic, loss, jitter) are the driver's to add.
extension MeetingCore {
    /// One peer link as status shows it.
    public struct LinkView: Sendable, Hashable {
        public var id: LinkID
        public var peerID: String
        public var name: String
        public var state: LinkState
        /// How the peer is reached: the ICE route (`host`, `srflx`, `prflx`, `relay`), or `peer`
        /// while the link goes through a member.
        public var route: String?
        /// The short id of that member.
        public var via: String?
        /// Why the link is not up, if it is not.
        public var reason: String?
        public var rttMs: Double?
        /// Whether the peer says it records the meeting (§14.2).
        public var recording = false
        /// How long our media waits in queues on the way to the peer, as its latest REPORT says.
        public var queueDelayMs: UInt16?
    }

    /// The bandwidth estimate as status shows it (nil: `--fixed-rate`); the encoding that fits it
    /// is the audio engine's to add.
    public var sendRateView: SendRateView? {
        sendRate.map { rate in
            let congested = rate.congested(at: now)
            return SendRateView(
                estimateKbps: Double(rate.estimate) / 1000, limited: rate.limited,
                peersReceiving: upPeerCount,
                streams: copiesPerFrame(fanOut?.route),
                congested: peers.filter { congested.contains($0.key) }.map(\.value.shortID).sorted(),
                fanOut: fanOut.flatMap { peers[$0.member]?.shortID })
        }
    }

    public struct SendRateView: Sendable, Hashable {
        public var estimateKbps: Double
        public var limited: Bool
        public var peersReceiving: Int
        /// Packets one frame costs the uplink: `peersReceiving`, or fewer while fanning out.
        public var streams: Int
        public var congested: [String]
        /// The member our frames fan out through (§15), nil: a copy to every peer.
        public var fanOut: String?
    }

    public var meetingState: MeetingState { admitted ? .inMeeting : .joining }
    public var rendezvousState: RendezvousConnectionState { rendezvous }

    /// The security code (`parley status`), or why there is none yet: the agreement (§11.1)
    /// shows a code once every member's nonce is in. While the member set has just changed and
    /// its new round has not begun (`securityCodeSettle`), the last code no longer covers everyone
    /// present, so it is not shown.
    public var securityCode: String {
        switch codeAgreement.state {
        case .agreed where codeViewDue != nil: return "settling"
        case .agreed(let code): return code.description
        case .settling(let waiting):
            if waiting.isEmpty { return "settling" }
            let names = waiting.map { peers[$0]?.name ?? hexString($0.prefix(8)) }.sorted()
            return "settling (waiting for \(names.joined(separator: ", ")))"
        case .unavailable(let reason): return "unavailable: \(reason)"
        }
    }

    /// Every link, by peer name.
    public var links: [LinkView] {
        peers.values.compactMap { peer -> LinkView? in
            guard let link = peer.link else { return nil }
            let via = link.relay.flatMap { peers[$0]?.shortID }
            return LinkView(
                id: link.id, peerID: peer.shortID, name: peer.name, state: link.machine.state,
                route: via == nil ? link.route?.kind : Self.relayedRoute, via: via,
                reason: link.machine.state == .up ? nil : link.machine.reason, rttMs: link.rttMs,
                recording: link.peerRecording, queueDelayMs: link.peerReport?.queueDelayMs)
        }.sorted { ($0.name, $0.id) < ($1.name, $1.id) }
    }

    /// A member's short id and name, for status (e.g. the pairs this node relays for).
    public func member(_ identityKey: [UInt8]) -> (id: String, name: String)? {
        peers[identityKey].map { ($0.shortID, $0.name) }
    }

    /// The code to read aloud now and whom it covers: this node and every peer with keys.
    public func verification() -> Verification {
        var covered = [
            Verification.Member(id: configuration.identity.peerIdentity.shortID, name: configuration.displayName)
        ]
        for peer in peers.values.sorted(by: { $0.name < $1.name }) where peer.link?.established == true {
            covered.append(Verification.Member(id: peer.shortID, name: peer.name))
        }
        var recorders = recording ? [covered[0]] : []
        for peer in peers.values.sorted(by: { $0.name < $1.name }) where peer.link?.peerRecording == true {
            recorders.append(Verification.Member(id: peer.shortID, name: peer.name))
        }
        return Verification(
            securityCode: securityCode, members: covered,
            notConnected: notConnectedPeers.map { Verification.Member(id: $0.shortID, name: $0.name) },
            recording: recorders)
    }

    /// Peers in the room that never established a session although their link started
    /// `notConnectedAfter` ago (finding 10), by name.
    var notConnectedPeers: [Peer] {
        peers.values.filter { peer in
            guard let link = peer.link, !peer.verified else { return false }
            return now - link.startedAt >= configuration.timing.notConnectedAfter
        }.sorted { ($0.name, $0.shortID) < ($1.name, $1.shortID) }
    }
}
