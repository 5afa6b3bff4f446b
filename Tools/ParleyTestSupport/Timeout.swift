/// Helpers shared by Parley's test targets (never linked into a shipped executable).

/// Thrown when an awaited event did not happen within its time limit.
public struct TimeoutError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Runs `operation`, failing with `TimeoutError` if it takes longer than `limit`. Tests wait on
/// events with this instead of sleeping: the sleep here is only the upper bound.
public func withTimeout<T: Sendable>(
    _ limit: Duration, _ what: String, operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: limit)
            throw TimeoutError("timed out after \(limit) waiting for \(what)")
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}

/// Polls `condition` every `interval` until it holds or `limit` passes. For state that offers no
/// event to await (a file appearing, a process's output); prefer awaiting an event.
public func waitUntil(
    _ limit: Duration, _ what: String, interval: Duration = .milliseconds(20),
    condition: @escaping @Sendable () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + limit
    while true {
        // Checked once more after the deadline: a poller starved of CPU (the test process runs
        // many suites on two threads) must not call a condition that already holds a time-out.
        if try await condition() { return }
        guard ContinuousClock.now < deadline else { break }
        try await Task.sleep(for: interval)
    }
    throw TimeoutError("timed out after \(limit) waiting for \(what)")
}

/// What the environment offers tests that need more than the process itself.
public enum TestEnvironment {
    /// Set by Scripts/test (and so CI): tests that need a PulseAudio server, root or the Python
    /// venv must run and fail rather than skip when it is missing.
    public static var requireAll: Bool { environment("PARLEY_TEST_ALL") == "1" }

    /// True when a test that needs `available` should run: it is there, or CI demands it.
    public static func shouldRun(needing available: Bool) -> Bool { available || requireAll }

    /// Whether this process runs as root (network namespaces, iptables).
    public static var isRoot: Bool { getuid() == 0 }

    public static func environment(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        return String(cString: value)
    }
}

#if canImport(Glibc)
import Glibc
#endif
