import ParleyCore

/// The send-side bandwidth estimate: how many bits per second the path to each peer takes, from
/// what the peers' REPORTs say about our media (docs/ARCHITECTURE.md, "bandwidth estimate").
///
/// A member sends one copy of its voice per peer, so its uplink carries the meeting's size times
/// the rate; a home or mobile uplink fills long before the codec is the limit. As WebRTC's GCC
/// does, the estimate reacts to the queue before the loss: a peer that reports our packets
/// queueing (`queue_delay_ms`, PROTOCOL §10.1, measured one way, so a queue on the peer's own
/// uplink, which carries its REPORT back, does not count) lowers it at once, and so does heavy loss
/// with a queue behind it; reports that are clear on every link raise it again, 8 % a second, and
/// 2 % a second near the rate that last overfilled the path (GCC's additive increase near
/// convergence), so probing for room costs a few milliseconds of queue, not a burst of loss.
/// Loss on a path that does not queue (a radio link, a lossy cable) is chance, not congestion: it
/// is answered with copies (§9.3), and it does not stop the rate from rising. Congestion loss is
/// answered with a lower rate, not with copies: the core leaves a congested link's loss out of the
/// redundancy decision. One encoding serves every peer, so the rate is one for all: the lowest any
/// link takes.
public struct SendRate: Sendable {
    /// Bits per second per peer, headers included, with no limit in sight: the configured bitrate
    /// at the configured frame; the estimate never goes above it.
    public let maximum: Int
    /// Never below: Opus' lowest bitrate in the longest packets.
    public let minimum: Int
    public private(set) var estimate: Int

    /// A peer reporting this much queueing of our media (ms), or this much loss with at least the
    /// clear level of queueing (or no estimate: an older peer), means the path is over its rate;
    /// below the clear levels it has room.
    public static let queueHigh: UInt16 = 40
    public static let queueClear: UInt16 = 20
    public static let lossHigh = 0.10
    public static let lossClear = 0.02
    /// After lowering the estimate, the REPORTs of about a second still describe the old rate.
    public static let holdAfterDecrease: Duration = .seconds(1)
    /// A link that said "over" this recently keeps the estimate from rising.
    public static let overuseMemory: Duration = .seconds(2)
    /// The queue of a link whose route changed lately is the new path's length, not a queue.
    public static let routeSettle: Duration = .seconds(20)
    public static let decrease = 0.85
    public static let increasePerSecond = 0.08
    public static let probePerSecond = 0.02
    /// Near means from 90 % of the rate that overfilled the path to 5 % above it: beyond that,
    /// the path has room again (the cap went away) and the estimate climbs at full speed.
    public static let nearBelow = 0.90
    public static let nearAbove = 1.05

    private var lastDecrease: ContinuousClock.Instant?
    private var lastIncrease: ContinuousClock.Instant?
    private var overuse: [[UInt8]: ContinuousClock.Instant] = [:]
    /// Each peer's latest loss report.
    private var losses: [[UInt8]: (loss: Double, at: ContinuousClock.Instant)] = [:]
    /// The estimate when the path last overfilled.
    private var overfilledAt: Int?

    public init(maximum: Int, minimum: Int) {
        self.maximum = maximum
        self.minimum = min(minimum, maximum)
        estimate = maximum
    }

    /// One peer's REPORT about our media.
    ///
    /// - Parameters:
    ///   - queueDelayMs: its `queue_delay_ms` (nil: none, or the route changed lately).
    ///   - loss: its loss over the last interval (nil: not measured yet).
    ///   - mediaFlowed: whether the peer saw new media from us since its previous REPORT. One
    ///     that saw none (we were in a DTX pause) says nothing about the path now: it repeats
    ///     its last loss (§10.1), which may be a burst long over, so it moves nothing.
    /// - Returns: whether the estimate changed.
    public mutating func report(
        from peer: [UInt8], queueDelayMs: UInt16?, loss: Double?, mediaFlowed: Bool, at now: ContinuousClock.Instant
    ) -> Bool {
        let before = estimate
        guard mediaFlowed else { return false }
        if let loss { losses[peer] = (loss, now) }
        let queueHigh = queueDelayMs.map { $0 >= Self.queueHigh } ?? false
        let queueClear = queueDelayMs.map { $0 < Self.queueClear }
        let lossHigh = loss.map { $0 >= Self.lossHigh } ?? false
        if queueHigh || (lossHigh && queueClear != true) {
            overuse[peer] = now
            if lastDecrease.map({ now - $0 >= Self.holdAfterDecrease }) ?? true {
                // What got through, a little less, so the queue drains (GCC's β = 0.85). An
                // overfull uplink drops the copies it sends last, so some peers lose far more
                // than others: the worst recent loss says what got through.
                let worst = losses.values.filter { now - $0.at < Self.overuseMemory }.map(\.loss).max() ?? 0
                let delivered = 1 - min(worst, 0.5)
                overfilledAt = estimate
                estimate = max(minimum, Int(Double(estimate) * Self.decrease * delivered))
                lastDecrease = now
                lastIncrease = now
            }
        } else if queueClear ?? ((loss ?? 0) < Self.lossClear), !overused(at: now),
            lastDecrease.map({ now - $0 >= Self.holdAfterDecrease }) ?? true
        {
            // (A peer that sends no queue estimate, an older one, is judged by its loss alone.)
            let elapsed = lastIncrease.map { min(1, (now - $0).seconds) } ?? 1
            if let point = overfilledAt.map(Double.init), Double(estimate) > point * Self.nearAbove {
                overfilledAt = nil
            }
            let near = overfilledAt.map { Double(estimate) >= Double($0) * Self.nearBelow } ?? false
            let step = near ? Self.probePerSecond : Self.increasePerSecond
            estimate = min(maximum, Int((Double(estimate) * (1 + step * elapsed)).rounded(.up)))
            lastIncrease = now
        }
        return estimate != before
    }

    /// The peers whose reports said "over" lately (their loss is congestion, not chance).
    public func congested(at now: ContinuousClock.Instant) -> Set<[UInt8]> {
        Set(overuse.filter { now - $0.value < Self.overuseMemory }.keys)
    }

    /// Whether the estimate is below the maximum: the path, not the codec, sets the rate.
    public var limited: Bool { estimate < maximum }

    /// Forgets a peer that left.
    public mutating func forget(_ peer: [UInt8]) {
        overuse[peer] = nil
        losses[peer] = nil
    }

    private func overused(at now: ContinuousClock.Instant) -> Bool {
        overuse.values.contains { now - $0 < Self.overuseMemory }
    }
}
