/// The receiver's estimate of how long a peer's media waits in queues on the way: REPORT's
/// `queue_delay_ms` (docs/PROTOCOL.md §10.1). Each primary frame's transit (arrival minus the
/// frame's end on the sender's clock) above the lowest transit of the last 10–20 s, smoothed over
/// about 16 frames. Units are the caller's ticks (48 kHz samples in the jitter buffer, nanoseconds
/// in the meeting simulator): only differences between transits matter.
public struct QueueDelayEstimate: Sendable {
    /// Ticks per second of `transit` and `now`.
    public let ticksPerSecond: Int64
    /// The smoothed queueing delay, in ticks.
    public private(set) var value = 0.0

    /// Each window's lowest transit is the base for this window and the next: the base follows a
    /// path whose delay dropped within 20 s, and a queue that lasts is still seen for 10 s.
    public static let baseWindowSeconds: Int64 = 10
    /// A transit this far above the base is a sender that started its timestamps anew, not a queue.
    public static let restartSeconds: Int64 = 2
    /// A sender lowers its rate when a peer reports this much queue; so a receiver whose estimate
    /// reaches it from below reports at once instead of at its next REPORT, up to a second later,
    /// by when a router's queue may be full (§10.1).
    public static let backOffMilliseconds: Int64 = 40

    private var windowStart: Int64?
    private var windowMinimum: Int64 = 0
    private var previousMinimum: Int64 = 0

    public init(ticksPerSecond: Int64) {
        self.ticksPerSecond = ticksPerSecond
    }

    /// One primary frame arrived at `now` with `transit` (arrival minus the end of its frame).
    /// Returns whether the estimate just reached `backOffMilliseconds` from below.
    @discardableResult
    public mutating func note(transit: Int64, now: Int64) -> Bool {
        let before = value
        if windowStart != nil, transit - min(windowMinimum, previousMinimum) > Self.restartSeconds * ticksPerSecond {
            windowStart = nil
            value = 0
        }
        if let start = windowStart, now - start < Self.baseWindowSeconds * ticksPerSecond {
            windowMinimum = min(windowMinimum, transit)
        } else {
            previousMinimum = windowStart == nil ? transit : windowMinimum
            windowMinimum = transit
            windowStart = now
        }
        value += (Double(transit - min(windowMinimum, previousMinimum)) - value) / 16
        let backOff = Double(Self.backOffMilliseconds * ticksPerSecond) / 1000
        return before < backOff && value >= backOff
    }
}
