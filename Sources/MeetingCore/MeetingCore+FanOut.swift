import ControlAPI
import ParleyCore
import ParleyProtocol

/// Where our frames go while one copy goes up (docs/PROTOCOL.md §15): to the member on
/// `via` as FAN_OUT, which passes them to the peers of `covered`; every other link gets its own
/// copy as usual.
public struct FanOutRoute: Sendable, Hashable {
    public var via: LinkID
    public var covered: Set<LinkID>
    /// The covered links a probe (`FanOutProbe`) sends their own copy as well, for now.
    public var probing: Set<LinkID>

    public init(via: LinkID, covered: Set<LinkID>, probing: Set<LinkID> = []) {
        self.via = via
        self.covered = covered
        self.probing = probing
    }

    /// The links that get no copy of their own.
    public var passedOn: Set<LinkID> { covered.subtracting(probing) }
}

/// The order a frame's own copies go out in: each frame starts one peer further on. An overfull
/// uplink drops what it is sent last, so in a fixed order the same peers would lose nearly every
/// frame — and, hearing nothing for a second, call the link lost — while the first ones lost
/// none; turning, every peer loses about the same share (which is also what the bandwidth
/// estimate reads as the path's loss). The member's signed copy (§15.3) still goes first.
public struct CopyOrder: Sendable {
    @usableFromInline var turn = 0

    public init() {}

    /// Calls `body` with each of `copies`, starting one further on than the previous frame.
    /// Inlinable: it runs on the capture thread for every frame, and an unspecialized generic
    /// would reach each copy through the runtime's witness tables.
    @inlinable
    public mutating func forEach<Copies: RandomAccessCollection>(
        _ copies: Copies, _ body: (Copies.Element) throws -> Void
    ) rethrows {
        guard !copies.isEmpty else { return }
        let start = turn % copies.count
        turn = start + 1
        for offset in 0..<copies.count {
            try body(copies[copies.index(copies.startIndex, offsetBy: (start + offset) % copies.count)])
        }
    }
}

/// Whether the uplink carries a copy per peer again, while one copy goes up (§15.3). Going up
/// once, the sender sees only one stream's rate: that it fits says nothing about seven. So now
/// and then, while the one stream runs clean, it sends the covered peers their own copies as
/// well — one more peer every half second, up to the traffic a copy per peer would be at the
/// rate it sends now. The peers take each frame once, whichever way came first (§15.2), and the
/// first REPORT that says our media queues ends the probe: one more copy at a time overfills a
/// full uplink by less when it shows (all at once, the simulated 128 kbit/s uplink's 200 ms queue
/// filled; stepped, it peaks at ~150 ms — the receivers' queue estimates trail it). If every
/// link reports the whole probe's traffic flowing clean, the sender goes back to a copy per peer
/// (and its frames are deniable again); if not, it waits twice as long before the next. A failed
/// probe still delays the sender's voice for about a second (in the NAT lab at 128 kbit/s, the
/// utterance it fell in scored PESQ-WB 2.2–2.5 at the listeners against 3.7–4.3 for the next),
/// so probes are rare: staying up once costs only deniability.
struct FanOutProbe: Sendable {
    /// The first probe this long after going up once.
    static let firstAfter: Duration = .seconds(120)
    /// The wait doubles after each probe the uplink could not carry, up to this.
    static let longestWait: Duration = .seconds(900)
    /// One more covered peer gets its own copy this often.
    static let step: Duration = .milliseconds(500)
    /// A REPORT judges the probe once it describes a second of its whole traffic (its loss is of
    /// the interval before it; the queue estimate trails the queue by about 16 frames).
    static let judgedAfter: Duration = .seconds(1)
    /// With the whole traffic on, a probe waits this long for every link's word (each REPORTs
    /// within ~1.1 s, `judgedAfter` and more).
    static let settleLength: Duration = .milliseconds(2500)

    /// The wait before the next probe, and that probe's earliest start.
    var wait = firstAfter
    var next: Instant?
    /// The probe under way, and the peers whose REPORTs said it ran clean.
    var startedAt: Instant?
    var clean: Set<[UInt8]> = []

    /// The covered links that get their own copy at `now`: one more each `step` from the start.
    func probing(_ covered: Set<LinkID>, at now: Instant) -> Set<LinkID> {
        guard let startedAt else { return [] }
        let steps = Int((now - startedAt) / Self.step) + 1
        return Set(covered.sorted().prefix(steps))
    }

    /// When the whole traffic of a probe of `covered` is on.
    func fullAt(_ covered: Set<LinkID>) -> Instant? {
        startedAt.map { $0 + Self.step * max(0, covered.count - 1) }
    }

    /// The next moment the probe changes: a step, or its end.
    func nextMoment(_ covered: Set<LinkID>, at now: Instant) -> Instant? {
        guard let startedAt, let full = fullAt(covered) else { return next }
        if now >= full { return full + Self.settleLength }
        return startedAt + Self.step * (Int((now - startedAt) / Self.step) + 1)
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
            next = current  // keep it while it is usable, until a probe says a copy per peer fits
        } else if configuration.fanOut, let rate = sendRate, rate.limited, rate.estimate < Self.fanOutBelow,
            upPeerCount >= Self.fanOutMinimumPeers,
            uplinkCongestedAt.map({ now - $0 < Self.uplinkCongestionMemory }) ?? false
        {
            next = fanOutCandidate()
        }
        if next != fanOut?.member {
            // A new member (or none): any probe was of the old route; the next waits its turn.
            fanOutProbe.startedAt = nil
            fanOutProbe.next = now + fanOutProbe.wait
        }
        let chosen = next.flatMap { member -> (member: [UInt8], route: FanOutRoute)? in
            guard let via = peers[member]?.link?.id else { return nil }
            let covered = Set(coverage(of: member).compactMap { peers[$0]?.link?.id })
            // A probe's copies step on in `stepFanOutProbe`; here they only follow the covered set.
            let probing = (fanOut?.route.probing ?? []).intersection(covered)
            return (member, FanOutRoute(via: via, covered: covered, probing: probing))
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
        if sendRate != nil, copiesBefore != copiesAfter, copiesBefore > 0, copiesAfter > 0 {
            sendRate?.rescale(by: Double(copiesBefore) / Double(copiesAfter), at: now)
            output.append(.setSendRate(sendRate.flatMap { $0.limited ? $0.estimate : nil }))
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
    /// one for the fan-out member and its covered peers together (a probe's copies are extra:
    /// the estimate is of the streams without them).
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

/// Probing whether a copy per peer fits again (`FanOutProbe`).
extension MeetingCore {
    /// Starts a probe when one is due: one copy up, our media flowing at a rate the one stream
    /// carries in full, and no link has said "over" for `uplinkCongestionMemory`. Then adds its
    /// copies one peer a step, and ends one that ran its length without every link's word (a DTX
    /// pause, a link that said nothing): the next comes after the same wait.
    mutating func stepFanOutProbe() {
        guard let current = fanOut else { return }
        if let full = fanOutProbe.fullAt(current.route.covered) {
            if now >= full + FanOutProbe.settleLength {
                fanOutProbe.startedAt = nil
                fanOutProbe.next = now + fanOutProbe.wait
            }
            updateProbeCopies()
            return
        }
        guard !sendsNoMedia, let next = fanOutProbe.next, now >= next, let rate = sendRate, !rate.limited,
            rate.congested(at: now).isEmpty,
            uplinkCongestedAt.map({ now - $0 >= Self.uplinkCongestionMemory }) ?? true
        else { return }
        fanOutProbe.startedAt = now
        fanOutProbe.clean = []
        updateProbeCopies()
        log(.info, "probing whether a copy per peer fits again", ["copies": "\(upPeerCount)"])
    }

    /// A REPORT during a probe: one that says our media queues (or is lost behind a queue) on any
    /// link ends it, the uplink cannot carry the copies; once every link's REPORT says the whole
    /// probe's traffic flows clean, a copy per peer goes out again.
    mutating func judgeFanOutProbe(_ report: SessionControl.Report, from key: [UInt8], mediaFlowed: Bool) {
        guard let current = fanOut, let full = fanOutProbe.fullAt(current.route.covered), mediaFlowed else { return }
        let loss = Self.measuredLoss(report) ?? 0
        let queue = report.queueDelayMs
        if queue.map({ $0 >= SendRate.queueHigh }) ?? false
            || (loss >= SendRate.lossHigh && queue.map { $0 >= SendRate.queueClear } ?? true)
        {
            fanOutProbe.startedAt = nil
            fanOutProbe.wait = min(fanOutProbe.wait * 2, FanOutProbe.longestWait)
            fanOutProbe.next = now + fanOutProbe.wait
            updateProbeCopies()
            log(
                .info, "one copy up still",
                [
                    "reason": "the uplink did not carry a copy per peer",
                    "next_probe_s": "\(fanOutProbe.wait.components.seconds)",
                ])
            return
        }
        guard now - full >= FanOutProbe.judgedAfter, queue.map({ $0 < SendRate.queueClear }) ?? true,
            loss < SendRate.lossHigh
        else { return }
        fanOutProbe.clean.insert(key)
        guard peers.allSatisfy({ $0.value.link?.machine.state != .up || fanOutProbe.clean.contains($0.key) })
        else { return }
        fanOutProbe.startedAt = nil
        fanOutProbe.next = nil
        fanOutProbe.wait = FanOutProbe.firstAfter
        fanOut = nil
        output.append(.setFanOut(nil))
        holdEstimate()
        log(.info, "sending a copy to every peer again", ["reason": "a probe says the uplink carries it"])
    }

    /// Tells the data path which covered peers get their own copy now. Those whose copies start
    /// or stop see a new path (their queue is its length until their base catches up), and the
    /// estimate of one stream does not move on the REPORTs of a moment, which describe the
    /// probe's traffic.
    private mutating func updateProbeCopies() {
        guard var route = fanOut?.route else { return }
        let probing = fanOutProbe.probing(route.covered, at: now)
        guard probing != route.probing else { return }
        for id in probing.symmetricDifference(route.probing) {
            if let key = linkOwners[id] { peers[key]?.link?.routeChangedAt = now }
        }
        route.probing = probing
        fanOut?.route = route
        output.append(.setFanOut(route))
        holdEstimate()
    }

    /// The streams changed at the same total rate (copies started or stopped): the REPORTs of the
    /// next moment describe the traffic before, so the estimate moves on none of them
    /// (`SendRate.rescale` by 1).
    private mutating func holdEstimate() {
        sendRate?.rescale(by: 1, at: now)
    }
}
