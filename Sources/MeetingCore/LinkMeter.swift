public import ParleyCore

/// What one link's receive side measured, interval by interval: the loss figure REPORTs carry
/// (docs/PROTOCOL.md §10.1) and what `parley status` shows (loss over the last five intervals,
/// traffic rates). A plain value, sampled when a REPORT closes an interval.
public struct LinkMeter: Sendable {
    /// Counters of the peer's media stream as the receive side sees them.
    public struct Counts: Sendable, Hashable {
        /// Media payloads the sender's sequence numbers say were sent, and those that arrived
        /// (primaries, not copies): `expected − received` is the network's loss before recovery.
        public var expected: Int
        public var received: Int
        /// Bytes each way on the link, all packets included.
        public var bytesSent: UInt64
        public var bytesReceived: UInt64

        public static let zero = Counts(expected: 0, received: 0, bytesSent: 0, bytesReceived: 0)

        public init(expected: Int, received: Int, bytesSent: UInt64, bytesReceived: UInt64) {
            self.expected = expected
            self.received = received
            self.bytesSent = bytesSent
            self.bytesReceived = bytesReceived
        }
    }

    /// Network loss over the last interval that had media, 0–1000 (§10.1: an interval without
    /// media keeps the previous figure, so the peer's next talk spurt starts with the copies its
    /// link needs).
    public private(set) var lossPermille: UInt16 = 0
    /// Counts at the end of each of the last six intervals (the newest starts the current one;
    /// the oldest starts the five-interval window status shows), and when the last two ended.
    private var history: [(at: Instant, counts: Counts)] = []

    public init() {}

    public mutating func closeInterval(_ counts: Counts, at now: Instant) {
        let baseline = history.last?.counts ?? .zero
        if counts.expected > baseline.expected {
            lossPermille = UInt16((Self.loss(from: baseline, to: counts) * 1000).rounded())
        }
        history.append((now, counts))
        if history.count > 6 { history.removeFirst() }
    }

    public struct Measurements: Sendable, Hashable {
        /// Loss over the last five intervals, in percent (nil: nothing expected).
        public var lossPct: Double?
        public var rxKbps = 0.0
        public var txKbps = 0.0
    }

    public func measurements(_ counts: Counts, at now: Instant) -> Measurements {
        var result = Measurements()
        // Rates since the older of the last two interval ends: about the last second or two.
        if let first = history.dropLast().last ?? history.last, first.at < now {
            let seconds = (now - first.at).seconds
            result.rxKbps =
                Double(counts.bytesReceived - min(counts.bytesReceived, first.counts.bytesReceived)) * 8 / 1000
                / seconds
            result.txKbps =
                Double(counts.bytesSent - min(counts.bytesSent, first.counts.bytesSent)) * 8 / 1000 / seconds
        }
        if let oldest = history.first?.counts, counts.expected > oldest.expected {
            result.lossPct = Self.loss(from: oldest, to: counts) * 100
        }
        return result
    }

    /// Network loss (0...1) between two snapshots.
    static func loss(from earlier: Counts, to later: Counts) -> Double {
        let expected = later.expected - earlier.expected
        guard expected > 0 else { return 0 }
        return min(1, max(0, Double(expected - (later.received - earlier.received)) / Double(expected)))
    }
}
