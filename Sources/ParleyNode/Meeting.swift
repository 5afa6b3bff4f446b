import ControlAPI
import ICE
import Logging
import MeetingCore
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

/// What reaches the meeting's driver, in one order: facts for the core (from the rendezvous
/// client, ICE streams, the sessions' receive path, the audio engine), the core's timer, the ICE
/// agent once it exists, and requests from the control API.
enum MeetingMail: Sendable {
    case input(MeetingInput)
    case agentCreated(ICEAgent)
    case timer
    /// A peer or the microphone started or stopped counting as speaking.
    case speakersChanged
    /// DTX started (true) or ended a pause; the driver adds which links have had no media.
    case pauseChanged(Bool)
    case request(MeetingRequest)
    /// A sound-server device failed; the engine plays on with silence in its place.
    case deviceLost(AudioDirection, String)
    /// The sound server's device names now (nil: it does not answer), about once a second.
    case devicesListed(SoundServerDevices?)
    /// A fallback or return step (`DeviceFollower`) ended: nil, or why it failed.
    case deviceOpened(AudioDirection, DeviceFollower.Step, failure: String?)
    /// A switch the user asked for ended: nil, or why it failed (the old device stays).
    case deviceChosen(AudioDirection, String?, failure: String?, CheckedContinuation<String?, Never>)
    /// The recording's files are open (or could not be), for the request that asked.
    case recordingOpened(Result<MeetingRecorder, any Error>, CheckedContinuation<RecordingReply, Never>)
    /// Writing the recording failed (a full disk): it has stopped.
    case recordingFailed(String)
}

/// The answer to `parley record start|stop`: what happened, or why not, in one line.
struct RecordingReply: Sendable {
    var ok: Bool
    var message: String
}

enum MeetingRequest: Sendable {
    case status(CheckedContinuation<MeetingStatus, Never>)
    case verify(CheckedContinuation<Verification, Never>)
    case setMuted(Bool, CheckedContinuation<Void, Never>)
    case leave(CheckedContinuation<Void, Never>)
    case say(String, CheckedContinuation<Result<ChatDelivery, ChatRefusal>, Never>)
    case chat(CheckedContinuation<[ChatMessage], Never>)
    /// `parley volume`: set one peer's (`peer`, `percent`) or list them.
    case volume(peer: String?, percent: Int?, CheckedContinuation<ControlResponse, Never>)
    /// `parley input` / `output`: a PulseAudio device name, nil for the default; answers nil or
    /// why the device could not be used.
    case switchDevice(AudioDirection, String?, CheckedContinuation<String?, Never>)
    /// Record to `path` (absolute), or to a new file in the recordings directory when nil.
    case recordStart(path: String?, CheckedContinuation<RecordingReply, Never>)
    case recordStop(CheckedContinuation<RecordingReply, Never>)
}

/// The meeting's part of `parley status`.
struct MeetingStatus: Sendable {
    var state: MeetingState
    var rendezvous: RendezvousConnectionState
    var securityCode: String?
    var peers: [PeerStatus]
    /// The pairs this node relays for, as member ids.
    var relaying: [[String]] = []
    var chat: [ChatMessage] = []
    /// Whether the microphone hears speech (not muted).
    var speaking = false
    /// The devices in use (`AudioInput`/`AudioOutput` descriptions) and whether the default
    /// stands in for a missing chosen one.
    var input: String?
    var output: String?
    var inputFallback = false
    var outputFallback = false
    /// The file this node records to, if it records.
    var recordingPath: String?
    /// Where this node's voice spends its time before the network, while audio runs.
    var latency: SendLatency?
    var sendRate: SendRateStatus?

    static let idle = MeetingStatus(state: .idle, rendezvous: .none, securityCode: nil, peers: [])
}

/// One meeting: its logic (`MeetingCore`) and the driver that feeds it and carries out its
/// commands with the real rendezvous client, ICE agent, sessions and audio engine.
final class Meeting: Sendable {
    let invite: Invite
    let admission = Admission()
    private let context: MeetingContext
    private let mutedAtStart: Bool
    private let mail: AsyncStream<MeetingMail>
    private let mailbox: AsyncStream<MeetingMail>.Continuation

    init(invite: Invite, context: MeetingContext, muted: Bool) {
        self.invite = invite
        self.context = context
        mutedAtStart = muted
        (mail, mailbox) = AsyncStream.makeStream(of: MeetingMail.self)
    }

    /// Runs the meeting until it is left or fails; returns why it ended (nil: left).
    func run() async -> String? {
        let driver = MeetingDriver(invite: invite, context: context, mailbox: mailbox, admission: admission)
        let failure = await driver.run(mail: mail, muted: mutedAtStart)
        mailbox.finish()
        // Requests that raced with the end get an answer instead of waiting forever.
        for await leftover in mail {
            switch leftover {
            case .request(let request): MeetingDriver.refuse(request)
            case .recordingOpened(let result, let reply):
                // Opened as the meeting ended: closed at once, so nothing records unannounced.
                if case .success(let recorder) = result { _ = recorder.finish() }
                reply.resume(returning: MeetingDriver.notInMeeting)
            default: break
            }
        }
        return failure
    }

    func status() async -> MeetingStatus {
        await ask({ .status($0) }, orElse: .idle)
    }

    func verify() async -> Verification {
        await ask({ .verify($0) }, orElse: Verification(securityCode: "", members: []))
    }

    func setMuted(_ muted: Bool) async {
        await ask({ .setMuted(muted, $0) }, orElse: ())
    }

    /// Sends a chat message to everyone in the meeting (§14.1), or says why not.
    func say(_ text: String) async -> Result<ChatDelivery, ChatRefusal> {
        await ask({ .say(text, $0) }, orElse: .failure(.notInMeeting))
    }

    /// The meeting's last chat messages, oldest first.
    func chat() async -> [ChatMessage] {
        await ask({ .chat($0) }, orElse: [])
    }

    func volume(peer: String?, percent: Int?) async -> ControlResponse {
        await ask({ .volume(peer: peer, percent: percent, $0) }, orElse: .failure("not in a meeting"))
    }

    /// Switches a device; nil when done, else why not.
    func switchDevice(_ direction: AudioDirection, to name: String?) async -> String? {
        await ask({ .switchDevice(direction, name, $0) }, orElse: "the meeting ended")
    }

    func recordStart(path: String?) async -> RecordingReply {
        await ask({ .recordStart(path: path, $0) }, orElse: MeetingDriver.notInMeeting)
    }

    func recordStop() async -> RecordingReply {
        await ask({ .recordStop($0) }, orElse: MeetingDriver.notInMeeting)
    }

    /// Announces the departure (LEAVE over every session, BYE through the rendezvous) and ends.
    func leave() async {
        await ask({ .leave($0) }, orElse: ())
    }

    private func ask<T: Sendable>(
        _ make: (CheckedContinuation<T, Never>) -> MeetingRequest, orElse fallback: T
    ) async -> T {
        await withCheckedContinuation { continuation in
            if case .terminated = mailbox.yield(.request(make(continuation))) {
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

    /// Waits for the outcome, at most `limit` (then `.pending`), and no longer than the waiting
    /// task is not cancelled (a daemon told to stop while its rendezvous does not answer).
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
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let settled = state.withLock { state -> Outcome? in
                    guard state.outcome == .pending else { return state.outcome }
                    state.waiters[id] = continuation
                    return nil
                }
                if let settled {
                    continuation.resume(returning: settled)
                } else if Task.isCancelled {
                    timeOut(id)  // cancelled before the handler could see the waiter
                }
            }
        } onCancel: {
            timeOut(id)
        }
    }

    private func timeOut(_ id: Int) {
        let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
        waiter?.resume(returning: .pending)
    }
}

// MARK: - The driver

/// A link's data path: its ICE stream, encrypted transport and audio channel, under the core's
/// `LinkID`. Everything about the link that is not a counter lives in the core.
private struct LinkPath {
    let stream: ICEStream
    let transport: PeerTransport
    let channel: ReceiveChannel
    let inEngine: Bool
    let peerName: String
    /// Whose link it is: per-person volumes are kept by identity.
    let identityKey: [UInt8]
    let events: Task<Void, Never>
}

/// Each link's latest `.stillAuthenticated`, held by the ICE thread until the meeting loop next
/// wakes for anything.
private final class HeldLiveness: Sendable {
    private let latest = Mutex<[LinkID: SessionFact]>([:])

    func hold(_ id: LinkID, _ fact: SessionFact) { latest.withLock { $0[id] = fact } }

    /// The held facts in link order; none are held after.
    func take() -> [(LinkID, SessionFact)] {
        latest.withLock { latest in
            defer { latest.removeAll(keepingCapacity: true) }
            return latest.sorted { $0.key < $1.key }
        }
    }
}

/// Feeds the core from the real rendezvous client, ICE agent, sessions and audio engine and
/// carries out its commands. It makes no decisions of its own. Work that may take a while
/// (resolving STUN/TURN names, opening audio devices, saving pins, releasing a stream's TURN
/// allocation) runs beside the loop and reports back through the mailbox.
private final class MeetingDriver {
    let invite: Invite
    let context: MeetingContext
    let mailbox: AsyncStream<MeetingMail>.Continuation
    let admission: Admission
    let keys: RoomKeys
    var logger: Logger
    var core: MeetingCore!
    var engine: AudioEngine?
    var client: RendezvousClient?
    var agent: ICEAgent?
    /// Tunnels to `turns:` servers; closed after the agent released its allocations through them.
    var turnTunnels: TURNTLSTunnels?
    var paths: [LinkID: LinkPath] = [:]
    let fanout = MediaFanout()
    /// The core's latest send rate and fan-out route (§15), which the encoding fits together.
    var sendRate: Int?
    var fanOutRoute: FanOutRoute?
    let router = RelayRouter()
    let heldLiveness = HeldLiveness()
    let outbox: EnvelopeOutbox
    let pinStore: PinStore
    var background: [Task<Void, Never>] = []
    /// Stream removals under way (TURN allocations being released); awaited, bounded, at the end.
    var removals: [Task<Void, Never>] = []
    var speakers: [String] = []
    /// This node's volume for each member (`parley volume`), by identity key: kept for the
    /// meeting, so a member who leaves and comes back keeps it.
    var volumes: [[UInt8]: Int] = [:]
    /// The sound-server devices kept on the chosen one (none for files and generators).
    var followers: [AudioDirection: DeviceFollower] = [:]
    var devicePoll: Task<Void, Never>?
    /// The recording under way, and whether one is being opened.
    var recorder: MeetingRecorder?
    var recorderOpening = false
    var timer: Task<Void, Never>?
    var timerDeadline: Instant?
    var ended = false
    var failure: String?

    init(
        invite: Invite, context: MeetingContext, mailbox: AsyncStream<MeetingMail>.Continuation, admission: Admission
    ) {
        self.invite = invite
        self.context = context
        self.mailbox = mailbox
        self.admission = admission
        keys = RoomKeys(invite: invite)
        var logger = context.logger
        logger[metadataKey: "room"] = "\(hexString(keys.roomID.prefix(4)))"
        self.logger = logger
        outbox = EnvelopeOutbox(logger: logger)
        pinStore = PinStore(
            file: IdentityPins.File(stateDirectory: context.configuration.stateDirectory, roomID: keys.roomID))
    }

    static func refuse(_ request: MeetingRequest) {
        switch request {
        case .status(let reply): reply.resume(returning: .idle)
        case .verify(let reply): reply.resume(returning: Verification(securityCode: "", members: []))
        case .setMuted(_, let reply): reply.resume()
        case .leave(let reply): reply.resume()
        case .say(_, let reply): reply.resume(returning: .failure(.notInMeeting))
        case .chat(let reply): reply.resume(returning: [])
        case .volume(_, _, let reply): reply.resume(returning: .failure("not in a meeting"))
        case .switchDevice(_, _, let reply): reply.resume(returning: "the meeting ended")
        case .recordStart(_, let reply), .recordStop(let reply): reply.resume(returning: notInMeeting)
        }
    }

    static let notInMeeting = RecordingReply(ok: false, message: "not in a meeting")

    // MARK: Running

    func run(mail: AsyncStream<MeetingMail>, muted: Bool) async -> String? {
        let configuration = context.configuration
        var pins = IdentityPins()
        do {
            pins = try await pinStore.load()
        } catch {
            logger.warning("identity pins unavailable", metadata: ["error": "\(error)"])
        }
        var coreConfiguration: MeetingConfiguration
        do {
            coreConfiguration = try MeetingConfiguration(
                identity: context.identity, keys: keys, displayName: configuration.displayName,
                sessionEpoch: UInt64.random(in: 1...UInt64.max),
                firstEnvelopeSequence: WallClock.system.unixNanoseconds() / 1000,
                randomSeed: UInt64.random(in: 0...UInt64.max))
        } catch {
            // NodeDaemon checked the name at start, so this does not happen; if it did, say why.
            let failure = "invalid --name \"\(configuration.displayName)\": \(error)"
            admission.resolve(.failed(failure))
            return failure
        }
        coreConfiguration.dtx = configuration.audio.dtx
        coreConfiguration.sendRateRange = configuration.audio.sendRateRange
        coreConfiguration.maximumRelayedPairs = configuration.relayedPairs
        coreConfiguration.fanOut = configuration.fanOut
        core = MeetingCore(configuration: coreConfiguration, pins: pins, muted: muted, now: .now)
        fanout.prepareSigning(
            FanOutSigner(
                identity: context.identity, roomID: keys.roomID, epoch: coreConfiguration.hello.sessionEpoch))
        startAudio(muted: muted)
        startRendezvous()
        startAddressWatch()
        await feed(.start)
        for await item in mail {
            await handOverHeldLiveness()
            switch item {
            case .input(let input): await feed(input)
            case .pauseChanged(let paused):
                let noMediaSent = paths.filter { $0.value.transport.metrics.mediaSent == 0 }.keys
                await feed(.audio(.paused(paused, noMediaSentOn: Set(noMediaSent))))
            case .agentCreated(let agent):
                self.agent = agent
                await feed(.iceAgentReady)
            case .timer:
                timerDeadline = nil
                runSessionTimers()
                await feed(.tick)
            case .speakersChanged: publishSpeakers()
            case .request(let request): await handle(request)
            case .deviceLost(let direction, let reason): deviceLost(direction, reason: reason)
            case .devicesListed(let devices): devicesListed(devices)
            case .deviceOpened(let direction, let step, let failure):
                deviceOpened(direction, step, failure: failure)
            case .deviceChosen(let direction, let name, let failure, let reply):
                deviceChosen(direction, name, failure: failure)
                reply.resume(returning: failure)
            case .recordingOpened(let result, let reply): await recordingOpened(result, reply: reply)
            case .recordingFailed(let reason): await recordingFailed(reason)
            }
            if ended { break }
            scheduleTimer()
        }
        await tearDown()
        admission.resolve(.failed(failure ?? "left before the rendezvous admitted us"))
        return failure
    }

    /// Gives the core the liveness the ICE thread held back, before any other input: with media
    /// flowing, a link's packets then wake the loop only for what they say (REPORTs, control),
    /// not four times a second each to say they still come (MeetingInput's `.stillAuthenticated`).
    private func handOverHeldLiveness() async {
        for (id, fact) in heldLiveness.take() { await feed(.session(id, fact)) }
    }

    /// Hands one input to the core and carries out what it returns.
    private func feed(_ input: MeetingInput) async {
        await execute(core.handle(input, at: .now))
    }

    /// Carries the commands out in order; what a command learns goes back to the core at once,
    /// and that answer's commands run before the next one.
    private func execute(_ commands: [MeetingCommand]) async {
        var index = commands.startIndex
        while index < commands.endIndex {
            // A run of a peer's signalling for one link (what was held until its path existed, or a
            // burst from the rendezvous) goes to the agent in one call: one hop onto the ICE thread,
            // not one per candidate. These commands have no answers, so nothing else may run between.
            if let (id, first) = Self.remoteSignal(commands[index]) {
                var signals = [first]
                index += 1
                while index < commands.endIndex, let (next, signal) = Self.remoteSignal(commands[index]), next == id {
                    signals.append(signal)
                    index += 1
                }
                await applyRemote(signals, to: id)
                continue
            }
            for answer in await carryOut(commands[index]) { await feed(answer) }
            index += 1
        }
    }

    /// A command that hands the peer's signalling to the link's stream, as the agent takes it
    /// (credentials that are not even well-formed: why not).
    private static func remoteSignal(
        _ command: MeetingCommand
    ) -> (LinkID, Result<ICEAgent.RemoteSignal, ICEError>)? {
        switch command {
        case .setRemoteCredentials(let id, let credentials):
            (
                id,
                Result { () throws(ICEError) in
                    .credentials(try ICE.ICECredentials(ufrag: credentials.ufrag, password: credentials.password))
                }
            )
        case .addRemoteCandidate(let id, let line): (id, .success(.candidate(line)))
        case .remoteCandidatesDone(let id): (id, .success(.endOfCandidates))
        default: nil
        }
    }

    private func applyRemote(_ signals: [Result<ICEAgent.RemoteSignal, ICEError>], to id: LinkID) async {
        guard let path = paths[id], let agent else { return }
        var valid: [ICEAgent.RemoteSignal] = []
        for signal in signals {
            switch signal {
            case .success(let signal): valid.append(signal)
            case .failure(let error): logCredentialsRefused(error, link: id)
            }
        }
        guard let outcomes = try? await agent.applyRemote(valid, to: path.stream.id) else { return }
        for (signal, error) in zip(valid, outcomes) {
            guard let error else { continue }
            if case .credentials = signal {
                logCredentialsRefused(error, link: id)
            } else {
                logger.debug("peer's signalling refused", metadata: ["link": "\(id)", "error": "\(error)"])
            }
        }
    }

    private func logCredentialsRefused(_ error: ICEError, link id: LinkID) {
        logger.info("peer's ICE credentials refused", metadata: ["link": "\(id)", "error": "\(error)"])
    }

    private func carryOut(_ command: MeetingCommand) async -> [MeetingInput] {
        switch command {
        case .sendEnvelope(let envelope, let recipient):
            outbox.send(
                envelope,
                to: {
                    switch recipient {
                    case .member(let member): .member(member)
                    case .everyone: .everyone
                    }
                }())
        case .createICEAgent(let services):
            createAgent(services: services)
        case .createPath(let id, let peer, let version, let epoch, _):
            return [await createPath(id, peer: peer, version: version, epoch: epoch)]
        case .setRemoteCredentials(let id, _), .addRemoteCandidate(let id, _), .remoteCandidatesDone(let id):
            // `execute` hands these over in runs; one alone is a run of one.
            if let (_, signal) = Self.remoteSignal(command) { await applyRemote([signal], to: id) }
        case .restartPath(let id, let keepingOldPath):
            guard let path = paths[id], let agent else { break }
            do {
                let credentials = try await agent.restart(path.stream.id, keepingOldPath: keepingOldPath)
                return [
                    .path(id, .restarted(PathCredentials(ufrag: credentials.ufrag, password: credentials.password)))
                ]
            } catch {
                return [.path(id, .restartFailed("\(error)"))]
            }
        case .removePath(let id):
            removePath(id)
        case .startSession(let id, let rehandshake):
            paths[id]?.transport.start(now: .now, rehandshake: rehandshake)
        case .sendReport(let id, let closesInterval, let muted, let recording):
            paths[id]?.transport.sendReport(
                closesInterval: closesInterval, muted: muted, recording: recording, now: .now)
        case .sendControl(let id, let message):
            paths[id]?.transport.sendControl(message, now: .now)
        case .sendMeshEnvelope(let envelope, let id, let forwardTo):
            let packet =
                forwardTo.map { RelayPacket(kind: .forwardEnvelope, peer: $0, payload: envelope) }
                ?? RelayPacket(kind: .deliverEnvelope, peer: context.identity.publicKey, payload: envelope)
            paths[id]?.transport.sendRelay(packet, now: .now)
        case .setRoute(let id, let via):
            paths[id]?.transport.setRoute(through: via.flatMap { paths[$0]?.transport })
        case .setRelayPolicy(let policy):
            router.update(policy)
        case .setMuted(let muted):
            engine?.setMuted(muted)
        case .setEncoderLoss(let loss):
            engine?.setMeasuredLoss(loss)
        case .setSendRate(let bitsPerSecond):
            sendRate = bitsPerSecond
            fitEncoding()
        case .setFanOut(let route):
            fanOutRoute = route
            updateFanout()
            fitEncoding()
        case .publish(var event):
            // The core has no wall clock: a chat message is stamped as it is shown.
            if event.kind == .chat, event.time == nil {
                event.time = ChatTime.format(unixMilliseconds: Self.wallMilliseconds())
            }
            context.events.publish(event)
        case .log(let line):
            logger.log(level: line.level.logLevel, "\(line.message)", metadata: line.metadata.mapValues { .string($0) })
        case .savePins(let pins):
            let store = pinStore
            let logger = self.logger
            background.append(
                Task {
                    do {
                        try await store.save(pins)
                    } catch {
                        logger.warning("cannot save identity pins", metadata: ["error": "\(error)"])
                    }
                })
        case .admitted:
            admission.resolve(.admitted)
        case .end(let failure):
            self.failure = failure
            ended = true
        }
        return []
    }

    // MARK: Audio

    private func startAudio(muted: Bool) {
        let mailbox = self.mailbox
        let fanout = self.fanout
        let engine: AudioEngine
        var audio = context.configuration.audio
        let pacer = context.executor.receivePacer
        audio.collectReceived = { pacer.collect() }
        do {
            engine = try AudioEngine(
                configuration: audio,
                onEncodedFrame: { payload in fanout.send(payload) },
                onFailure: { error in mailbox.yield(.input(.audio(.failed("\(error)")))) },
                onPauseChanged: { paused in mailbox.yield(.pauseChanged(paused)) },
                onSpeakersChanged: { mailbox.yield(.speakersChanged) },
                onDeviceLost: { direction, reason in mailbox.yield(.deviceLost(direction, reason)) })
        } catch {
            mailbox.yield(.input(.audio(.unavailable("\(error)"))))
            return
        }
        engine.setMuted(muted)
        self.engine = engine
        if case .pulse(let source) = engine.input { followers[.input] = DeviceFollower(chosen: source) }
        if case .pulse(let sink) = engine.output { followers[.output] = DeviceFollower(chosen: sink) }
        startDevicePoll()
        // Opening devices can take a while (a sound server that is slow to answer): not on the loop.
        background.append(
            Task.detached {
                do {
                    try engine.start()
                } catch {
                    mailbox.yield(.input(.audio(.unavailable("\(error)"))))
                }
            })
    }

    /// Tells the core when this machine's addresses change (another network, Wi-Fi to wired, an
    /// address added or removed), so every link restarts ICE at once instead of waiting for its
    /// path to go quiet. Reads the interface list once a second (getifaddrs: a change shows within
    /// a second, with no netlink socket to keep); loopback and link-local addresses do not count,
    /// and a node held to `--local-address` has nothing to watch.
    private func startAddressWatch() {
        guard context.configuration.ice.localAddresses.isEmpty else { return }
        let mailbox = self.mailbox
        let logger = self.logger
        background.append(
            Task.detached {
                func routable() -> Set<IPAddress> {
                    Set(HostedRendezvous.interfaceAddresses(ipv6: true).filter { !$0.isLoopback && !$0.isLinkLocal })
                }
                var known = routable()
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    let current = routable()
                    guard current != known else { continue }
                    logger.info(
                        "local addresses changed",
                        metadata: [
                            "added": "\(current.subtracting(known).count)",
                            "removed": "\(known.subtracting(current).count)",
                        ])
                    known = current
                    mailbox.yield(.input(.localAddressesChanged))
                }
            })
    }

    // MARK: Rendezvous

    private func startRendezvous() {
        var configuration = RendezvousClient.Configuration(url: invite.rendezvous, certificatePin: invite.tlsPin)
        configuration.reconnect = .init()
        let client = RendezvousClient(
            configuration: configuration, roomKey: keys.roomKey, logger: logger.with(label: "parley.rendezvous"))
        self.client = client
        outbox.start(client: client)
        let mailbox = self.mailbox
        background.append(
            Task {
                do {
                    try await client.run()
                    mailbox.yield(.input(.rendezvousStopped(reason: nil)))
                } catch {
                    mailbox.yield(.input(.rendezvousStopped(reason: explainRefusal(error))))
                }
            })
        background.append(
            Task {
                for await event in client.events {
                    let input: MeetingInput
                    switch event {
                    case .joined(let welcome, let reconnected):
                        input = .rendezvousJoined(welcome, reconnected: reconnected)
                    case .memberJoined(let member): input = .rendezvousMemberJoined(member)
                    case .memberLeft(let member): input = .rendezvousMemberLeft(member)
                    case .delivered(let member, let payload):
                        input = .rendezvousDelivered(from: member, payload: payload)
                    case .disconnected(let reason, _): input = .rendezvousDisconnected(reason: reason)
                    }
                    mailbox.yield(.input(input))
                }
            })
    }

    // MARK: ICE

    /// Resolves the STUN/TURN servers (DNS may be slow) and creates the agent beside the loop.
    private func createAgent(services: [RendezvousService]) {
        let settings = context.configuration.ice
        let plan = ICEServerPlan.plan(settings: settings, services: services, hints: invite.turnHints)
        for skipped in plan.skipped { logger.notice("ICE server not used", metadata: ["why": "\(skipped)"]) }
        let executor = context.executor
        let logger = self.logger
        let mailbox = self.mailbox
        if plan.turn.contains(where: \.tls), turnTunnels == nil {
            do {
                turnTunnels = try TURNTLSTunnels(caFile: settings.turnCA, logger: logger)
            } catch {
                logger.notice("ICE server not used", metadata: ["why": "\(error)"])
            }
        }
        let tunnels = turnTunnels
        background.append(
            Task {
                do {
                    let configuration = try await ICEServerPlan.configuration(
                        plan, settings: settings, resolve: resolveHost
                    ) { host, address, port in
                        guard let tunnels else { throw NodeError("TURN over TLS to \(host): no TLS context") }
                        return try await tunnels.open(host: host, address: address, port: port)
                    }
                    let agent = try ICEAgent(
                        configuration: configuration, executor: executor, logger: logger.with(label: "parley.ice"))
                    logger.info(
                        "ICE servers",
                        metadata: [
                            "stun": "\(configuration.stunServer.map { "\($0)" } ?? "none")",
                            "turn": "\(configuration.turnServers.count)", "relayOnly": "\(configuration.relayOnly)",
                        ])
                    mailbox.yield(.agentCreated(agent))
                } catch {
                    mailbox.yield(.input(.iceAgentFailed("\(error)")))
                }
            })
    }

    private func createPath(_ id: LinkID, peer: PeerIdentity, version: UInt8, epoch: UInt64) async -> MeetingInput {
        guard let agent else { return .path(id, .creationFailed("no ICE agent")) }
        do {
            let stream = try await agent.addStream(
                role: .forPair(localIdentity: context.identity.publicKey, peerIdentity: peer.identityKey))
            let credentials = try await agent.localCredentials(of: stream.id)
            var inEngine = false
            let channel: ReceiveChannel
            if let engine, let attached = try? engine.addPeer(name: peer.shortID) {
                channel = attached
                inEngine = true
            } else {
                channel = try ReceiveChannel(name: peer.shortID)
            }
            let mailbox = self.mailbox
            let heldLiveness = self.heldLiveness
            let session = PeerSession(local: context.identity, peer: peer, keys: keys, protocolVersion: version)
            let transport = PeerTransport(
                session: session,
                fanOutVerifier: router.fanOutVerifier(for: peer.identityKey, epoch: epoch, roomID: keys.roomID),
                stream: stream, channel: channel,
                timing: core.configuration.timing, router: router,
                facts: { fact in
                    if case .stillAuthenticated = fact {
                        heldLiveness.hold(id, fact)
                    } else {
                        mailbox.yield(.input(.session(id, fact)))
                    }
                })
            router.register(transport)
            // Datagrams are decrypted on the ICE thread as they arrive (no task wake-up per
            // packet); only what the meeting must act on goes through its mailbox.
            stream.deliverDatagrams { datagram in transport.receive(datagram, now: .now) }
            let events = Task {
                for await event in stream.events {
                    if let fact = PathFact(event, releasing: transport) { mailbox.yield(.input(.path(id, fact))) }
                }
            }
            if let volume = volumes[peer.identityKey] { channel.setVolume(volume) }
            paths[id] = LinkPath(
                stream: stream, transport: transport, channel: channel, inEngine: inEngine, peerName: peer.shortID,
                identityKey: peer.identityKey, events: events)
            updateFanout()
            logger.debug("stream added", metadata: ["link": "\(id)", "role": "\(stream.role)"])
            return .path(id, .created(PathCredentials(ufrag: credentials.ufrag, password: credentials.password)))
        } catch {
            return .path(id, .creationFailed("\(error)"))
        }
    }

    private func removePath(_ id: LinkID) {
        guard let path = paths.removeValue(forKey: id) else { return }
        path.events.cancel()
        router.unregister(path.transport)
        path.transport.close()
        if path.inEngine { engine?.removePeer(path.channel) }
        updateFanout()
        if let agent {
            let streamID = path.stream.id
            // Releasing a TURN allocation waits for the server: not on the loop.
            removals.append(Task { await agent.removeStream(streamID) })
        }
    }

    /// The encoding fits the send rate, with a signed frame's bytes in each packet while one copy
    /// goes up.
    private func fitEncoding() {
        engine?.setSendBudget(sendRate, extraPacketBytes: fanOutRoute == nil ? 0 : MeetingCore.fanOutPacketExtra)
    }

    private func updateFanout() {
        let via = fanOutRoute.flatMap { paths[$0.via]?.transport }
        let passedOn = via == nil ? [] : fanOutRoute.map { $0.passedOn.union([$0.via]) } ?? []
        fanout.set(
            direct: paths.keys.sorted().filter { !passedOn.contains($0) }.compactMap { paths[$0]?.transport },
            fanOutVia: via)
    }

    // MARK: Volume

    /// Sets the volume of the member `peer` names (its id, or its name if only one has it), or
    /// lists every member's when `peer` is nil.
    private func volume(peer: String?, percent: Int?) -> ControlResponse {
        let links = core.links.filter { paths[$0.id] != nil }
        if let peer {
            guard let percent, PeerVolume.range.contains(percent) else { return .failure(PeerVolume.rule) }
            var matches = links.filter { $0.peerID == peer }
            if matches.isEmpty { matches = links.filter { $0.name == peer } }
            guard let link = matches.first, let path = paths[link.id] else {
                return .failure("no member \"\(peer)\" in the meeting (`parley volume` lists them)")
            }
            guard matches.count == 1 else {
                let ids = matches.map(\.peerID).joined(separator: ", ")
                return .failure("more than one member is named \"\(peer)\": use the id (\(ids))")
            }
            volumes[path.identityKey] = percent
            path.channel.setVolume(percent)
            logger.info("volume set", metadata: ["member": "\(link.peerID)", "percent": "\(percent)"])
        }
        var response = ControlResponse.success()
        response.volumes = links.compactMap { link in
            paths[link.id].map { PeerVolume(id: link.peerID, name: link.name, percent: $0.channel.volume) }
        }
        return response
    }

    // MARK: Devices

    /// Lists the sound server's devices once a second while a direction follows a chosen device,
    /// beside the loop (a round trip to the server).
    private func startDevicePoll() {
        guard devicePoll == nil, !followers.isEmpty else { return }
        let mailbox = self.mailbox
        devicePoll = Task.detached {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                mailbox.yield(.devicesListed(try? SoundServerDevices.list()))
            }
        }
    }

    private func deviceLost(_ direction: AudioDirection, reason: String) {
        guard var follower = followers[direction] else { return }
        let step = follower.lost()
        followers[direction] = follower
        let name = follower.chosen.map { "\(direction.rawValue) \($0)" } ?? "the default \(direction.rawValue)"
        logger.warning("audio device lost", metadata: ["direction": "\(direction.rawValue)", "error": "\(reason)"])
        context.events.publish(
            ControlEvent(kind: .device, message: "\(name) lost (\(reason)); using the default until it is back"))
        if let step { open(step, for: direction) }
    }

    /// A chosen device left the server's list while its stream went on (a server may move our
    /// stream to its default by itself).
    private func deviceMissing(_ direction: AudioDirection, _ name: String) {
        logger.warning("audio device missing", metadata: ["direction": "\(direction.rawValue)", "device": "\(name)"])
        context.events.publish(
            ControlEvent(
                kind: .device,
                message: "\(direction.rawValue) \(name) lost (no longer listed); using the default until it is back"))
    }

    private func devicesListed(_ devices: SoundServerDevices?) {
        for direction in [AudioDirection.input, .output] {
            guard var follower = followers[direction] else { continue }
            let names = devices.map { Set((direction == .input ? $0.sources : $0.sinks).map(\.name)) }
            let wasFallenBack = follower.fallenBack
            let step = follower.listed(names)
            followers[direction] = follower
            if step == .openDefault, !wasFallenBack, let chosen = follower.chosen { deviceMissing(direction, chosen) }
            if let step { open(step, for: direction) }
        }
    }

    /// Carries out a follower's step beside the loop (opening a device waits for the server).
    private func open(_ step: DeviceFollower.Step, for direction: AudioDirection) {
        guard let engine, let follower = followers[direction] else { return }
        let name = step == .openChosen ? follower.chosen : nil
        let mailbox = self.mailbox
        background.append(
            Task.detached {
                do {
                    try switchEngine(engine, direction, to: name)
                    mailbox.yield(.deviceOpened(direction, step, failure: nil))
                } catch {
                    mailbox.yield(.deviceOpened(direction, step, failure: "\(error)"))
                }
            })
    }

    private func deviceOpened(_ direction: AudioDirection, _ step: DeviceFollower.Step, failure: String?) {
        guard var follower = followers[direction] else { return }
        follower.opened(step, succeeded: failure == nil)
        followers[direction] = follower
        if let failure {
            logger.debug(
                "audio device not opened", metadata: ["direction": "\(direction.rawValue)", "error": "\(failure)"])
            return
        }
        // Falling back was announced when the device went; what is left to tell is its return.
        guard step == .openChosen || follower.chosen == nil else { return }
        let message = "\(direction.rawValue) back on \(follower.chosen ?? "the default device")"
        logger.notice("audio device", metadata: ["change": "\(message)"])
        context.events.publish(ControlEvent(kind: .device, message: message))
    }

    private func switchDevice(
        _ direction: AudioDirection, to name: String?, reply: CheckedContinuation<String?, Never>
    ) {
        guard let engine else {
            reply.resume(returning: "audio is not running in this meeting")
            return
        }
        let mailbox = self.mailbox
        background.append(
            Task.detached {
                do {
                    try switchEngine(engine, direction, to: name)
                    mailbox.yield(.deviceChosen(direction, name, failure: nil, reply))
                } catch {
                    mailbox.yield(.deviceChosen(direction, name, failure: "\(error)", reply))
                }
            })
    }

    private func deviceChosen(_ direction: AudioDirection, _ name: String?, failure: String?) {
        guard failure == nil else { return }
        var follower = followers[direction] ?? DeviceFollower(chosen: name)
        follower.chose(name)
        followers[direction] = follower
        startDevicePoll()
        let message = "\(direction.rawValue) switched to \(name ?? "the default device")"
        logger.info("audio device", metadata: ["change": "\(message)"])
        context.events.publish(ControlEvent(kind: .device, message: message))
    }

    // MARK: Timers

    /// One timer for the core's next deadline and every session's.
    private func scheduleTimer() {
        var deadline = core.nextDeadline
        for path in paths.values {
            if let session = path.transport.nextDeadline { deadline = deadline.map { min($0, session) } ?? session }
        }
        deadline = deadline.map(Self.coalesced)
        guard deadline != timerDeadline else { return }
        timer?.cancel()
        timerDeadline = deadline
        // Never sooner than a millisecond from now: a deadline already passed must not spin.
        guard let deadline = deadline.map({ max($0, Instant.now + .milliseconds(1)) }) else { return }
        let mailbox = self.mailbox
        timer = Task {
            // `Instant` reads the clock ContinuousClock reads. What is left is read first, so the
            // sleep (on ContinuousClock, read after it) never ends before the deadline.
            let left = deadline - Instant.now
            guard (try? await Task.sleep(until: .now + left, clock: .continuous)) != nil else { return }
            mailbox.yield(.timer)
        }
    }

    /// Timer slack: deadlines are rounded up to the next multiple of this, so the links' own
    /// timers (a REPORT every 250 ms per link while DTX pauses, each jittered) share wake-ups
    /// instead of waking the loop, and creating a timer task, once per link. Every timer the core
    /// and sessions keep tolerates it (REPORTs already vary by ±100 ms; liveness is judged in
    /// seconds).
    static let timerSlack = Duration.milliseconds(25)
    static let timerEpoch = Instant.now

    static func coalesced(_ deadline: Instant) -> Instant {
        let steps = ((deadline - timerEpoch) / timerSlack).rounded(.up)
        return timerEpoch + timerSlack * steps
    }

    private func runSessionTimers() {
        let now = Instant.now
        for id in paths.keys.sorted() {
            guard let transport = paths[id]?.transport, let due = transport.nextDeadline, due <= now else { continue }
            transport.tick(now: now)
        }
    }

    /// `parley watch`'s speaking list: the peers whose audio we play above the speaking level,
    /// and we ourselves while the microphone hears speech and we are not muted.
    private func publishSpeakers() {
        let names = core.links.compactMap { link in
            paths[link.id]?.channel.statistics.isSpeaking == true ? link.name : nil
        }
        var speaking = names
        if let engine, !core.muted, engine.isRunning, engine.isSpeaking {
            speaking.append(context.configuration.displayName + " (you)")
        }
        speaking.sort()
        guard speaking != speakers else { return }
        speakers = speaking
        context.events.publish(ControlEvent(kind: .speaking, speaking: speaking))
        recorder?.noteSpeakers(speakersForRecording)
    }

    /// The speaking list as a recording's sidecar names it: this node by its name.
    private var speakersForRecording: [String] {
        let you = context.configuration.displayName + " (you)"
        return speakers.map { $0 == you ? context.configuration.displayName : $0 }.sorted()
    }

    // MARK: Recording

    /// `parley record start`: the files are opened beside the loop (a disk may be slow), then
    /// `recordingOpened` announces the recording (§14.2) and answers.
    private func recordStart(path: String?, reply: CheckedContinuation<RecordingReply, Never>) {
        if let recorder {
            return reply.resume(returning: RecordingReply(ok: false, message: "already recording to \(recorder.path)"))
        }
        guard !recorderOpening else {
            return reply.resume(returning: RecordingReply(ok: false, message: "a recording is starting already"))
        }
        guard let engine else {
            return reply.resume(
                returning: RecordingReply(ok: false, message: "cannot record: audio is unavailable in this meeting"))
        }
        recorderOpening = true
        let mailbox = self.mailbox
        let directory = context.configuration.recordingsDirectory
        let comments = [
            ("TITLE", "Parley meeting"), ("ENCODER", "Parley \(ParleyVersion.string)"),
            ("COMMENT", "recorded by \(context.configuration.displayName): the meeting as this member heard it"),
        ]
        Task.detached {
            let result: Result<MeetingRecorder, any Error>
            do {
                let target = try path ?? RecordingFiles.newPath(in: directory)
                result = .success(
                    try engine.startRecording(
                        to: target, comments: comments, onFailure: { mailbox.yield(.recordingFailed($0)) }))
            } catch {
                result = .failure(error)
            }
            if case .terminated = mailbox.yield(.recordingOpened(result, reply)) {
                if case .success(let recorder) = result { _ = recorder.finish() }
                reply.resume(returning: MeetingDriver.notInMeeting)
            }
        }
    }

    private func recordingOpened(
        _ result: Result<MeetingRecorder, any Error>, reply: CheckedContinuation<RecordingReply, Never>
    ) async {
        recorderOpening = false
        switch result {
        case .failure(let error):
            reply.resume(returning: RecordingReply(ok: false, message: "cannot record: \(error)"))
        case .success(let opened):
            recorder = opened
            opened.noteSpeakers(speakersForRecording)
            await feed(.setRecording(true))
            logger.info("recording", metadata: ["path": "\(opened.path)"])
            var message = "recording to \(opened.path) (who spoke when: \(opened.speakersPath))"
            let untold = core.membersNotToldOfRecording
            if !untold.isEmpty {
                message += "\nnot told, their Parley is too old: \(untold.joined(separator: ", ")); tell them yourself"
            }
            reply.resume(returning: RecordingReply(ok: true, message: message))
        }
    }

    /// `parley record stop`: peers are told at once; the files are finished beside the loop.
    private func recordStop(reply: CheckedContinuation<RecordingReply, Never>) async {
        guard let stopping = recorder else {
            return reply.resume(returning: RecordingReply(ok: false, message: "not recording"))
        }
        recorder = nil
        await feed(.setRecording(false))
        background.append(
            Task.detached {
                let summary = stopping.finish()
                var message =
                    "stopped recording: \(summary.path) (\(StatusTable.format(summary.seconds, decimals: 1)) s)"
                if let failure = summary.failure { message += "; writing had failed: \(failure)" }
                reply.resume(returning: RecordingReply(ok: true, message: message))
            })
    }

    private func recordingFailed(_ reason: String) async {
        guard let failed = recorder else { return }
        recorder = nil
        await feed(.setRecording(false))
        logger.error("recording stopped", metadata: ["why": "\(reason)"])
        context.events.publish(ControlEvent(kind: .warning, message: "recording stopped: \(reason)"))
        background.append(Task.detached { _ = failed.finish() })
    }

    // MARK: Requests

    private func handle(_ request: MeetingRequest) async {
        switch request {
        case .status(let reply): reply.resume(returning: status())
        case .verify(let reply): reply.resume(returning: core.verification())
        case .setMuted(let value, let reply):
            await feed(.setMuted(value))
            reply.resume()
        case .leave(let reply):
            await feed(.leave)
            reply.resume()
        case .say(let text, let reply):
            let (outcome, commands) = core.say(text, at: .now)
            reply.resume(returning: outcome)
            await execute(commands)
        case .chat(let reply): reply.resume(returning: chatMessages())
        case .volume(let peer, let percent, let reply):
            reply.resume(returning: volume(peer: peer, percent: percent))
        case .switchDevice(let direction, let name, let reply):
            switchDevice(direction, to: name, reply: reply)
        case .recordStart(let path, let reply):
            recordStart(path: path, reply: reply)
        case .recordStop(let reply):
            await recordStop(reply: reply)
        }
    }

    /// The core's chat log with wall-clock times (the core keeps its own monotonic clock).
    private func chatMessages() -> [ChatMessage] {
        let now = Instant.now
        let wall = Self.wallMilliseconds()
        return core.chat.map { entry in
            let age = now - entry.at
            let ageMs = age.components.seconds * 1000 + age.components.attoseconds / 1_000_000_000_000_000
            return ChatMessage(
                time: ChatTime.format(unixMilliseconds: wall - ageMs), from: entry.fromID, name: entry.name,
                text: entry.text)
        }
    }

    static func wallMilliseconds() -> Int64 { Int64(WallClock.system.unixNanoseconds() / 1_000_000) }

    private func status() -> MeetingStatus {
        let now = Instant.now
        let frameMs = Double(context.configuration.audio.frameDuration.rawValue)
        let engineLatency = engine.map { $0.isRunning ? $0.latency : nil } ?? nil
        let peers = core.links.map { link -> PeerStatus in
            guard let path = paths[link.id] else {
                return PeerStatus(
                    id: link.peerID, name: link.name, state: link.state, route: link.route, via: link.via,
                    reason: link.reason, recording: link.recording)
            }
            let statistics = path.channel.statistics
            let traffic = path.transport.traffic
            let measured = path.transport.measurements(now: now)
            let jitter = statistics.received > 0 ? Self.milliseconds(statistics.jitter) : nil
            return PeerStatus(
                id: link.peerID, name: link.name, state: link.state, route: link.route, via: link.via,
                reason: link.reason, rttMs: link.rttMs.map { Self.rounded($0, 1) },
                lossPct: measured.lossPct.map { Self.rounded($0, 2) },
                jitterMs: jitter.map { Self.rounded($0, 2) }, rxKbps: Self.rounded(measured.rxKbps, 1),
                txKbps: Self.rounded(measured.txKbps, 1), packetsRx: traffic.packetsReceived,
                packetsTx: traffic.packetsSent, concealedMs: Double(statistics.concealed) * frameMs,
                skippedMs: Double(statistics.dropped) * frameMs,
                speaking: statistics.isSpeaking, volumePct: path.channel.volume,
                recording: link.recording,
                queueDelayMs: link.queueDelayMs.map(Double.init),
                latencyMs: engineLatency.map { engine in
                    ReceiveLatency(
                        network: link.rttMs.map { Self.rounded($0 / 2, 2) },
                        jitterBuffer: Self.budgetMilliseconds(statistics.currentDelay),
                        jitterTarget: Self.budgetMilliseconds(statistics.targetDelay),
                        mix: Self.budgetMilliseconds(engine.mix),
                        playback: engine.playbackQueue.map { Self.budgetMilliseconds($0) })
                }, forgedPassedOn: path.transport.metrics.forgedPassedOn)
        }
        let relaying = router.activePairs(at: now).map { pair in
            pair.map { core.member($0)?.id ?? hexString($0.prefix(8)) }
        }
        var status = MeetingStatus(
            state: core.meetingState, rendezvous: core.rendezvousState, securityCode: core.securityCode, peers: peers,
            relaying: relaying, chat: chatMessages(), recordingPath: recorder?.path)
        if let engine {
            status.speaking = !core.muted && engine.isRunning && engine.isSpeaking
            status.input = engine.input.description
            status.output = engine.output.description
            status.latency = engineLatency.map { stages in
                SendLatency(
                    capture: stages.captureQueue.map { Self.budgetMilliseconds($0) }, frame: frameMs,
                    lookahead: Self.budgetMilliseconds(engine.codecLookahead),
                    denoise: Self.budgetMilliseconds(engine.processingDelay),
                    process: Self.budgetMilliseconds(stages.process),
                    send: Self.budgetMilliseconds(stages.send))
            }
        }
        if let rate = core.sendRateView, let engine {
            let encoding = engine.sendEncoding
            // Below the estimate the encoding fits a signed frame's bytes in; at the top it sends
            // its full rate and the signatures on top.
            let signatures =
                rate.fanOut != nil && !rate.limited
                ? Double(MeetingCore.fanOutPacketExtra * 8) / Double(max(1, encoding.packetMilliseconds)) : 0
            status.sendRate = SendRateStatus(
                estimateKbps: Self.rounded(rate.estimateKbps, 1),
                uplinkKbps: Self.rounded(rate.estimateKbps * Double(rate.streams) + signatures, 1),
                limited: rate.limited,
                opusKbps: Double(encoding.opusBitrate) / 1000, packetMs: encoding.packetMilliseconds,
                copies: encoding.copies, congested: rate.congested, fanOut: rate.fanOut)
        }
        status.inputFallback = followers[.input]?.fallenBack ?? false
        status.outputFallback = followers[.output]?.fallenBack ?? false
        return status
    }

    /// `value` to `decimals` places, so `status --json` shows what was measured, not float noise.
    static func rounded(_ value: Double, _ decimals: Int) -> Double {
        var scale = 1.0
        for _ in 0..<decimals { scale *= 10 }
        return (value * scale).rounded() / scale
    }

    /// A stage of the latency budget as status shows it: milliseconds to 0.01.
    static func budgetMilliseconds(_ duration: Duration) -> Double { rounded(milliseconds(duration), 2) }

    static func milliseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    }

    // MARK: Ending

    /// Sends what is still queued (LEAVE went out over the sessions already; BYE through the
    /// rendezvous), then releases everything. Every wait is bounded, so stopping always works.
    private func tearDown() async {
        timer?.cancel()
        devicePoll?.cancel()
        await outbox.finish(within: .seconds(1))
        for task in background { task.cancel() }
        for id in Array(paths.keys) { removePath(id) }
        if let recorder {
            // The file gets its last pages (bounded: the writer has at most a second to encode).
            self.recorder = nil
            _ = await withTimeLimit(.seconds(1)) { _ = recorder.finish() }
        }
        engine?.stop()
        engine = nil
        let agent = self.agent
        let removals = self.removals
        let tunnels = turnTunnels
        let released = await withTimeLimit(.seconds(1)) {
            for removal in removals { await removal.value }
            await agent?.close()
            await tunnels?.close()
        }
        if !released { logger.notice("ICE streams still closing at exit (TURN allocations time out by themselves)") }
        self.agent = nil
    }
}

/// Blocking: opens the PulseAudio device (nil: the default) and hands it to the engine.
private func switchEngine(_ engine: AudioEngine, _ direction: AudioDirection, to name: String?) throws {
    switch direction {
    case .input: try engine.switchInput(to: .pulse(source: name))
    case .output: try engine.switchOutput(to: .pulse(sink: name))
    }
}

/// Sends envelopes through the rendezvous in order, beside the loop: a write to a connection
/// that died must not hold up the meeting. Between connections envelopes fail quietly; the core
/// re-sends what matters after the next WELCOME.
final class EnvelopeOutbox: Sendable {
    private let queue: AsyncStream<([UInt8], RendezvousClient.Recipient)>
    private let input: AsyncStream<([UInt8], RendezvousClient.Recipient)>.Continuation
    private let sender = Mutex<Task<Void, Never>?>(nil)
    private let logger: Logger

    init(logger: Logger) {
        self.logger = logger
        (queue, input) = AsyncStream.makeStream()
    }

    func start(client: RendezvousClient) {
        let queue = self.queue
        let logger = self.logger
        sender.withLock {
            $0 = Task {
                for await (envelope, recipient) in queue {
                    do {
                        try await client.send(to: recipient, payload: envelope)
                    } catch {
                        logger.debug("envelope not sent", metadata: ["error": "\(error)"])
                    }
                }
            }
        }
    }

    func send(_ envelope: [UInt8], to recipient: RendezvousClient.Recipient) {
        input.yield((envelope, recipient))
    }

    /// Sends what is queued, waiting at most `limit`.
    func finish(within limit: Duration) async {
        input.finish()
        guard let task = sender.withLock({ $0 }) else { return }
        if !(await withTimeLimit(limit) { await task.value }) { task.cancel() }
    }
}

/// The room's identity pins file, read and written off the meeting's loop, one write at a time.
actor PinStore {
    let file: IdentityPins.File

    init(file: IdentityPins.File) { self.file = file }

    func load() throws(StateFileError) -> IdentityPins { try file.load() }
    func save(_ pins: IdentityPins) throws(StateFileError) { try file.save(pins) }
}

/// Runs `body`, waiting at most `limit` for it; false if it was still running then (it goes on
/// by itself: a stuck release must not keep the daemon from stopping).
func withTimeLimit(_ limit: Duration, _ body: @escaping @Sendable () async -> Void) async -> Bool {
    let waiter = Mutex<CheckedContinuation<Bool, Never>?>(nil)
    let resume: @Sendable (Bool) -> Void = { finished in
        let continuation = waiter.withLock { waiter in
            defer { waiter = nil }
            return waiter
        }
        continuation?.resume(returning: finished)
    }
    return await withCheckedContinuation { continuation in
        waiter.withLock { $0 = continuation }
        Task {
            await body()
            resume(true)
        }
        Task {
            try? await Task.sleep(for: limit)
            resume(false)
        }
    }
}

/// Why the rendezvous will not have us, in the user's terms.
func explainRefusal(_ error: any Error) -> String {
    if case .rejected(let refusal) = error as? RendezvousClientError, refusal.code == .roomFull {
        return "the meeting is full: \(refusal.reason)"
    }
    return "\(error)"
}

extension PathFact {
    /// An ICE stream event as the core's fact (on the stream's event task). A working pair also
    /// releases what the session held back for it.
    init?(_ event: ICEStreamEvent, releasing transport: PeerTransport) {
        switch event {
        case .localCandidate(let candidate): self = .localCandidate(line: candidate.line, ufrag: candidate.ufrag)
        case .localCandidatesDone: self = .localCandidatesDone
        case .restarted: self = .generationBegan
        case .selectedPair(let pair): self = .selectedPair(PathRoute(kind: Self.route(of: pair)))
        case .stateChanged(let state):
            if state.isConnected {
                transport.flush()
                self = .connected
            } else if case .failed(let why) = state {
                self = .failed("\(why)")
            } else {
                return nil
            }
        }
    }

    /// `relay` when either side relays; otherwise the kind of the peer's candidate media flows
    /// to (`host`, `srflx`, `prflx`): how the peer is reached.
    static func route(of pair: ICECandidatePair) -> String {
        pair.route == .relayed ? ICECandidate.Kind.relayed.rawValue : pair.remote.kind.rawValue
    }
}

extension MeetingLog.Level {
    var logLevel: Logger.Level {
        switch self {
        case .debug: .debug
        case .info: .info
        case .notice: .notice
        case .warning: .warning
        case .error: .error
        }
    }
}

extension Logger {
    /// The same logger (level and metadata, such as the room tag) under another label.
    func with(label: String) -> Logger {
        var logger = Logger(label: label)
        logger.logLevel = logLevel
        for (key, value) in handler.metadata { logger[metadataKey: key] = value }
        return logger
    }
}
