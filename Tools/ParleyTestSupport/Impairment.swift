import ParleyCore

/// A deterministic network impairment stage for tests and benchmarks: it decides, for each packet
/// sent at a given time, whether and when it is delivered (loss, bursts, duplicates, delay, jitter,
/// reordering), drawing from a seeded generator so every run is reproducible. It holds no packets;
/// the caller schedules the deliveries it returns. This kernel has no netem qdisc, so delay and
/// jitter are emulated here, in front of the jitter buffer.
public struct Impairment: Sendable {
    public struct Configuration: Sendable, Hashable {
        /// Probability that a packet is lost on its own (independent, "random loss").
        public var loss: Double = 0
        /// Probability that a loss starts a burst, and how many further packets the burst takes.
        public var burstProbability: Double = 0
        public var burstLength: Int = 0
        /// Probability that a delivered packet arrives twice (the copy `duplicateDelay` later).
        public var duplicate: Double = 0
        public var duplicateDelay: Duration = .milliseconds(5)
        /// Every packet's one-way delay: `delay` plus uniform jitter in [0, jitter].
        public var delay: Duration = .zero
        public var jitter: Duration = .zero
        /// Probability that a packet is held back by `reorderDelay` (arriving after later packets).
        public var reorder: Double = 0
        public var reorderDelay: Duration = .milliseconds(50)

        public init(
            loss: Double = 0, burstProbability: Double = 0, burstLength: Int = 0, duplicate: Double = 0,
            delay: Duration = .zero, jitter: Duration = .zero, reorder: Double = 0,
            reorderDelay: Duration = .milliseconds(50)
        ) {
            self.loss = loss
            self.burstProbability = burstProbability
            self.burstLength = burstLength
            self.duplicate = duplicate
            self.delay = delay
            self.jitter = jitter
            self.reorder = reorder
            self.reorderDelay = reorderDelay
        }
    }

    /// Up to two delivery times for one packet (none: lost; two: duplicated), without allocating.
    public struct Deliveries: Sendable, Hashable {
        public private(set) var count = 0
        private var first: Duration = .zero
        private var second: Duration = .zero

        mutating func append(_ time: Duration) {
            if count == 0 { first = time } else { second = time }
            count += 1
        }

        public subscript(index: Int) -> Duration {
            precondition(index < count, "delivery index out of range")
            return index == 0 ? first : second
        }

        public var times: [Duration] { (0..<count).map { self[$0] } }
    }

    public var configuration: Configuration
    private var generator: SeededGenerator
    private var burstRemaining = 0
    public private(set) var sent = 0
    public private(set) var dropped = 0

    public init(_ configuration: Configuration, seed: UInt64) {
        self.configuration = configuration
        self.generator = SeededGenerator(seed: seed)
    }

    /// Decides the fate of the packet sent at `sendTime`: the times at which it arrives.
    public mutating func deliveries(sentAt sendTime: Duration) -> Deliveries {
        sent += 1
        var result = Deliveries()
        // Draw every random number for every packet, so changing one probability does not shift
        // the stream of decisions for the others.
        let lossDraw = generator.nextUnit()
        let burstDraw = generator.nextUnit()
        let jitterDraw = generator.nextUnit()
        let reorderDraw = generator.nextUnit()
        let duplicateDraw = generator.nextUnit()
        if burstRemaining > 0 {
            burstRemaining -= 1
            dropped += 1
            return result
        }
        if burstDraw < configuration.burstProbability {
            burstRemaining = max(0, configuration.burstLength - 1)
            dropped += 1
            return result
        }
        if lossDraw < configuration.loss {
            dropped += 1
            return result
        }
        var arrival = sendTime + configuration.delay + configuration.jitter * jitterDraw
        if reorderDraw < configuration.reorder { arrival += configuration.reorderDelay }
        result.append(arrival)
        if duplicateDraw < configuration.duplicate { result.append(arrival + configuration.duplicateDelay) }
        return result
    }
}
