public import ICE

/// One end of a peer link: the node's agent and the stream it holds for the peer.
public struct LinkEnd: Sendable {
    public let agent: ICEAgent
    public let stream: ICEStream

    public init(agent: ICEAgent, stream: ICEStream) {
        self.agent = agent
        self.stream = stream
    }
}

/// The signaling a node does through the rendezvous, done in memory between two streams:
/// credentials both ways, then every trickled candidate as its text line (parsed again on the
/// other side, as on the wire) and end-of-candidates. Each end's events are consumed here and
/// recorded in `log`.
public final class SignalingLink: Sendable {
    public let a: LinkEnd
    public let b: LinkEnd
    public let log = EventLog()
    private let forwarders: [Task<Void, Never>]

    /// Starts forwarding at once; call `exchangeCredentials()` to let checks begin.
    public init(_ a: LinkEnd, _ b: LinkEnd) {
        self.a = a
        self.b = b
        let log = log
        forwarders = [(a, b, LinkSide.a), (b, a, LinkSide.b)].map { from, to, side in
            Task {
                for await event in from.stream.events {
                    await log.record(event, from: side)
                    do throws(ICEError) {
                        switch event {
                        case .localCandidate(let candidate):
                            try await to.agent.addRemoteCandidate(candidate.line, to: to.stream.id)
                        case .localCandidatesDone:
                            try await to.agent.remoteCandidatesDone(for: to.stream.id)
                        default: break
                        }
                    } catch {
                        await log.recordRefusal(error, by: side.other)
                    }
                }
            }
        }
    }

    public func end(_ side: LinkSide) -> LinkEnd { side == .a ? a : b }

    /// Sends each side's current credentials to the other.
    public func exchangeCredentials() async throws {
        let credentialsA = try await a.agent.localCredentials(of: a.stream.id)
        let credentialsB = try await b.agent.localCredentials(of: b.stream.id)
        try await a.agent.setRemoteCredentials(credentialsB, for: a.stream.id)
        try await b.agent.setRemoteCredentials(credentialsA, for: b.stream.id)
    }

    /// ICE restart as two nodes do it: `initiator` restarts and signals its new credentials; the
    /// other side restarts on hearing it and answers with its own.
    public func restart(initiator: LinkSide) async throws {
        let first = end(initiator)
        let second = end(initiator.other)
        let firstCredentials = try await first.agent.restart(first.stream.id)
        let secondCredentials = try await second.agent.restart(second.stream.id)
        try await second.agent.setRemoteCredentials(firstCredentials, for: second.stream.id)
        try await first.agent.setRemoteCredentials(secondCredentials, for: first.stream.id)
    }

    /// Waits until both sides report a working pair (after log entry `after`); returns when each
    /// side got there.
    public func bothConnected(after: Int = 0) async throws -> (a: ContinuousClock.Instant, b: ContinuousClock.Instant) {
        let sideA = try await log.first(from: .a, after: after) { $0.isConnected }
        let sideB = try await log.first(from: .b, after: after) { $0.isConnected }
        return (sideA.at, sideB.at)
    }

    /// Waits until either side connects or fails, whichever comes first on each side.
    public func outcome(of side: LinkSide, after: Int = 0) async throws -> ICEStreamEvent {
        try await log.first(from: side, after: after) { $0.isConnected || $0.isFailed }.event
    }

    /// Stops forwarding (the streams' events end when their agents close anyway).
    public func stop() {
        for task in forwarders { task.cancel() }
    }
}
