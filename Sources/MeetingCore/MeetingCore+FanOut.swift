import ControlAPI
import ParleyCore
import ParleyProtocol

/// Where our frames go while one copy goes up (docs/PROTOCOL.md §15): to the member on
/// `via` as FAN_OUT, which passes them to the peers of `covered`; every other link gets its own
/// copy as usual.
public struct FanOutRoute: Sendable, Hashable {
    public var via: LinkID
    public var covered: Set<LinkID>

    public init(via: LinkID, covered: Set<LinkID>) {
        self.via = via
        self.covered = covered
    }
}

/// One copy up (§15.3): a member whose uplink cannot carry a copy per peer at a usable rate
/// sends one signed copy to a member with room, which passes it on. The choice follows the
/// bandwidth estimate (`SendRate`) and the members' LINKS.
extension MeetingCore {
    /// Fan out when the estimate per copy is below this: each copy would be under ~22 kbit/s of
    /// Opus in 40 ms packets, or longer packets (mouth-to-ear) for more.
    static let fanOutBelow = 40_000
    /// With fewer peers, the copies saved are not worth a hop and the signatures.
    static let fanOutMinimumPeers = 3
    /// A member worth fanning out through passes our frames to at least this many others.
    static let fanOutMinimumCovered = 2
    /// One copy up answers a full uplink, seen this recently (`uplinkCongestedAt`); a rate that
    /// one peer's slow downlink holds down is not helped by it (that peer still needs the stream).
    static let uplinkCongestionMemory: Duration = .seconds(20)
    /// What a signed frame adds to a media packet (§15.1).
    public static let fanOutPacketExtra = FanOutFrame.overhead

    /// Chooses, keeps or drops the member our frames fan out through, and tells the data path.
    mutating func chooseFanOut() {
        fanOutStale = false
        var next: [UInt8]?
        if let current = fanOut?.member, coverage(of: current).count >= 1 {
            next = current  // keep it while it is usable (§15.3: going back would need probing)
        } else if configuration.fanOut, let rate = sendRate, rate.limited, rate.estimate < Self.fanOutBelow,
            upPeerCount >= Self.fanOutMinimumPeers,
            uplinkCongestedAt.map({ now - $0 < Self.uplinkCongestionMemory }) ?? false
        {
            next = fanOutCandidate()
        }
        let chosen = next.flatMap { member -> (member: [UInt8], route: FanOutRoute)? in
            guard let via = peers[member]?.link?.id else { return nil }
            return (
                member, FanOutRoute(via: via, covered: Set(coverage(of: member).compactMap { peers[$0]?.link?.id }))
            )
        }
        let route = chosen?.route
        guard route != fanOut?.route else { return }
        let copiesBefore = copiesPerFrame(fanOut?.route)
        let previous = fanOut?.member
        // The peers whose media now comes another way: their transit changed, and the queue
        // they measure is the new path's length until their base catches up (as for a relay).
        let moved = (fanOut?.route.covered ?? []).symmetricDifference(route?.covered ?? [])
        for id in moved { if let key = linkOwners[id] { peers[key]?.link?.routeChangedAt = now } }
        fanOut = chosen
        let copiesAfter = copiesPerFrame(route)
        output.append(.setFanOut(route))
        if var rate = sendRate, copiesBefore != copiesAfter, copiesBefore > 0, copiesAfter > 0 {
            rate.rescale(by: Double(copiesBefore) / Double(copiesAfter), at: now)
            sendRate = rate
            output.append(.setSendRate(rate.limited ? rate.estimate : nil))
        }
        if chosen?.member != previous {
            log(
                .info, chosen == nil ? "sending a copy to every peer again" : "one copy up through a member",
                [
                    "member": chosen.map { peers[$0.member]?.shortID ?? "?" } ?? "-", "copies": "\(copiesAfter)",
                    "covered": "\(route?.covered.count ?? 0)",
                ])
        }
    }

    /// The links that are up: who gets our media.
    var upLinks: [LinkID] {
        sortedPeerKeys.compactMap { key in peers[key]?.link.flatMap { $0.machine.state == .up ? $0.id : nil } }
    }

    /// How many peers' links are up (counted, no list).
    var upPeerCount: Int { peers.values.count { $0.link?.machine.state == .up } }

    /// How many packets one frame of ours costs the uplink: one per peer whose link is up,
    /// one for the fan-out member and its covered peers together.
    func copiesPerFrame(_ route: FanOutRoute?) -> Int {
        let up = upLinks
        guard let route else { return up.count }
        return up.count { $0 != route.via && !route.covered.contains($0) } + 1
    }

    /// The peers `member` would pass our frames to (§15.3), if it can fan out for us at all:
    /// those its latest LINKS lists that speak version 4 with us.
    func coverage(of member: [UInt8]) -> [[UInt8]] {
        guard let peer = peers[member], peer.version >= 4, let link = peer.link, link.established,
            link.machine.state == .up, link.relay == nil, let links = peer.links, links.relays,
            peer.fanOutRefusedAt.map({ now - $0 >= configuration.timing.refusalMemory }) ?? true
        else { return [] }
        return links.peers.map(\.identityKey).filter { $0 != member && (peers[$0]?.version ?? 0) >= 4 }
    }

    /// The member that passes our frames to most of our peers, then the one nearest.
    func fanOutCandidate() -> [UInt8]? {
        var best: (covered: Int, rtt: Double, key: [UInt8])?
        for key in sortedPeerKeys {
            let covered = coverage(of: key).count
            guard covered >= Self.fanOutMinimumCovered else { continue }
            let rtt = peers[key]?.link?.rttMs ?? 1000
            if best.map({ covered > $0.covered || (covered == $0.covered && rtt < $0.rtt) }) ?? true {
                best = (covered, rtt, key)
            }
        }
        return best?.key
    }
}
