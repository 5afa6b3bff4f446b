/// A token bucket (the classic rate limiter): holds at most `capacity` tokens, refills at `rate`
/// tokens per second, and each message takes one. Pure: the caller passes the time, so tests
/// drive it with a fake clock. The rendezvous limits messages per connection with it, a session
/// the handshake initiations it does Diffie-Hellman for.
public struct TokenBucket: Sendable {
    public let rate: Double
    public let capacity: Double
    private var tokens: Double
    private var last: UInt64

    /// A full bucket at time `now` (nanoseconds on any monotonic clock).
    public init(rate: Double, capacity: Double, now: UInt64) {
        self.rate = rate
        self.capacity = capacity
        tokens = capacity
        last = now
    }

    /// Takes one token if there is one; `false` means the message exceeds the rate.
    public mutating func take(now: UInt64) -> Bool {
        if now > last {
            tokens = min(capacity, tokens + Double(now - last) / 1e9 * rate)
            last = now
        }
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}
