import ControlAPI
import ICE
import Logging
import ParleyAudio
import ParleyCore
import ParleyProtocol
import RendezvousClient
import RendezvousWire
import Synchronization

/// What a meeting needs from its daemon.
struct MeetingContext: Sendable {
    let identity: NodeIdentity
    let configuration: NodeConfiguration
    let executor: GLibExecutor
    let events: EventHub
    let logger: Logger
}

/// Everything that can happen to a meeting, in the one order its loop handles them: rendezvous
/// events, ICE events, facts from the ICE receive path, timer ticks and requests from the control
/// API all go through one mailbox, so the meeting's state has a single owner and no interleaving
/// at await points (an actor would re-enter while it awaits the ICE agent or the rendezvous).
enum MeetingInput: Sendable {
    case rendezvous(RendezvousClient.Event)
    /// The rendezvous client stopped for good: nil after a cancel, else why (e.g. room-full).
    case rendezvousStopped(String?)
    case ice(link: Int, ICEStreamEvent)
    case transport(link: Int, PeerTransport.Received)
    case audioFailed(String)
    case tick
    case request(MeetingRequest)
}

enum MeetingRequest: Sendable {
    case status(CheckedContinuation<MeetingStatus, Never>)
    case verify(CheckedContinuation<Verification, Never>)
    case setMuted(Bool, CheckedContinuation<Void, Never>)
    case leave(CheckedContinuation<Void, Never>)
}

/// The meeting's part of `parley status`.
struct MeetingStatus: Sendable {
    var state: String
    var rendezvous: String
    var securityCode: String?
    var peers: [PeerStatus]
}

/// One meeting: the rendezvous client, the node's ICE agent (one stream per peer), a session, a
/// link state machine and an audio channel per peer, and the audio engine. `run()` is its loop.
final class Meeting: Sendable {
    let invite: Invite
    let admission = Admission()
    private let context: MeetingContext
    private let mutedAtStart: Bool
    private let inputs: AsyncStream<MeetingInput>
    private let input: AsyncStream<MeetingInput>.Continuation

    init(invite: Invite, context: MeetingContext, muted: Bool) {
        self.invite = invite
        self.context = context
        mutedAtStart = muted
        (inputs, input) = AsyncStream.makeStream(of: MeetingInput.self)
    }

    /// Runs the meeting until it is left or fails; returns why it ended (nil: left).
    func run() async -> String? {
        let loop = MeetingLoop(invite: invite, context: context, input: input, admission: admission)
        let failure = await loop.run(inputs: inputs, muted: mutedAtStart)
        input.finish()
        // Requests that raced with the end get an answer instead of waiting forever.
        for await leftover in inputs {
            if case .request(let request) = leftover { MeetingLoop.refuse(request) }
        }
        return failure
    }

    func status() async -> MeetingStatus {
        await ask(
            { .status($0) }, orElse: MeetingStatus(state: "idle", rendezvous: "none", securityCode: nil, peers: []))
    }

    func verify() async -> Verification {
        await ask({ .verify($0) }, orElse: Verification(securityCode: "", members: []))
    }

    func setMuted(_ muted: Bool) async {
        await ask({ .setMuted(muted, $0) }, orElse: ())
    }

    /// Announces the departure (LEAVE over every session, BYE through the rendezvous) and ends.
    func leave() async {
        await ask({ .leave($0) }, orElse: ())
    }

    private func ask<T: Sendable>(
        _ make: (CheckedContinuation<T, Never>) -> MeetingRequest, orElse fallback: T
    ) async -> T {
        await withCheckedContinuation { continuation in
            if case .terminated = input.yield(.request(make(continuation))) {
                continuation.resume(returning: fallback)
            }
        }
    }
}

/// Whether the rendezvous admitted us: the first WELCOME, or the refusal that ended the meeting.
final class Admission: Sendable {
    enum Outcome: Sendable, Equatable {
        case admitted
        case failed(String)
        /// Still connecting when the caller stopped waiting.
        case pending
    }

    private struct State: ~Copyable {
        var outcome: Outcome = .pending
        var next = 0
        var waiters: [Int: CheckedContinuation<Outcome, Never>] = [:]
    }

    private let state = Mutex(State())

    /// Records the outcome once; wakes every waiter.
    func resolve(_ outcome: Outcome) {
        let waiters = state.withLock { state -> [CheckedContinuation<Outcome, Never>] in
            guard state.outcome == .pending else { return [] }
            state.outcome = outcome
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume(returning: outcome) }
    }

    var outcome: Outcome { state.withLock { $0.outcome } }

    /// Waits for the outcome, at most `limit` (then `.pending`).
    func wait(limit: Duration) async -> Outcome {
        let id = state.withLock { state in
            defer { state.next += 1 }
            return state.next
        }
        let timer = Task {
            try? await Task.sleep(for: limit)
            self.timeOut(id)
        }
        defer { timer.cancel() }
        return await withCheckedContinuation { continuation in
            let settled = state.withLock { state -> Outcome? in
                guard state.outcome == .pending else { return state.outcome }
                state.waiters[id] = continuation
                return nil
            }
            if let settled { continuation.resume(returning: settled) }
        }
    }

    private func timeOut(_ id: Int) {
        let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
        waiter?.resume(returning: .pending)
    }
}

// MARK: - The loop

/// A peer as signaling knows it.
private final class PeerRecord {
    let identity: PeerIdentity
    var name: String
    var epoch: UInt64
    var memberID: RendezvousMemberID?
    var version: UInt8
    var link: Link?

    init(identity: PeerIdentity, name: String, epoch: UInt64, memberID: RendezvousMemberID?, version: UInt8) {
        self.identity = identity
        self.name = name
        self.epoch = epoch
        self.memberID = memberID
        self.version = version
    }

    var shortID: String { identity.shortID }
}

/// One peer link: its ICE stream, session, audio channel and state machine.
private final class Link {
    let id: Int
    let peer: PeerRecord
    var machine: PeerLink
    let stream: ICEStream
    let transport: PeerTransport
    let channel: ReceiveChannel
    let inEngine: Bool
    var tasks: [Task<Void, Never>] = []
    /// Our ICE generation for this link (§6.6), and the ufrag of its credentials.
    var generation: UInt32 = 0
    var localUfrag: String
    /// Restarts asked of the agent whose `.restarted` event has not come through yet: events
    /// before it belong to the old generation.
    var restartsInFlight = 0
    /// Whether this generation's gathering is done (ICE_CANDIDATES_DONE sent).
    var localDone = false
    /// The generation whose path last started the session (nil: never connected).
    var sessionGeneration: UInt32?
    var pair: ICECandidatePair?
    /// Facts already given to the state machine.
    var fedPacketAt: ContinuousClock.Instant?
    var fedReports = 0
    var reportedState: PeerLink.State
    var nextReport: ContinuousClock.Instant
    var lastReportSent: ContinuousClock.Instant
    var lossPermille: UInt16 = 0
    /// Statistics at the end of each of the last six report intervals (the newest starts the
    /// current interval; the oldest starts the five-interval window status shows), and two
    /// traffic samples.
    var lossHistory: [ReceiveStatistics] = []
    var traffic: [(at: ContinuousClock.Instant, counts: ICETrafficCounts)] = []

    init(
        id: Int, peer: PeerRecord, machine: PeerLink, stream: ICEStream, transport: PeerTransport,
        channel: ReceiveChannel, inEngine: Bool, localUfrag: String, now: ContinuousClock.Instant
    ) {
        self.id = id
        self.peer = peer
        self.machine = machine
        self.stream = stream
        self.transport = transport
        self.channel = channel
        self.inEngine = inEngine
        self.localUfrag = localUfrag
        reportedState = machine.state
        nextReport = now
        lastReportSent = now
    }
}

private final class MeetingLoop {
    let invite: Invite
    let context: MeetingContext
    let input: AsyncStream<MeetingInput>.Continuation
    let admission: Admission
    let keys: RoomKeys
    let me: NodeIdentity
    let epoch = UInt64.random(in: 1...UInt64.max)
    var logger: Logger
    var sequencer = EnvelopeSequencer()
    var replayGuard = EnvelopeReplayGuard()
    var pins: IdentityPins?
    let fanout = MediaFanout()
    var engine: AudioEngine?
    var client: RendezvousClient?
    var agent: ICEAgent?
    var background: [Task<Void, Never>] = []
    var peers: [[UInt8]: PeerRecord] = [:]
    var linksByID: [Int: Link] = [:]
    var nextLinkID = 1
    var rendezvousState = "connecting"
    var admitted = false
    var ended = false
    var failure: String?
    var muted = false
    var securityMembers: [[UInt8]] = []
    var securityCode: SecurityCode?
    var speaking: [String] = []

    init(invite: Invite, context: MeetingContext, input: AsyncStream<MeetingInput>.Continuation, admission: Admission) {
        self.invite = invite
        self.context = context
        self.input = input
        self.admission = admission
        keys = RoomKeys(invite: invite)
        me = context.identity
        logger = context.logger
        logger[metadataKey: "room"] = "\(hexString(keys.roomID.prefix(4)))"
    }

    static func refuse(_ request: MeetingRequest) {
        switch request {
        case .status(let reply):
            reply.resume(returning: MeetingStatus(state: "idle", rendezvous: "none", securityCode: nil, peers: []))
        case .verify(let reply): reply.resume(returning: Verification(securityCode: "", members: []))
        case .setMuted(_, let reply): reply.resume()
        case .leave(let reply): reply.resume()
        }
    }

    // MARK: Running

    func run(inputs: AsyncStream<MeetingInput>, muted: Bool) async -> String? {
        self.muted = muted
        do {
            pins = try IdentityPins(stateDirectory: context.configuration.stateDirectory, roomID: keys.roomID)
        } catch {
            logger.warning("identity pins unavailable", metadata: ["error": "\(error)"])
        }
        startAudio()
        startRendezvous()
        let input = self.input
        background.append(
            Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(100))
                    input.yield(.tick)
                }
            })
        publish(ControlEvent(kind: .meeting, state: "joining", message: "rendezvous \(invite.rendezvous.hostHeader)"))
        for await item in inputs {
            await handle(item)
            if ended { break }
        }
        await tearDown()
        admission.resolve(.failed(failure ?? "left before the rendezvous admitted us"))
        publish(ControlEvent(kind: .meeting, state: failure == nil ? "left" : "failed", message: failure))
        return failure
    }

    private func startAudio() {
        let input = self.input
        let fanout = self.fanout
        do {
            let engine = try AudioEngine(
                configuration: context.configuration.audio,
                onEncodedFrame: { payload in fanout.send(payload) },
                onFailure: { error in input.yield(.audioFailed("\(error)")) })
            engine.setMuted(muted)
            try engine.start()
            self.engine = engine
        } catch {
            warn("audio unavailable in this meeting: \(error); peers still connect, but you hear and send nothing")
        }
    }

    private func startRendezvous() {
        var configuration = RendezvousClient.Configuration(url: invite.rendezvous, certificatePin: invite.tlsPin)
        configuration.reconnect = .init()
        let client = RendezvousClient(
            configuration: configuration, roomKey: keys.roomKey, logger: logger.with(label: "parley.rendezvous"))
        self.client = client
        let input = self.input
        background.append(
            Task {
                do {
                    try await client.run()
                    input.yield(.rendezvousStopped(nil))
                } catch {
                    input.yield(.rendezvousStopped(explainRefusal(error)))
                }
            })
        background.append(
            Task {
                for await event in client.events { input.yield(.rendezvous(event)) }
            })
    }

    private func handle(_ item: MeetingInput) async {
        switch item {
        case .rendezvous(let event): await handleRendezvous(event)
        case .rendezvousStopped(let reason): rendezvousStopped(reason)
        case .ice(let id, let event): if let link = linksByID[id] { await handleICE(event, on: link) }
        case .transport(let id, let received): if let link = linksByID[id] { await handleTransport(received, on: link) }
        case .audioFailed(let reason):
            warn("audio device failed: \(reason); the meeting goes on without sound")
            engine?.stop()
        case .tick: await tick()
        case .request(let request): await handleRequest(request)
        }
    }

    private func handleRequest(_ request: MeetingRequest) async {
        switch request {
        case .status(let reply): reply.resume(returning: status())
        case .verify(let reply): reply.resume(returning: verification())
        case .setMuted(let value, let reply):
            muted = value
            engine?.setMuted(value)
            reply.resume()
        case .leave(let reply):
            await farewell()
            ended = true
            reply.resume()
        }
    }

    // MARK: Rendezvous

    private func handleRendezvous(_ event: RendezvousClient.Event) async {
        switch event {
        case .joined(let welcome, let reconnected):
            rendezvousState = "connected"
            if agent == nil {
                guard await createAgent(services: welcome.services) else { return }
            }
            if reconnected {
                // Member ids from the old connection mean nothing now (§4.3); HELLOs re-address.
                for peer in peers.values { peer.memberID = nil }
                publish(ControlEvent(kind: .meeting, state: "rendezvous-connected", message: "reconnected"))
            } else {
                publish(ControlEvent(kind: .meeting, state: "in-meeting", message: "\(welcome.members.count) others"))
            }
            logger.info("admitted to the room", metadata: ["others": "\(welcome.members.count)"])
            admitted = true
            admission.resolve(.admitted)
            await send(hello(), to: nil)
        case .memberJoined:
            break  // its HELLO follows
        case .memberLeft(let member):
            for peer in peers.values where peer.memberID == member {
                peer.memberID = nil
                if let link = peer.link { await feed(.rendezvousLeft, to: link) }
            }
        case .delivered(let member, let payload):
            await handleEnvelope(payload, from: member)
        case .disconnected(let reason, let retryIn):
            rendezvousState = "reconnecting"
            logger.info("rendezvous lost; audio continues", metadata: ["reason": "\(reason)", "retryIn": "\(retryIn)"])
            publish(ControlEvent(kind: .meeting, state: "rendezvous-reconnecting", message: reason))
        }
    }

    private func rendezvousStopped(_ reason: String?) {
        guard let reason else { return }
        if !admitted {
            failure = "cannot join: \(reason)"
            logger.error("the rendezvous refused this node", metadata: ["reason": "\(reason)"])
            ended = true
            return
        }
        rendezvousState = "none"
        warn("the rendezvous refused to take this node back (\(reason)); connected peers still hear you")
    }

    private func createAgent(services: [RendezvousService]) async -> Bool {
        let settings = context.configuration.ice
        let plan = ICEServerPlan.plan(settings: settings, services: services, hints: invite.turnHints)
        for skipped in plan.skipped { logger.notice("ICE server not used", metadata: ["why": "\(skipped)"]) }
        do {
            let configuration = try await ICEServerPlan.configuration(plan, settings: settings, resolve: resolveHost)
            agent = try ICEAgent(
                configuration: configuration, executor: context.executor, logger: logger.with(label: "parley.ice"))
            logger.info(
                "ICE ready",
                metadata: [
                    "stun": "\(configuration.stunServer.map { "\($0)" } ?? "none")",
                    "turn": "\(configuration.turnServers.count)", "relayOnly": "\(configuration.relayOnly)",
                ])
            return true
        } catch {
            failure = "cannot set up ICE: \(error)"
            ended = true
            return false
        }
    }

    // MARK: Envelopes

    private func hello() -> SignalingMessage {
        // The name was validated when the daemon started, and the epoch is non-zero.
        .hello(
            try! Hello(identity: me.peerIdentity, sessionEpoch: epoch, displayName: context.configuration.displayName))
    }

    /// Seals and sends an envelope to one peer, or to everyone (`peer == nil`). Sending fails
    /// quietly between rendezvous connections; the link's timers retry what matters.
    private func send(_ message: SignalingMessage, to peer: PeerRecord?) async {
        guard let client else { return }
        let recipient: RendezvousClient.Recipient
        if let peer {
            guard let member = peer.memberID else {
                logger.debug("no member id for peer; envelope dropped", metadata: ["peer": "\(peer.shortID)"])
                return
            }
            recipient = .member(member)
        } else {
            recipient = .everyone
        }
        do {
            let envelope = try Envelope.seal(
                message, to: peer.map { .peer($0.identity) } ?? .everyone, from: me,
                sequence: sequencer.nextSequence(), keys: keys)
            try await client.send(to: recipient, payload: envelope)
        } catch {
            logger.debug("envelope not sent", metadata: ["type": "\(message.kind)", "error": "\(error)"])
        }
    }

    private func handleEnvelope(_ payload: [UInt8], from member: RendezvousMemberID) async {
        let received: ReceivedEnvelope
        do {
            received = try Envelope.open(payload, as: me, keys: keys, replayGuard: &replayGuard)
        } catch {
            // Another room's traffic, tampering, a replay: dropped, contents never logged.
            logger.debug("envelope dropped", metadata: ["why": "\(error)"])
            return
        }
        if case .hello(let hello) = received.message {
            await handleHello(hello, broadcast: received.isBroadcast, from: member)
            return
        }
        guard let peer = peers[received.sender], let link = peer.link else { return }
        switch received.message {
        case .hello: break
        case .iceCredentials(let credentials):
            let decision = SignalingRules.restartingMessage(
                generation: credentials.generation, current: link.generation)
            if case .restart(let generation) = decision {
                await restartICE(link, to: generation, announce: false)
                await feed(.restartRequested, to: link)
            }
            guard decision != .ignore else { return }
            do {
                let remote = try ICE.ICECredentials(ufrag: credentials.usernameFragment, password: credentials.password)
                try await agent?.setRemoteCredentials(remote, for: link.stream.id)
                await feed(.remoteCredentials, to: link)
            } catch {
                logger.info(
                    "peer's ICE credentials refused", metadata: ["peer": "\(peer.shortID)", "error": "\(error)"])
            }
        case .iceCandidate(let generation, let line):
            guard SignalingRules.candidateMessage(generation: generation, current: link.generation) == .apply else {
                return
            }
            do {
                try await agent?.addRemoteCandidate(line, to: link.stream.id)
            } catch {
                logger.debug("peer's candidate refused", metadata: ["peer": "\(peer.shortID)", "error": "\(error)"])
            }
        case .iceCandidatesDone(let generation):
            guard SignalingRules.candidateMessage(generation: generation, current: link.generation) == .apply else {
                return
            }
            try? await agent?.remoteCandidatesDone(for: link.stream.id)
        case .iceRestart(let generation):
            if case .restart(let target) = SignalingRules.restartingMessage(
                generation: generation, current: link.generation)
            {
                await restartICE(link, to: target, announce: false)
                await feed(.restartRequested, to: link)
            }
        case .bye:
            await feed(.left, to: link)
        }
    }

    private func handleHello(_ hello: Hello, broadcast: Bool, from member: RendezvousMemberID) async {
        let key = hello.identity.identityKey
        let known = peers[key]
        let common = hello.commonVersion(with: [1])
        let decision = SignalingRules.hello(
            from: known.map { SignalingRules.KnownPeer(epoch: $0.epoch, hasLink: $0.link != nil) },
            epoch: hello.sessionEpoch,
            isBroadcast: broadcast, commonVersion: common)
        let peer: PeerRecord
        let readdressed = known?.memberID != member
        if let known {
            peer = known
            if peer.name != hello.displayName {
                publish(
                    ControlEvent(kind: .peerJoined, peer: peer.shortID, name: hello.displayName, message: "renamed"))
            }
            peer.name = hello.displayName
            peer.epoch = hello.sessionEpoch
            peer.memberID = member
        } else {
            peer = PeerRecord(
                identity: hello.identity, name: hello.displayName, epoch: hello.sessionEpoch, memberID: member,
                version: common ?? 1)
            peers[key] = peer
        }
        peer.version = common ?? peer.version
        if decision.answer { await send(self.hello(), to: peer) }
        switch decision.link {
        case .keep:
            // Re-addressed (it reconnected to the rendezvous, or we did) while the link is not up:
            // what we sent meanwhile may have gone to a dead connection, so send it again.
            if let link = peer.link, link.machine.state != .up, readdressed { await resendSignaling(link) }
            return
        case .incompatible:
            warn("\(hello.displayName) runs a Parley that speaks none of our protocol versions; they need to update")
            return
        case .replace:
            if let old = peer.link { await endLink(old, reason: "restarted (new session)") }
        case .start:
            break
        }
        checkPin(peer)
        publish(ControlEvent(kind: .peerJoined, peer: peer.shortID, name: peer.name))
        await startLink(peer)
    }

    private func checkPin(_ peer: PeerRecord) {
        guard var pins else { return }
        do {
            switch try pins.check(displayName: peer.name, identityKey: peer.identity.identityKey) {
            case .known: return
            case .new, .renamed: try pins.pin(displayName: peer.name, identityKey: peer.identity.identityKey)
            }
            self.pins = pins
        } catch let changed as IdentityKeyChanged {
            logger.warning("identity key changed", metadata: ["peer": "\(peer.shortID)", "name": "\(peer.name)"])
            publish(ControlEvent(kind: .warning, peer: peer.shortID, name: peer.name, message: "WARNING: \(changed)"))
        } catch {
            logger.warning("cannot save identity pins", metadata: ["error": "\(error)"])
        }
    }

    // MARK: Links

    private func startLink(_ peer: PeerRecord) async {
        guard let agent else { return }
        let now = ContinuousClock.now
        let identity = peer.identity
        do {
            let stream = try await agent.addStream(
                role: .forPair(localIdentity: me.publicKey, peerIdentity: identity.identityKey))
            let credentials = try await agent.localCredentials(of: stream.id)
            var inEngine = false
            let channel: ReceiveChannel
            if let engine, let attached = try? engine.addPeer(name: peer.shortID) {
                channel = attached
                inEngine = true
            } else {
                channel = try ReceiveChannel(name: peer.shortID)
            }
            let session = PeerSession(local: me, peer: identity, keys: keys, protocolVersion: peer.version)
            let transport = PeerTransport(session: session, stream: stream, channel: channel)
            let machine = PeerLink(isInitiator: session.isPreferredInitiator, now: now)
            let link = Link(
                id: nextLinkID, peer: peer, machine: machine, stream: stream, transport: transport, channel: channel,
                inEngine: inEngine, localUfrag: credentials.ufrag, now: now)
            nextLinkID += 1
            peer.link = link
            linksByID[link.id] = link
            startTasks(link)
            updateFanout()
            logger.info(
                "link started", metadata: ["peer": "\(peer.shortID)", "role": "\(stream.role)", "link": "\(link.id)"])
            publish(ControlEvent(kind: .link, peer: peer.shortID, name: peer.name, state: link.machine.state.rawValue))
            await send(.iceCredentials(try signalingCredentials(credentials, generation: 0)), to: peer)
        } catch {
            warn("cannot start a link to \(peer.name): \(error)")
        }
    }

    /// Our signaling for the link's current generation once more (§6.6 steps 4–5; duplicates are
    /// harmless: same-generation credentials and candidates change nothing at the peer).
    private func resendSignaling(_ link: Link) async {
        guard let agent else { return }
        logger.info(
            "re-sending ICE signaling", metadata: ["peer": "\(link.peer.shortID)", "generation": "\(link.generation)"])
        if link.generation > 0, link.machine.isInitiator {
            await send(.iceRestart(generation: link.generation), to: link.peer)
        }
        do {
            let credentials = try await agent.localCredentials(of: link.stream.id)
            await send(
                .iceCredentials(try signalingCredentials(credentials, generation: link.generation)), to: link.peer)
            for candidate in try await agent.localCandidates(of: link.stream.id) {
                await send(.iceCandidate(generation: link.generation, candidate: candidate.line), to: link.peer)
            }
            if link.localDone { await send(.iceCandidatesDone(generation: link.generation), to: link.peer) }
        } catch {
            logger.debug("cannot re-send ICE signaling", metadata: ["error": "\(error)"])
        }
    }

    private func signalingCredentials(
        _ credentials: ICE.ICECredentials, generation: UInt32
    ) throws
        -> ParleyProtocol.ICECredentials
    {
        try ParleyProtocol.ICECredentials(
            generation: generation, usernameFragment: credentials.ufrag, password: credentials.password)
    }

    private func startTasks(_ link: Link) {
        let input = self.input
        let id = link.id
        let stream = link.stream
        let transport = link.transport
        link.tasks.append(
            Task {
                for await event in stream.events { input.yield(.ice(link: id, event)) }
            })
        // Datagrams are decrypted on the ICE thread as they arrive (no task wake-up per packet);
        // only what the meeting must act on goes through its mailbox.
        stream.deliverDatagrams { datagram in
            let received = transport.receive(datagram, now: .now)
            if !received.events.isEmpty || received.report != nil || received.leave || received.firstMedia {
                input.yield(.transport(link: id, received))
            }
        }
    }

    private func endLink(_ link: Link, reason: String) async {
        guard linksByID.removeValue(forKey: link.id) != nil else { return }
        if link.peer.link === link { link.peer.link = nil }
        for task in link.tasks { task.cancel() }
        link.transport.close()
        if link.inEngine { engine?.removePeer(link.channel) }
        updateFanout()
        await agent?.removeStream(link.stream.id)
        logger.info("link ended", metadata: ["peer": "\(link.peer.shortID)", "why": "\(reason)"])
        publish(ControlEvent(kind: .link, peer: link.peer.shortID, name: link.peer.name, state: "gone"))
        publish(ControlEvent(kind: .peerLeft, peer: link.peer.shortID, name: link.peer.name, message: reason))
        updateSecurityCode()
    }

    private func updateFanout() {
        fanout.set(linksByID.values.sorted { $0.id < $1.id }.map(\.transport))
    }

    /// ICE restart at `generation` (§6.6 step 5): new credentials and fresh gathering; with
    /// `announce`, we are the side that asks for it.
    private func restartICE(_ link: Link, to generation: UInt32, announce: Bool) async {
        guard let agent else { return }
        if announce { await send(.iceRestart(generation: generation), to: link.peer) }
        do {
            // A link that still hears the peer keeps its old path until the new one works; one
            // that does not has no path worth bridging (handshake answers wait for the new one).
            let credentials = try await agent.restart(link.stream.id, keepingOldPath: link.machine.state == .up)
            link.generation = generation
            link.localUfrag = credentials.ufrag
            link.localDone = false
            link.restartsInFlight += 1
            logger.info("ICE restart", metadata: ["peer": "\(link.peer.shortID)", "generation": "\(generation)"])
            await send(.iceCredentials(try signalingCredentials(credentials, generation: generation)), to: link.peer)
        } catch {
            logger.warning("ICE restart failed", metadata: ["peer": "\(link.peer.shortID)", "error": "\(error)"])
        }
    }

    private func handleICE(_ event: ICEStreamEvent, on link: Link) async {
        switch event {
        case .localCandidate(let candidate):
            guard link.restartsInFlight == 0, candidate.ufrag == nil || candidate.ufrag == link.localUfrag else {
                return
            }
            await send(.iceCandidate(generation: link.generation, candidate: candidate.line), to: link.peer)
        case .localCandidatesDone:
            guard link.restartsInFlight == 0 else { return }
            link.localDone = true
            await send(.iceCandidatesDone(generation: link.generation), to: link.peer)
        case .restarted:
            link.restartsInFlight = max(0, link.restartsInFlight - 1)
        case .selectedPair(let pair):
            link.pair = pair
            publish(
                ControlEvent(
                    kind: .link, peer: link.peer.shortID, name: link.peer.name, state: link.machine.state.rawValue,
                    route: Self.route(of: pair)))
        case .stateChanged(let state):
            if state.isConnected {
                link.transport.flush()
                if link.sessionGeneration != link.generation {
                    // A path of this generation is up: the lead starts the handshake (§7.5), the
                    // other side arms its fallback timer. After a restart the lead re-keys over
                    // the new path (§6.6 step 5), so a peer that lost its keys recovers at once.
                    let rehandshake = link.sessionGeneration != nil && link.machine.isInitiator
                    link.sessionGeneration = link.generation
                    for event in link.transport.start(now: .now, rehandshake: rehandshake) {
                        await sessionEvent(event, on: link)
                    }
                }
                await feed(.iceReady, to: link)
            } else if case .failed(let why) = state {
                logger.info("ICE failed", metadata: ["peer": "\(link.peer.shortID)", "why": "\(why)"])
                await feed(.iceFailed, to: link)
            }
        }
    }

    private func handleTransport(_ received: PeerTransport.Received, on link: Link) async {
        for event in received.events { await sessionEvent(event, on: link) }
        if received.firstMedia { sendReport(on: link, now: .now) }
        if received.leave {
            await feed(.left, to: link)
            return
        }
        if received.report != nil { await feedFacts(link, now: .now) }
    }

    private func sessionEvent(_ event: PeerSessionEvent, on link: Link) async {
        switch event {
        case .established:
            logger.info("session established", metadata: ["peer": "\(link.peer.shortID)"])
            await feed(.sessionEstablished, to: link)
            sendReport(on: link, now: .now)
            updateSecurityCode()
        case .rekeyed:
            break
        case .handshakeTimedOut, .expired, .tornDown:
            logger.info("session without keys", metadata: ["peer": "\(link.peer.shortID)", "why": "\(event)"])
            updateSecurityCode()
        }
    }

    /// Gives the state machine what the transport learned since last time.
    private func feedFacts(_ link: Link, now: ContinuousClock.Instant) async {
        let metrics = link.transport.metrics
        if let last = metrics.lastAuthenticated, last != link.fedPacketAt {
            link.fedPacketAt = last
            await feed(.packetReceived, to: link, at: last)
        }
        if metrics.isEstablished { await feed(.sessionEstablished, to: link) }
        if metrics.reportsReceived != link.fedReports {
            link.fedReports = metrics.reportsReceived
            // §10.1: up once the peer reports that it receives our media — or, while DTX holds our
            // media back and none was sent on this link yet, once it reports at all: a silent
            // participant has no audio to flow its way.
            if let report = metrics.lastReport, report.mediaReceived > 0 || (metrics.mediaSent == 0 && isPausedByDTX) {
                await feed(.peerReceivesUs, to: link)
            }
        }
    }

    private func feed(_ event: PeerLink.Event, to link: Link, at time: ContinuousClock.Instant = .now) async {
        let before = link.machine.state
        let actions = link.machine.handle(event, at: time)
        let after = link.machine.state
        if before != after {
            reportState(link)
            if after == .lost {
                // Also probe our rendezvous connection: if our own network changed, sending
                // finds the dead connection at once (a reset) instead of at the next ping (15 s),
                // so the restart's signaling can flow. A unicast HELLO with our epoch changes
                // nothing at the peer but its record of our member id (§6.6 step 2).
                await send(hello(), to: link.peer)
            }
        }
        for action in actions {
            switch action {
            case .startHandshake:
                break  // done when ICE reports the path up (handleICE), for both sides
            case .restartICE:
                // A restart the peer asked for was already carried out by the generation rules.
                guard event != .restartRequested else { continue }
                await restartICE(link, to: link.generation + 1, announce: true)
            case .remove:
                await endLink(link, reason: link.machine.reason ?? "gone")
            }
        }
    }

    private func reportState(_ link: Link) {
        guard link.reportedState != link.machine.state else { return }
        link.reportedState = link.machine.state
        logger.info(
            "link state",
            metadata: [
                "peer": "\(link.peer.shortID)", "state": "\(link.machine.state)",
                "why": "\(link.machine.reason ?? "-")",
            ])
        publish(
            ControlEvent(
                kind: .link, peer: link.peer.shortID, name: link.peer.name, state: link.machine.state.rawValue,
                route: link.pair.map(Self.route(of:)), message: link.machine.reason))
    }

    // MARK: Timers

    private func tick() async {
        let now = ContinuousClock.now
        for link in linksByID.values.sorted(by: { $0.id < $1.id }) {
            for event in link.transport.tick(now: now) { await sessionEvent(event, on: link) }
            guard linksByID[link.id] != nil else { continue }
            await feedFacts(link, now: now)
            await feed(.tick, to: link, at: now)
            guard linksByID[link.id] != nil else { continue }
            if now >= link.nextReport || (isPausedByDTX && now - link.lastReportSent >= Self.pausedReportInterval) {
                sendReport(on: link, now: now)
            }
        }
        updateSecurityCode()
        updateSpeaking()
        engine?.setMeasuredLoss(worstReportedLoss())
    }

    /// While DTX holds our media back, REPORTs are the only packets peers get from us and their
    /// liveness check (§10.3) declares a link lost after 2 s of nothing: send one every 250 ms, so
    /// losing one or two to the network does not flap the link.
    static let pausedReportInterval: Duration = .milliseconds(250)

    /// Whether this node sends no media right now because DTX holds it back (silent or muted).
    private var isPausedByDTX: Bool { engine?.isPausedByDTX ?? false }

    /// REPORT (§10.1), every 1000 ms ± 10 % while the session has keys (every 250 ms while DTX
    /// holds our media back); the 1-second ones also sample traffic and loss for `parley status`
    /// and for the loss the peer's encoder adapts to.
    private func sendReport(on link: Link, now: ContinuousClock.Instant) {
        link.lastReportSent = now
        let statistics = link.channel.statistics
        if now >= link.nextReport {
            link.nextReport = now + .milliseconds(Int.random(in: 900...1100))
            // An interval without media (the peer was in a DTX pause) measured nothing: keep the
            // last figure, so the peer's next talk spurt starts with the copies its link needs.
            let baseline = link.lossHistory.last ?? ReceiveStatistics()
            if statistics.expected > baseline.expected {
                link.lossPermille = UInt16((statistics.lossFraction(since: baseline) * 1000).rounded())
            }
            link.lossHistory.append(statistics)
            if link.lossHistory.count > 6 { link.lossHistory.removeFirst() }
            link.traffic.append((now, link.stream.traffic))
            if link.traffic.count > 2 { link.traffic.removeFirst() }
        }
        let report = link.transport.makeReport(
            nowMs: MeetingClock.milliseconds(now), statistics: statistics, lossPermille: link.lossPermille,
            muted: muted)
        link.transport.sendControl(.report(report), now: now)
    }

    /// The loss the encoder protects against (§9.3): the worst latest REPORT of a peer whose link
    /// is up (a lost or restarting link's last word is stale). A peer that has not yet seen a
    /// second of our media has measured nothing; its link counts as slightly lossy, so the first
    /// words of a call (or of a participant who was silent until now) go out with one copy instead
    /// of none until a measurement comes back.
    private func worstReportedLoss() -> Double {
        let losses = linksByID.values.compactMap { link -> Double? in
            guard link.machine.state == .up, let report = link.transport.metrics.lastReport else { return nil }
            return report.mediaExpected < Self.measuredAfter ? Self.unmeasuredLoss : Double(report.lossPermille) / 1000
        }
        return losses.max() ?? 0
    }

    static let measuredAfter: UInt32 = 50
    static let unmeasuredLoss = 0.02

    private func updateSecurityCode() {
        let members =
            ([me.publicKey]
            + linksByID.values.filter { $0.transport.metrics.isEstablished }.map { $0.peer.identity.identityKey })
            .sorted { $0.lexicographicallyPrecedes($1) }
        guard members != securityMembers else { return }
        securityMembers = members
        let code = SecurityCode(roomID: keys.roomID, memberIdentities: members)
        securityCode = code
        publish(ControlEvent(kind: .securityCode, message: code.description))
    }

    private func updateSpeaking() {
        var names = linksByID.values.filter { $0.channel.statistics.isSpeaking }.map(\.peer.name)
        if let engine, !muted, engine.isRunning, engine.inputLevel > LevelMeter.speakingThreshold {
            names.append(context.configuration.displayName + " (you)")
        }
        names.sort()
        guard names != speaking else { return }
        speaking = names
        publish(ControlEvent(kind: .speaking, speaking: names))
    }

    // MARK: Leaving

    /// LEAVE over every session (heard even without the rendezvous), BYE through the rendezvous.
    private func farewell() async {
        let now = ContinuousClock.now
        for link in linksByID.values { link.transport.sendControl(.leave, now: now) }
        if rendezvousState == "connected" { await send(.bye, to: nil) }
        logger.info("left the meeting")
    }

    private func tearDown() async {
        for task in background { task.cancel() }
        for link in linksByID.values.sorted(by: { $0.id < $1.id }) {
            for task in link.tasks { task.cancel() }
            link.transport.close()
        }
        linksByID = [:]
        updateFanout()
        engine?.stop()
        engine = nil
        await agent?.close()
        agent = nil
    }

    // MARK: Status

    private func status() -> MeetingStatus {
        let now = ContinuousClock.now
        let frameMs = Double(context.configuration.audio.frameDuration.rawValue)
        let peers = linksByID.values.sorted { $0.peer.name < $1.peer.name }.map { link -> PeerStatus in
            let statistics = link.channel.statistics
            let metrics = link.transport.metrics
            let traffic = link.stream.traffic
            var rx = 0.0
            var tx = 0.0
            if let first = link.traffic.first, first.at < now {
                let seconds =
                    Double((now - first.at).components.seconds) + Double((now - first.at).components.attoseconds) / 1e18
                rx =
                    Double(traffic.bytesReceived - min(traffic.bytesReceived, first.counts.bytesReceived)) * 8 / 1000
                    / seconds
                tx = Double(traffic.bytesSent - min(traffic.bytesSent, first.counts.bytesSent)) * 8 / 1000 / seconds
            }
            let loss = link.lossHistory.first.flatMap { oldest in
                statistics.expected > oldest.expected ? statistics.lossFraction(since: oldest) * 100 : nil
            }
            let jitter = statistics.received > 0 ? Self.milliseconds(statistics.jitter) : nil
            return PeerStatus(
                id: link.peer.shortID, name: link.peer.name, state: link.machine.state.rawValue,
                route: link.pair.map(Self.route(of:)), rttMs: metrics.rttMs.map { Self.rounded($0, 1) },
                lossPct: loss.map { Self.rounded($0, 2) }, jitterMs: jitter.map { Self.rounded($0, 2) },
                rxKbps: Self.rounded(rx, 1), txKbps: Self.rounded(tx, 1), packetsRx: traffic.packetsReceived,
                packetsTx: traffic.packetsSent, concealedMs: Double(statistics.concealed) * frameMs)
        }
        return MeetingStatus(
            state: admitted ? "in-meeting" : "joining", rendezvous: rendezvousState,
            securityCode: securityCode?.description, peers: peers)
    }

    private func verification() -> Verification {
        var members = [Verification.Member(id: me.peerIdentity.shortID, name: context.configuration.displayName)]
        for link in linksByID.values where link.transport.metrics.isEstablished {
            members.append(Verification.Member(id: link.peer.shortID, name: link.peer.name))
        }
        let code = securityCode ?? SecurityCode(roomID: keys.roomID, memberIdentities: [me.publicKey])
        return Verification(securityCode: code.description, members: members)
    }

    /// `relay` when either side relays; otherwise the kind of the peer's candidate media flows
    /// to (`host`, `srflx`, `prflx`): how the peer is reached.
    static func route(of pair: ICECandidatePair) -> String {
        pair.route == .relayed ? ICECandidate.Kind.relayed.rawValue : pair.remote.kind.rawValue
    }

    /// `value` to `decimals` places, so `status --json` shows what was measured, not float noise.
    static func rounded(_ value: Double, _ decimals: Int) -> Double {
        var scale = 1.0
        for _ in 0..<decimals { scale *= 10 }
        return (value * scale).rounded() / scale
    }

    static func milliseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    }

    private func warn(_ message: String) {
        logger.warning("\(message)")
        publish(ControlEvent(kind: .warning, message: message))
    }

    private func publish(_ event: ControlEvent) {
        context.events.publish(event)
    }
}

/// Why the rendezvous will not have us, in the user's terms.
func explainRefusal(_ error: any Error) -> String {
    if case .rejected(let refusal) = error as? RendezvousClientError, refusal.code == .roomFull {
        return "the meeting is full: \(refusal.reason)"
    }
    return "\(error)"
}

extension Logger {
    /// The same logger (level, metadata) under another label.
    func with(label: String) -> Logger {
        var logger = Logger(label: label)
        logger.logLevel = logLevel
        return logger
    }
}
