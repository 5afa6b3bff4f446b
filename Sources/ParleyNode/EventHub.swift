public import ControlAPI
import Synchronization

/// Fans live events out to every `parley watch` client. A slow watcher keeps only the newest
/// events (it is a display, not a log), so it can never hold up the meeting.
public final class EventHub: Sendable {
    private struct Watchers: ~Copyable {
        var next = 0
        var continuations: [Int: AsyncStream<ControlEvent>.Continuation] = [:]
    }

    private let watchers = Mutex(Watchers())

    public init() {}

    /// A new stream of events from now on; it finishes when the hub is closed.
    public func subscribe() -> AsyncStream<ControlEvent> {
        let (stream, continuation) = AsyncStream.makeStream(
            of: ControlEvent.self, bufferingPolicy: .bufferingNewest(256))
        let id = watchers.withLock { watchers in
            defer { watchers.next += 1 }
            watchers.continuations[watchers.next] = continuation
            return watchers.next
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.watchers.withLock { $0.continuations.removeValue(forKey: id) }
        }
        return stream
    }

    public func publish(_ event: ControlEvent) {
        let continuations = watchers.withLock { Array($0.continuations.values) }
        for continuation in continuations { continuation.yield(event) }
    }

    /// Ends every watch stream (daemon shutdown).
    public func close() {
        let continuations = watchers.withLock { watchers in
            defer { watchers.continuations = [:] }
            return Array(watchers.continuations.values)
        }
        for continuation in continuations { continuation.finish() }
    }

    var watcherCount: Int { watchers.withLock { $0.continuations.count } }
}
