public import ParleyCore
import ParleyProtocol

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
    public static let queueHigh = UInt16(QueueDelayEstimate.backOffMilliseconds)
    public static let queueClear: UInt16 = 20
    public static let lossHigh = 0.10
    public static let lossClear = 0.02
    /// After lowering the estimate, the REPORTs of about a second still describe the old rate.
    public static let holdAfterDecrease: Duration = .seconds(1)
    /// How long after a decrease a queue no deeper than the one it answered counts as draining.
    public static let drainTime: Duration = .seconds(3)
    /// A link that said "over" this recently keeps the estimate from rising.
    public static let overuseMemory: Duration = .seconds(2)
    /// The queue of a link whose route changed lately is the new path's length, not a queue.
    public static let routeSettle: Duration = .seconds(20)
    public static let decrease = 0.85
    /// A queue deeper than `queueHigh` says how far over the path the rate is (it grows at the
    /// excess, and the peer's estimate trails it): each `deepQueueStep` more of it takes off a
    /// tenth more, down to half, whichever of this and the loss says more was lost.
    public static let deepQueueStep: Duration = .milliseconds(40)
    public static let increasePerSecond = 0.08
    public static let probePerSecond = 0.02
    /// Near means from 90 % of the rate that overfilled the path to half again above it: beyond
    /// that, the path has room again (the cap went away) and the estimate climbs at full speed.
    /// (The rate that overfilled may be well under the path's: the second of REPORTs after a
    /// decrease can deepen it. Climbing at 8 % a second past it overshot into a 150 ms queue in the
    /// NAT lab before the peers' REPORTs said so; at 2 % a queue starts slowly and is caught early.)
    public static let nearBelow = 0.90
    public static let nearAbove = 1.5

    private var lastDecrease: Instant?
    private var lastIncrease: Instant?
    private var overuse: [[UInt8]: Instant] = [:]
    /// The deepest queue reported in the second after the last decrease.
    private var decreaseQueue: UInt16?
    /// Each peer's latest loss report.
    private var losses: [[UInt8]: (loss: Double, at: Instant)] = [:]
    /// The estimate when the path last overfilled.
    private var overfilledAt: Int?
    /// The estimate the last decrease started from.
    private var decreasedFrom: Int?
    /// When the streams last changed (`rescale`).
    private var rescaledAt: Instant?

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
        from peer: [UInt8], queueDelayMs: UInt16?, loss: Double?, mediaFlowed: Bool, at now: Instant
    ) -> Bool {
        let before = estimate
        guard mediaFlowed else { return false }
        if let rescaledAt, now - rescaledAt < Self.rescaleSettle {
            // Still the old streams' congestion: no move, but their loss is congestion, not chance
            // (answered with copies it would overfill the new stream at once).
            if (queueDelayMs ?? 0) >= Self.queueHigh || (loss ?? 0) >= Self.lossHigh { overuse[peer] = now }
            return false
        }
        if let loss { losses[peer] = (loss, now) }
        let queueHigh = queueDelayMs.map { $0 >= Self.queueHigh } ?? false
        let queueClear = queueDelayMs.map { $0 < Self.queueClear }
        let lossHigh = loss.map { $0 >= Self.lossHigh } ?? false
        let holding = lastDecrease.map { now - $0 < Self.holdAfterDecrease } ?? false
        // The queue the last decrease answered: the deepest any REPORT showed in the second after
        // it. For `drainTime` after the decrease, a queue that has not grown past it is still
        // draining what came before (a router's queue takes its length to drain, and the peers'
        // estimates trail it by about 16 frames), so it asks for no new one.
        let draining = lastDecrease.map { now - $0 < Self.drainTime } ?? false
        let answered = !holding && draining && queueDelayMs.map { $0 <= (decreaseQueue ?? 0) } ?? false
        if holding, let queueDelayMs { decreaseQueue = max(decreaseQueue ?? 0, queueDelayMs) }
        if queueHigh || (lossHigh && queueClear != true) {
            overuse[peer] = now
            // What got through, a little less, so the queue drains (GCC's β = 0.85): the mean
            // recent loss of the links that say "over". An overfull uplink drops the copies it
            // sends last, so its peers lose anything from 0 to 70 %, and what it carried in all is
            // the mean; one peer's congested downlink is that peer's loss alone. Loss on a link
            // that does not queue is chance and says nothing about the rate.
            let congested = congested(at: now)
            let recent = losses.filter { congested.contains($0.key) && now - $0.value.at < Self.overuseMemory }
            let lost = recent.isEmpty ? 0 : recent.values.map(\.loss).reduce(0, +) / Double(recent.count)
            let excessQueue =
                (Double(queueDelayMs ?? 0) - Double(Self.queueHigh)) / 1000 / Self.deepQueueStep.seconds
            let delivered = 1 - min(max(lost, 0.1 * max(0, excessQueue)), 0.5)
            if answered {
                // No new decrease (nor an increase, while the link says "over").
            } else if !holding {
                overfilledAt = estimate
                decreaseQueue = queueDelayMs
                decreasedFrom = estimate
                estimate = max(minimum, Int(Double(estimate) * Self.decrease * delivered))
                lastDecrease = now
                lastIncrease = now
            } else if let from = decreasedFrom {
                // Within the second after a decrease, the reports still describe the rate before
                // it: one that says more was lost than the decrease allowed for (the first came
                // early, at the queue's onset) deepens that decrease, never repeats it.
                let deeper = max(minimum, Int(Double(from) * Self.decrease * delivered))
                if deeper < estimate {
                    estimate = deeper
                    lastIncrease = now
                }
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
    public func congested(at now: Instant) -> Set<[UInt8]> {
        Set(overuse.filter { now - $0.value < Self.overuseMemory }.keys)
    }

    /// Whether the estimate is below the maximum: the path, not the codec, sets the rate.
    public var limited: Bool { estimate < maximum }

    /// The uplink now carries the same bits in `factor` times the rate per stream (fewer, larger
    /// streams: fanning out through a member, PROTOCOL §15.3, or back): everything measured in
    /// rate per stream scales with it. The REPORTs of the next `rescaleSettle` still describe the
    /// queue and loss of the streams before — a REPORT's loss is of the second before it, the
    /// peers' queue estimates trail by about 16 frames, and a full router queue takes its length
    /// to drain — so they move nothing (in the NAT lab, taking them cut a fresh 60 kbit/s to the
    /// minimum within two seconds of going up once, 57 % loss and 360 ms of queue reported after
    /// the change), except that their loss still counts as congestion (`congested`).
    public mutating func rescale(by factor: Double, at now: Instant) {
        func scaled(_ rate: Int) -> Int { min(maximum, max(minimum, Int((Double(rate) * factor).rounded()))) }
        estimate = scaled(estimate)
        overfilledAt = overfilledAt.map(scaled)
        decreasedFrom = nil
        decreaseQueue = nil
        rescaledAt = now
        lastIncrease = now
    }

    public static let rescaleSettle: Duration = .seconds(3)

    /// Forgets a peer that left.
    public mutating func forget(_ peer: [UInt8]) {
        overuse[peer] = nil
        losses[peer] = nil
    }

    private func overused(at now: Instant) -> Bool {
        overuse.values.contains { now - $0 < Self.overuseMemory }
    }
}
