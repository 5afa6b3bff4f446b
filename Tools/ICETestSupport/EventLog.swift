public import ICE

/// Which end of a two-party link.
public enum LinkSide: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case a, b
    public var other: LinkSide { self == .a ? .b : .a }
    public var description: String { rawValue }
}

/// Everything each end of a link reported, with when, and a way to await an event that may
/// already have happened. Tests bound every wait with `withTimeout`.
public actor EventLog {
    public struct Entry: Sendable {
        public let side: LinkSide
        public let event: ICEStreamEvent
        public let at: ContinuousClock.Instant
    }

    public private(set) var entries: [Entry] = []
    /// Remote candidate lines the other side refused, with the error.
    public private(set) var refusals: [(side: LinkSide, error: ICEError)] = []
    private var waiters: [Waiter] = []
    private var nextWaiter = 0

    private struct Waiter {
        let id: Int
        let side: LinkSide
        let matches: @Sendable (ICEStreamEvent) -> Bool
        let continuation: CheckedContinuation<Entry, any Error>
    }

    public init() {}

    func record(_ event: ICEStreamEvent, from side: LinkSide) {
        let entry = Entry(side: side, event: event, at: .now)
        entries.append(entry)
        waiters.removeAll { waiter in
            guard waiter.side == side && waiter.matches(event) else { return false }
            waiter.continuation.resume(returning: entry)
            return true
        }
    }

    func recordRefusal(_ error: ICEError, by side: LinkSide) { refusals.append((side, error)) }

    /// The first event from `side` matching `matches` at or after entry index `from`, waiting for
    /// it if need be. Throws `CancellationError` if the waiting task is cancelled (so `withTimeout`
    /// can give up on it).
    public func first(
        from side: LinkSide, after from: Int = 0, where matches: @escaping @Sendable (ICEStreamEvent) -> Bool
    ) async throws -> Entry {
        if let entry = entries.dropFirst(from).first(where: { $0.side == side && matches($0.event) }) { return entry }
        let id = nextWaiter
        nextWaiter += 1
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                if Task.isCancelled {
                    continuation.resume(throwing: CancellationError())
                } else {
                    waiters.append(Waiter(id: id, side: side, matches: matches, continuation: continuation))
                }
            }
        } onCancel: {
            Task { await self.cancelWaiter(id) }
        }
    }

    private func cancelWaiter(_ id: Int) {
        waiters.removeAll { waiter in
            guard waiter.id == id else { return false }
            waiter.continuation.resume(throwing: CancellationError())
            return true
        }
    }

    /// The events of one side, in order.
    public func events(of side: LinkSide) -> [ICEStreamEvent] {
        entries.filter { $0.side == side }.map(\.event)
    }

    public var count: Int { entries.count }
}

extension ICEStreamEvent {
    /// Whether this is a state change to connected or ready.
    public var isConnected: Bool {
        if case .stateChanged(let state) = self { return state.isConnected }
        return false
    }

    public var failure: ICEFailure? {
        if case .stateChanged(.failed(let failure)) = self { return failure }
        return nil
    }

    public var isFailed: Bool { failure != nil }

    public var localCandidate: ICECandidate? {
        if case .localCandidate(let candidate) = self { return candidate }
        return nil
    }

    public var selectedPair: ICECandidatePair? {
        if case .selectedPair(let pair) = self { return pair }
        return nil
    }
}
