import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Time for the media path, in nanoseconds on a monotonic scale. Injected, so the jitter buffer,
/// pacing and statistics run under a manual clock in tests.
public protocol MediaClock: Sendable {
    /// Nanoseconds since an arbitrary fixed origin; never goes backwards.
    func now() -> UInt64
}

/// The system's monotonic clock (`CLOCK_MONOTONIC`): unaffected by wall-clock changes.
public struct MonotonicClock: MediaClock {
    public init() {}

    public func now() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
    }

    /// Sleeps until the clock reads `deadline` (absolute, so a loop paced with it does not drift).
    public func sleep(until deadline: UInt64) {
        var spec = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
        while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &spec, nil) == EINTR {}
    }
}

/// A clock that moves only when told to: for unit tests of time-dependent logic.
public final class ManualClock: MediaClock {
    private let value: Atomic<UInt64>

    public init(nanoseconds: UInt64 = 0) {
        value = Atomic(nanoseconds)
    }

    public func now() -> UInt64 { value.load(ordering: .acquiring) }

    public func advance(by duration: Duration) {
        value.add(duration.nanoseconds, ordering: .acquiringAndReleasing)
    }

    public func set(nanoseconds: UInt64) { value.store(nanoseconds, ordering: .releasing) }
}

extension Duration {
    /// In seconds, as a floating-point number (rates and time constants).
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }

    /// Whole nanoseconds (negative durations clamp to zero).
    public var nanoseconds: UInt64 {
        let (seconds, attoseconds) = components
        guard seconds >= 0 else { return 0 }
        return UInt64(seconds) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
    }
}
