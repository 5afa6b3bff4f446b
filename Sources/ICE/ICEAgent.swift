internal import CNice
public import Logging

/// A node's ICE agent: one per node, one stream per peer (RFC 8445 with trickle, RFC 8838).
///
/// The actor runs on a `GLibExecutor`, the thread that drives libnice, so libnice's callbacks land
/// on the actor's own thread and update its state directly. Each stream is backed by its own
/// libnice agent, because libnice keeps the ICE role per agent (see `NiceSession`).
///
/// A peer link, as the node drives it:
///
///     let stream = try await agent.addStream(role: .forPair(localIdentity: me, peerIdentity: peer))
///     send(peer, try await agent.localCredentials(of: stream.id))   // then, from stream.events:
///     //   .localCandidate(c)     → send c.line          .localCandidatesDone → send end-of-candidates
///     // from the peer:  credentials → setRemoteCredentials, each line → addRemoteCandidate,
///     //                 end-of-candidates → remoteCandidatesDone
///     // then stream.send(...) / for await datagram in stream.datagrams
public actor ICEAgent {
    public let configuration: ICEConfiguration
    private let executor: GLibExecutor
    private let policy: ICECandidatePolicy
    private let logger: Logger
    private var slots: [ICEStream.ID: StreamSlot] = [:]
    private var nextStreamID: UInt64 = 1
    private var closed = false
    /// Sessions shutting down in the background (superseded by a restart); `close` waits for them.
    private var closing: [Int: Task<Void, Never>] = [:]
    private var nextClosing = 0
    /// Live callback contexts of this agent's sessions (tests check they all go).
    let ledger = CallbackLedger()

    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    public init(
        configuration: ICEConfiguration, executor: GLibExecutor, logger: Logger = Logger(label: "parley.ice")
    ) throws(ICEError) {
        try configuration.validate()
        self.configuration = configuration
        self.executor = executor
        self.policy = configuration.candidatePolicy
        self.logger = logger
    }

    // MARK: Streams

    /// Adds a stream for one peer and starts gathering at once; candidates trickle out as events.
    public func addStream(role: ICERole) throws(ICEError) -> ICEStream {
        guard !closed else { throw ICEError(.closed, "the ICE agent is closed") }
        let id = ICEStream.ID(value: nextStreamID)
        nextStreamID += 1
        let stream = ICEStream(id: id, role: role, receiveBufferLimit: configuration.receiveBufferLimit)
        let slot = StreamSlot(stream: stream)
        slots[id] = slot
        do {
            try startGeneration(of: slot)
        } catch {
            slots[id] = nil
            stream.finish()
            throw error
        }
        logger.debug("stream added", metadata: ["stream": "\(id)", "role": "\(role)"])
        return stream
    }

    /// This generation's credentials, to send to the peer (sealed: the password authenticates checks).
    public func localCredentials(of id: ICEStream.ID) throws(ICEError) -> ICECredentials {
        try currentSession(of: slot(id)).localCredentials
    }

    /// Every local candidate offered so far in this generation, for re-sending.
    public func localCandidates(of id: ICEStream.ID) throws(ICEError) -> [ICECandidate] {
        try slot(id).localCandidates
    }

    /// This generation's whole description as the peer applies it (`applyRemote`): credentials,
    /// every local candidate so far, and end-of-candidates once gathering is done.
    public func localSignals(of id: ICEStream.ID) throws(ICEError) -> [RemoteSignal] {
        let slot = try slot(id)
        var signals: [RemoteSignal] = [.credentials(try currentSession(of: slot).localCredentials)]
        signals += slot.localCandidates.map { .candidate($0.line) }
        if slot.localDone { signals.append(.endOfCandidates) }
        return signals
    }

    /// Sets the peer's credentials for this generation. Calling it again with the same ones is a
    /// no-op; different ones mean the peer restarted, which needs `restart` here first (RFC 5245
    /// §9.2.1.1: both sides of a restart get new credentials).
    public func setRemoteCredentials(_ credentials: ICECredentials, for id: ICEStream.ID) throws(ICEError) {
        let slot = try slot(id)
        if let current = slot.remoteCredentials {
            guard current == credentials else {
                throw ICEError(
                    .restartRequired, "the peer's ICE credentials changed: restart the stream, then set them")
            }
            return
        }
        try currentSession(of: slot).setRemoteCredentials(credentials)
        slot.remoteCredentials = credentials
        let pending = slot.pendingRemote
        slot.pendingRemote = []
        for candidate in pending where candidate.ufrag == nil || candidate.ufrag == credentials.ufrag {
            _ = try? apply(candidate, to: slot)
        }
        if slot.remoteDone { try currentSession(of: slot).remoteGatheringDone() }
        armCheckDeadline(slot)
    }

    /// What became of a remote candidate.
    public enum RemoteCandidateOutcome: Sendable, Equatable {
        /// Handed to libnice; checks with it start now.
        case added
        /// Held until the credentials of its generation arrive.
        case pending
        /// From an earlier generation (before a restart): ignored.
        case stale
    }

    /// Adds one trickled candidate line from the peer. A malformed or refused line throws a clear
    /// error and changes nothing else.
    @discardableResult
    public func addRemoteCandidate(_ line: String, to id: ICEStream.ID) throws(ICEError) -> RemoteCandidateOutcome {
        let slot = try slot(id)
        let candidate: ICECandidate
        do {
            candidate = try ICECandidate(line: line)
        } catch {
            slot.rejectedRemote += 1
            throw ICEError(.invalidCandidate(error.reason), error.description)
        }
        return try addRemoteCandidate(candidate, to: id)
    }

    @discardableResult
    public func addRemoteCandidate(
        _ candidate: ICECandidate, to id: ICEStream.ID
    ) throws(ICEError)
        -> RemoteCandidateOutcome
    {
        let slot = try slot(id)
        let current = slot.remoteCredentials
        if let ufrag = candidate.ufrag, ufrag != current?.ufrag {
            if slot.previousRemoteUfrags.contains(ufrag) { return .stale }
            return try hold(candidate, in: slot)  // a generation whose credentials have not come yet
        }
        if current == nil { return try hold(candidate, in: slot) }
        try apply(candidate, to: slot)
        return .added
    }

    /// The peer sent end-of-candidates (RFC 8838 §4.4): lets libnice declare failure once every
    /// check has failed, instead of waiting for more candidates forever.
    public func remoteCandidatesDone(for id: ICEStream.ID) throws(ICEError) {
        let slot = try slot(id)
        slot.remoteDone = true
        if slot.remoteCredentials != nil { try currentSession(of: slot).remoteGatheringDone() }
        armCheckDeadline(slot)
    }

    /// One item of a peer's signalling for a stream.
    public enum RemoteSignal: Sendable, Equatable {
        case credentials(ICECredentials)
        /// A candidate line as the peer sent it (`addRemoteCandidate(_:to:)`).
        case candidate(String)
        case endOfCandidates
    }

    /// Several signalling items for one stream in one call, applied in order exactly as the single
    /// calls would be: a caller that has them at once (signals held until the stream existed, a
    /// whole description) hops onto the loop thread once instead of once per item. Returns each
    /// item's error, nil where it was taken; throws only for a stream this agent does not have.
    public func applyRemote(_ signals: [RemoteSignal], to id: ICEStream.ID) throws(ICEError) -> [ICEError?] {
        _ = try slot(id)
        return signals.map { signal in
            do throws(ICEError) {
                switch signal {
                case .credentials(let credentials): try setRemoteCredentials(credentials, for: id)
                case .candidate(let line): _ = try addRemoteCandidate(line, to: id)
                case .endOfCandidates: try remoteCandidatesDone(for: id)
                }
                return nil
            } catch {
                return error
            }
        }
    }

    /// ICE restart (RFC 5245 §9.1.1.1): a new generation with new credentials and fresh gathering
    /// (new host, server-reflexive and relayed candidates, so a changed network or NAT mapping is
    /// picked up). Returns the new credentials to send; the candidates trickle as events. The old
    /// generation keeps carrying datagrams until the new one connects. Call it both to initiate a
    /// restart and when the peer announces one. `keepingOldPath: false` when the old path is known
    /// dead (the node stopped hearing the peer): sends then fail until the new generation
    /// connects, so the caller can hold and resend them, instead of vanishing into the old path.
    public func restart(_ id: ICEStream.ID, keepingOldPath: Bool = true) throws(ICEError) -> ICECredentials {
        let slot = try slot(id)
        if let old = slot.session {
            if let previous = slot.retiring { retire(previous) }
            slot.retiring = old
        }
        if let credentials = slot.remoteCredentials { slot.previousRemoteUfrags.insert(credentials.ufrag) }
        slot.generation += 1
        slot.stream.eventSink.yield(.restarted(generation: slot.generation))
        do {
            try startGeneration(of: slot)
        } catch {
            // No new generation: the stream has no working session left. The node removes it.
            if let retiring = slot.retiring { retire(retiring) }
            if let session = slot.session, session !== slot.retiring { retire(session) }
            slot.session = nil
            slot.retiring = nil
            slot.stream.setSendTarget(nil)
            transition(slot, to: .failed(.checksFailed))
            throw error
        }
        // Nothing to bridge if the old path is already dead.
        if !keepingOldPath || !slot.retiringWasConnected, let retiring = slot.retiring {
            slot.retiring = nil
            retire(retiring)
            slot.stream.setSendTarget(slot.session)
        }
        logger.info("ICE restart", metadata: ["stream": "\(id)", "generation": "\(slot.generation)"])
        return try currentSession(of: slot).localCredentials
    }

    /// Removes a peer's stream: releases its relay allocations, finishes its event and datagram
    /// streams.
    public func removeStream(_ id: ICEStream.ID) async {
        guard let slot = slots.removeValue(forKey: id) else { return }
        slot.deadline?.cancel()
        slot.stream.finish()
        let sessions = [slot.session, slot.retiring].compactMap { $0 }
        slot.session = nil
        slot.retiring = nil
        for session in sessions { await close(session) }
    }

    /// Removes every stream and waits until libnice released everything (TURN allocations
    /// included). Further calls fail with `.closed`.
    public func close() async {
        closed = true
        for id in Array(slots.keys) { await removeStream(id) }
        while let (_, task) = closing.first { await task.value }
    }

    public func stats(for id: ICEStream.ID) throws(ICEError) -> ICEStreamStats {
        let slot = try slot(id)
        return ICEStreamStats(
            role: slot.stream.role, generation: slot.generation, state: slot.state, selectedPair: slot.selectedPair,
            timeToConnected: slot.connectedAt.map { slot.startedAt.duration(to: $0) },
            localCandidates: slot.localCandidates.count, remoteCandidates: slot.remoteCandidates.count,
            rejectedRemoteCandidates: slot.rejectedRemote, traffic: slot.stream.counters.snapshot)
    }

    /// A boolean GObject property of the stream's libnice agent (tests check Parley's settings).
    func libniceProperty(_ name: String, of id: ICEStream.ID) throws(ICEError) -> Bool {
        try currentSession(of: slot(id)).boolProperty(name)
    }

    /// Whether the stream's libnice agent nominates aggressively (RFC 5245 §8.1.1.2).
    func nominatesAggressively(_ id: ICEStream.ID) throws(ICEError) -> Bool {
        try currentSession(of: slot(id)).nominatesAggressively
    }

    /// Callback contexts of this agent's sessions still alive (zero once closed and unwound).
    nonisolated var liveCallbackContexts: Int { ledger.live.load(ordering: .relaxed) }

    // MARK: libnice callbacks (on this actor's thread, via SignalContext.deliver)

    func localCandidateFound(_ candidate: ICECandidate?, context: SignalContext) {
        guard let slot = current(context), var candidate, let session = slot.session else { return }
        candidate.generation = slot.generation
        candidate.ufrag = session.localCredentials.ufrag
        if let rejection = policy.rejection(of: candidate, side: .local, count: slot.localCandidates.count) {
            logger.debug(
                "local candidate not offered", metadata: ["stream": "\(slot.stream.id)", "why": "\(rejection)"])
            return
        }
        let offered = policy.signalled(candidate)
        slot.localCandidates.append(offered)
        slot.stream.eventSink.yield(.localCandidate(offered))
    }

    func localGatheringDone(context: SignalContext) {
        guard let slot = current(context), !slot.localDone else { return }
        slot.localDone = true
        slot.stream.eventSink.yield(.localCandidatesDone)
        armCheckDeadline(slot)
    }

    func componentStateChanged(_ raw: NiceComponentState, context: SignalContext) {
        guard let slot = current(context) else { return }
        let state: ICEConnectionState
        switch raw {
        case NICE_COMPONENT_STATE_GATHERING: state = .gathering
        case NICE_COMPONENT_STATE_CONNECTING: state = .connecting
        case NICE_COMPONENT_STATE_CONNECTED: state = .connected
        case NICE_COMPONENT_STATE_READY: state = .ready
        case NICE_COMPONENT_STATE_FAILED: state = .failed(ICEFailure.diagnose(facts(of: slot)))
        default: state = .disconnected
        }
        transition(slot, to: state)
    }

    private func transition(_ slot: StreamSlot, to state: ICEConnectionState) {
        guard state != slot.state else { return }
        slot.state = state
        if state.isConnected {
            slot.deadline?.cancel()
            slot.deadline = nil
            slot.everConnected = true
            if slot.connectedAt == nil { slot.connectedAt = .now }
            // The new generation works: move traffic over and let the old one go.
            if let retiring = slot.retiring {
                slot.retiring = nil
                slot.stream.setSendTarget(slot.session)
                retire(retiring)
            }
        }
        // Checks are over once ready: what still comes for libnice (consent, keepalives) is rare.
        if state == .ready { slot.session?.receiveDirectly() } else { slot.session?.stopReceivingDirectly() }
        logger.debug("ICE state", metadata: ["stream": "\(slot.stream.id)", "state": "\(state)"])
        slot.stream.eventSink.yield(.stateChanged(state))
    }

    func selectedPairChanged(_ pair: ICECandidatePair, context: SignalContext) {
        guard let slot = current(context), slot.selectedPair != pair else { return }
        slot.selectedPair = pair
        if slot.state == .ready { slot.session?.receiveDirectly() }
        logger.debug("selected pair", metadata: ["stream": "\(slot.stream.id)", "pair": "\(pair)"])
        slot.stream.eventSink.yield(.selectedPair(pair))
    }

    // MARK: Internals

    /// Per-stream state; only touched by the actor (and so only on the loop thread).
    private final class StreamSlot {
        let stream: ICEStream
        var generation = 0
        var session: NiceSession?
        /// The previous generation, still carrying traffic until this one connects.
        var retiring: NiceSession?
        var retiringWasConnected = false
        var startedAt = ContinuousClock.now
        var connectedAt: ContinuousClock.Instant?
        var state = ICEConnectionState.gathering
        var everConnected = false
        var selectedPair: ICECandidatePair?
        var localCandidates: [ICECandidate] = []
        var localDone = false
        var remoteCredentials: ICECredentials?
        var previousRemoteUfrags: Set<String> = []
        var pendingRemote: [ICECandidate] = []
        var remoteCandidates: [ICECandidate] = []
        var rejectedRemote = 0
        var remoteDone = false
        /// Fails the stream if checks have not succeeded in time (`checkDeadline`).
        var deadline: Task<Void, Never>?

        init(stream: ICEStream) { self.stream = stream }

        /// Forgets everything about the previous generation except the traffic counters.
        func beginGeneration() {
            retiringWasConnected = state.isConnected
            startedAt = .now
            connectedAt = nil
            state = .gathering
            everConnected = false
            selectedPair = nil
            localCandidates = []
            localDone = false
            remoteCredentials = nil
            pendingRemote = []
            remoteCandidates = []
            rejectedRemote = 0
            remoteDone = false
            deadline?.cancel()
            deadline = nil
        }
    }

    private func slot(_ id: ICEStream.ID) throws(ICEError) -> StreamSlot {
        guard let slot = slots[id] else {
            throw ICEError(closed ? .closed : .unknownStream, closed ? "the ICE agent is closed" : "no stream \(id)")
        }
        return slot
    }

    private func currentSession(of slot: StreamSlot) throws(ICEError) -> NiceSession {
        guard let session = slot.session else { throw ICEError(.unknownStream, "stream \(slot.stream.id) is closed") }
        return session
    }

    /// The slot a signal is about, if the signal is from its current generation.
    private func current(_ context: SignalContext) -> StreamSlot? {
        guard let slot = slots[context.stream], slot.generation == context.generation else { return nil }
        return slot
    }

    private func startGeneration(of slot: StreamSlot) throws(ICEError) {
        slot.beginGeneration()
        let signals = SignalContext(owner: self, stream: slot.stream.id, generation: slot.generation, ledger: ledger)
        let receive = ReceiveContext(
            sink: slot.stream.datagramSink, route: slot.stream.route, counters: slot.stream.counters, ledger: ledger)
        let session = try NiceSession(
            configuration: configuration, role: slot.stream.role, executor: executor, signals: signals, receive: receive
        )
        slot.session = session
        if slot.retiring == nil { slot.stream.setSendTarget(session) }
        // Signals fired inside gather (host candidates, often) find the slot already complete.
        try session.gather()
    }

    /// Once both sides sent all candidates and the peer's credentials are known, checks get
    /// `checkDeadline` to succeed.
    private func armCheckDeadline(_ slot: StreamSlot) {
        guard slot.deadline == nil, slot.localDone, slot.remoteDone, slot.remoteCredentials != nil,
            !slot.state.isConnected
        else { return }
        let id = slot.stream.id
        let generation = slot.generation
        let limit = configuration.checkDeadline
        slot.deadline = Task {
            guard (try? await Task.sleep(for: limit)) != nil else { return }
            self.checkDeadlinePassed(id, generation: generation)
        }
    }

    private func checkDeadlinePassed(_ id: ICEStream.ID, generation: Int) {
        guard let slot = slots[id], slot.generation == generation, !slot.state.isConnected else { return }
        if case .failed = slot.state { return }
        logger.info("ICE checks timed out", metadata: ["stream": "\(id)"])
        transition(slot, to: .failed(ICEFailure.diagnose(facts(of: slot))))
    }

    private func hold(_ candidate: ICECandidate, in slot: StreamSlot) throws(ICEError) -> RemoteCandidateOutcome {
        if let rejection = policy.rejection(of: candidate, side: .remote, count: slot.pendingRemote.count) {
            slot.rejectedRemote += 1
            throw ICEError(.candidateRejected(rejection), "remote candidate refused: \(rejection)")
        }
        slot.pendingRemote.append(candidate)
        return .pending
    }

    private func apply(_ candidate: ICECandidate, to slot: StreamSlot) throws(ICEError) {
        if let rejection = policy.rejection(of: candidate, side: .remote, count: slot.remoteCandidates.count) {
            slot.rejectedRemote += 1
            throw ICEError(.candidateRejected(rejection), "remote candidate refused: \(rejection)")
        }
        guard try currentSession(of: slot).addRemoteCandidate(candidate) else {
            slot.rejectedRemote += 1
            throw ICEError(.libnice, "libnice did not take the remote candidate")
        }
        slot.remoteCandidates.append(candidate)
    }

    private func facts(of slot: StreamSlot) -> ICEFailure.Facts {
        ICEFailure.Facts(
            wasConnected: slot.everConnected, hasRemoteCredentials: slot.remoteCredentials != nil,
            remoteCandidateKinds: Set(slot.remoteCandidates.map(\.kind)),
            localCandidateKinds: Set(slot.localCandidates.map(\.kind)),
            relayConfigured: !configuration.turnServers.isEmpty)
    }

    /// Closes a session and waits until libnice is done with it (TURN allocations released).
    private func close(_ session: NiceSession) async {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            session.close { done.resume() }
        }
        session.tearDown()
    }

    /// Closes a superseded session in the background; `close()` waits for it.
    private func retire(_ session: NiceSession) {
        let key = nextClosing
        nextClosing += 1
        closing[key] = Task {
            await self.close(session)
            self.closing[key] = nil
        }
    }
}
