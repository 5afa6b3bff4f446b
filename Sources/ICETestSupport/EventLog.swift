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
    private var waiters:
        [(side: LinkSide, matches: @Sendable (ICEStreamEvent) -> Bool, CheckedContinuation<Entry, Never>)] = []

    public init() {}

    func record(_ event: ICEStreamEvent, from side: LinkSide) {
        let entry = Entry(side: side, event: event, at: .now)
        entries.append(entry)
        var still: [(side: LinkSide, matches: @Sendable (ICEStreamEvent) -> Bool, CheckedContinuation<Entry, Never>)] =
            []
        for waiter in waiters {
            if waiter.side == side && waiter.matches(event) {
                waiter.2.resume(returning: entry)
            } else {
                still.append(waiter)
            }
        }
        waiters = still
    }

    func recordRefusal(_ error: ICEError, by side: LinkSide) { refusals.append((side, error)) }

    /// The first event from `side` matching `matches` at or after entry index `from`, waiting for
    /// it if need be.
    public func first(
        from side: LinkSide, after from: Int = 0, where matches: @escaping @Sendable (ICEStreamEvent) -> Bool
    ) async -> Entry {
        if let entry = entries.dropFirst(from).first(where: { $0.side == side && matches($0.event) }) { return entry }
        return await withCheckedContinuation { waiters.append((side, matches, $0)) }
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
