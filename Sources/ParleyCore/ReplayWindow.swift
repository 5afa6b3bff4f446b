/// The sliding anti-replay window of RFC 6479: a ring of 64-bit blocks remembers which of the
/// last `windowSize` counters were seen. A counter is accepted when it is below `limit`, and either
/// greater than every counter seen so far or within `windowSize` of the greatest and not seen
/// before. Transport packets (docs/PROTOCOL.md §8.4) and signaling envelopes (§6.4) use it.
///
/// Check with `wouldAccept` before the expensive work if you like, but `accept` (which records)
/// only after the message authenticated: an unauthenticated counter must never move the window.
public struct ReplayWindow: Sendable, Hashable {
    public static let defaultBlockCount = 32

    /// How far behind the greatest counter a counter may be and still be accepted:
    /// `(blockCount − 1) × 64` (RFC 6479 §2: one block is kept as the one being filled).
    public let windowSize: UInt64
    /// Counters at or above this are never accepted (a key's message limit).
    public let limit: UInt64
    private var blocks: [UInt64]
    private var greatest: UInt64?

    /// `blockCount` must be a power of two, at least 2.
    public init(blockCount: Int = defaultBlockCount, limit: UInt64 = .max) {
        precondition(blockCount >= 2 && blockCount & (blockCount - 1) == 0, "block count must be a power of two ≥ 2")
        blocks = [UInt64](repeating: 0, count: blockCount)
        windowSize = UInt64(blockCount - 1) * 64
        self.limit = limit
    }

    /// The greatest counter accepted so far.
    public var greatestAccepted: UInt64? { greatest }

    /// Whether `accept(counter)` would succeed, without recording anything.
    public func wouldAccept(_ counter: UInt64) -> Bool {
        guard counter < limit else { return false }
        guard let greatest else { return true }
        if counter > greatest { return true }
        guard greatest - counter < windowSize else { return false }
        return blocks[blockIndex(counter)] & bit(counter) == 0
    }

    /// Records `counter` and returns true if it is fresh; returns false (recording nothing) for a
    /// replay, a counter too far behind, or one at or past the limit.
    public mutating func accept(_ counter: UInt64) -> Bool {
        guard wouldAccept(counter) else { return false }
        if let greatest, counter > greatest {
            // Clear the blocks the window slides over (at most the whole ring).
            let current = greatest >> 6
            let advance = min((counter >> 6) - current, UInt64(blocks.count))
            if advance > 0 {
                for step in 1...advance { blocks[Int((current &+ step) & UInt64(blocks.count - 1))] = 0 }
            }
        }
        if greatest.map({ counter > $0 }) ?? true { greatest = counter }
        blocks[blockIndex(counter)] |= bit(counter)
        return true
    }

    private func blockIndex(_ counter: UInt64) -> Int { Int((counter >> 6) & UInt64(blocks.count - 1)) }
    private func bit(_ counter: UInt64) -> UInt64 { 1 << (counter & 63) }
}
