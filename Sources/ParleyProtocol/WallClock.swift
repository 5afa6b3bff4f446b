#if canImport(Glibc)
import Glibc
#endif

/// The wall clock, injectable: handshake timestamps (§7.4) and envelope sequence numbers (§6.4)
/// must increase across restarts, which a monotonic clock cannot promise, so they read real time;
/// tests substitute a fixed or stepped clock.
public struct WallClock: Sendable {
    /// Nanoseconds since the Unix epoch.
    public let unixNanoseconds: @Sendable () -> UInt64

    public init(unixNanoseconds: @escaping @Sendable () -> UInt64) {
        self.unixNanoseconds = unixNanoseconds
    }

    public static let system = WallClock {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return UInt64(max(now.tv_sec, 0)) * 1_000_000_000 + UInt64(max(now.tv_nsec, 0))
    }
}
