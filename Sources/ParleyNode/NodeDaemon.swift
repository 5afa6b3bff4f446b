public import ControlAPI
import ICE
public import Logging
import MeetingCore
import ParleyAudio
import ParleyProtocol
public import ServiceLifecycle

/// The daemon: this node's identity, at most one meeting at a time, the mute switch, and the
/// answers to control requests (`parley join`, `status`, …).
public actor NodeDaemon: ControlHandler {
    public let configuration: NodeConfiguration
    public let eventHub = EventHub()
    private let identity: NodeIdentity
    private let executor: GLibExecutor
    private let logger: Logger
    private var muted = false
    /// The devices chosen for meetings (`--audio-in`/`--audio-out`, then `parley input`/`output`).
    private var audioInput: AudioInput
    private var audioOutput: AudioOutput
    private var meeting: Meeting?
    private var meetingTask: Task<Void, Never>?

    /// How long `parley join` waits for the rendezvous to admit us before answering "still
    /// connecting" (the meeting keeps trying in the background).
    public static let joinWait: Duration = .seconds(10)

    /// Loads (or creates) the identity in the state directory; errors name the file and the fix.
    public init(configuration: NodeConfiguration, logger: Logger) throws {
        do {
            try Hello.validateDisplayName(configuration.displayName)
        } catch {
            throw NodeError("invalid --name \"\(configuration.displayName)\": \(error)")
        }
        do {
            identity = try NodeIdentity.loadOrCreate(stateDirectory: configuration.stateDirectory)
        } catch {
            throw NodeError("\(error)")
        }
        executor = try GLibExecutor(name: "parley-ice")
        self.configuration = configuration
        self.logger = logger
        audioInput = configuration.audio.input
        audioOutput = configuration.audio.output
    }

    /// This node's short identity (as peers and `parley status` show it).
    public nonisolated var shortID: String { identity.peerIdentity.shortID }

    // MARK: Meetings

    /// Joins the meeting of `inviteText` and waits up to `limit` for the rendezvous to admit us.
    /// Throws a clear error for a bad invite, a meeting already running, or a refusal.
    @discardableResult
    public func join(_ inviteText: String, waitingAtMost limit: Duration = joinWait) async throws(NodeError) -> String {
        let invite: Invite
        do {
            invite = try Invite(parsing: inviteText)
        } catch {
            throw NodeError("invalid invite: \(error)")
        }
        guard meeting == nil else { throw NodeError("already in a meeting; `parley leave` first") }
        var configuration = self.configuration
        configuration.audio.input = audioInput
        configuration.audio.output = audioOutput
        let context = MeetingContext(
            identity: identity, configuration: configuration, executor: executor, events: eventHub, logger: logger)
        let meeting = Meeting(invite: invite, context: context, muted: muted)
        self.meeting = meeting
        meetingTask = Task {
            let failure = await meeting.run()
            self.ended(meeting, failure: failure)
        }
        logger.info("joining", metadata: ["rendezvous": "\(invite.rendezvous.hostHeader)"])
        switch await meeting.admission.wait(limit: limit) {
        case .admitted:
            return "joined the meeting"
        case .failed(let reason):
            await meetingTask?.value
            throw NodeError(reason)
        case .pending:
            return "joining: the rendezvous at \(invite.rendezvous.hostHeader) does not answer yet; retrying"
        }
    }

    private func ended(_ finished: Meeting, failure: String?) {
        guard meeting === finished else { return }
        meeting = nil
        meetingTask = nil
        if let failure { logger.error("meeting ended", metadata: ["why": "\(failure)"]) }
    }

    /// Leaves the meeting, if any, and waits until everything of it is released.
    public func leave() async {
        guard let meeting, let task = meetingTask else { return }
        await meeting.leave()
        await task.value
    }

    /// Graceful shutdown: leave (LEAVE and BYE reach the peers), end watches, stop ICE's thread.
    public func shutdown() async {
        await leave()
        eventHub.close()
        executor.shutdown()
    }

    // MARK: Control API

    public func handle(_ request: ControlRequest) async -> ControlResponse {
        switch request.method {
        case .status:
            return .success(status: await status())
        case .join:
            guard let invite = request.invite else { return .failure("join needs an invite") }
            do {
                return .success(message: try await join(invite))
            } catch {
                return .failure(error.description)
            }
        case .leave:
            guard meeting != nil else { return .failure("not in a meeting") }
            await leave()
            return .success(message: "left the meeting")
        case .mute, .unmute:
            muted = request.method == .mute
            await meeting?.setMuted(muted)
            eventHub.publish(ControlEvent(kind: .muted, state: muted ? .muted : .unmuted))
            return .success(message: muted ? "muted" : "unmuted")
        case .verify:
            guard let meeting else { return .failure("not in a meeting") }
            return .success(verification: await meeting.verify())
        case .watch:
            // The control server streams `events()` for watch; a plain request gets nothing more.
            return .success()
        case .say:
            guard let text = request.text else { return .failure("say needs a message") }
            guard let meeting else { return .failure("cannot send: not in a meeting") }
            switch await meeting.say(text) {
            case .success(let delivery):
                return .success(message: Self.describe(delivery))
            case .failure(let refusal):
                return .failure("not sent: \(refusal)")
            }
        case .chat:
            return .success(chat: await meeting?.chat() ?? [])
        case .volume:
            guard let meeting else { return .failure("not in a meeting") }
            return await meeting.volume(peer: request.peer, percent: request.percent)
        case .devices:
            return await devices()
        case .input, .output:
            return await switchDevice(request.method == .input ? .input : .output, to: request.device)
        case .testAudio:
            return await testAudio()
        case .recordStart:
            guard let meeting else { return .failure("not in a meeting") }
            if let path = request.path, !path.hasPrefix("/") {
                return .failure("the recording's path must be absolute: \(path)")
            }
            let reply = await meeting.recordStart(path: request.path)
            return reply.ok ? .success(message: reply.message) : .failure(reply.message)
        case .recordStop:
            guard let meeting else { return .failure("not in a meeting") }
            let reply = await meeting.recordStop()
            return reply.ok ? .success(message: reply.message) : .failure(reply.message)
        }
    }

    // MARK: Devices

    private func devices() async -> ControlResponse {
        let listed: SoundServerDevices
        do {
            listed = try await Task.detached { try SoundServerDevices.list() }.value
        } catch {
            return .failure("cannot list audio devices: \(error)")
        }
        let inUse = await meeting?.status()
        let input = inUse?.input.flatMap { try? AudioInput(parsing: $0) } ?? audioInput
        let output = inUse?.output.flatMap { try? AudioOutput(parsing: $0) } ?? audioOutput
        // A stream opened on the default plays on the server's default.
        let source: String? =
            switch input {
            case .pulse(let name): name ?? listed.defaultSource
            default: nil
            }
        let sink: String? =
            switch output {
            case .pulse(let name): name ?? listed.defaultSink
            default: nil
            }
        var response = ControlResponse.success()
        response.devices = DeviceList(
            sources: listed.sources.map {
                AudioDeviceInfo(
                    name: $0.name, description: $0.description, isDefault: $0.name == listed.defaultSource,
                    inUse: $0.name == source)
            },
            sinks: listed.sinks.map {
                AudioDeviceInfo(
                    name: $0.name, description: $0.description, isDefault: $0.name == listed.defaultSink,
                    inUse: $0.name == sink)
            },
            chosenInput: audioInput.description, chosenOutput: audioOutput.description,
            inputFallback: inUse?.inputFallback ?? false, outputFallback: inUse?.outputFallback ?? false)
        return response
    }

    /// `parley input` / `output`: switches the meeting's device at once, and is the choice for
    /// the next meetings. Without a meeting the device is only checked (opened once).
    private func switchDevice(_ direction: AudioDirection, to name: String?) async -> ControlResponse {
        let text = "pulse" + (name.map { ":\($0)" } ?? "")
        let input: AudioInput
        let output: AudioOutput
        do {
            input = direction == .input ? try AudioInput(parsing: text) : audioInput
            output = direction == .output ? try AudioOutput(parsing: text) : audioOutput
        } catch {
            return .failure("\(error)")
        }
        let shown = name ?? "the default device"
        if let meeting {
            if let failure = await meeting.switchDevice(direction, to: name) {
                return .failure("cannot switch \(direction.rawValue) to \(shown): \(failure)")
            }
        } else {
            let frame = configuration.audio.frameDuration.samples
            let problem = await Task.detached {
                direction == .input
                    ? AudioDevices.problem(input: input, output: .null, frameSamples: frame)
                    : AudioDevices.problem(input: .silence, output: output, frameSamples: frame)
            }.value
            if let problem { return .failure("cannot use \(shown) as \(direction.rawValue): \(problem)") }
        }
        audioInput = input
        audioOutput = output
        return .success(message: "\(direction.rawValue): \(shown)")
    }

    /// `parley test-audio`: a tone on the chosen speaker while the chosen microphone is measured.
    private func testAudio() async -> ControlResponse {
        let input = audioInput
        // A WAV output is a recording of the meeting: the tone must not go into (or clobber) it.
        let output: AudioOutput = if case .wav = audioOutput { .null } else { audioOutput }
        let seconds = 1.5
        let hertz = 440
        do {
            let measured = try await Task.detached {
                try AudioDevices.test(input: input, output: output, hertz: Double(hertz), seconds: seconds)
            }.value
            var response = ControlResponse.success()
            response.audioTest = AudioTestResult(
                input: input.description, output: output.description, toneHz: hertz, seconds: seconds,
                inputLevelDbfs: (measured.level * 10).rounded() / 10, inputPeakDbfs: (measured.peak * 10).rounded() / 10
            )
            return response
        } catch {
            return .failure("audio test failed: \(error)")
        }
    }

    public func events() async -> AsyncStream<ControlEvent> {
        eventHub.subscribe()
    }

    private func status() async -> StatusReport {
        let meetingStatus = await meeting?.status()
        var node = NodeStatus(
            id: shortID, name: configuration.displayName, muted: muted, meeting: meetingStatus?.state ?? .idle,
            invite: meeting?.invite.string, securityCode: meetingStatus?.securityCode,
            rendezvous: meetingStatus?.rendezvous ?? .none, relaying: meetingStatus?.relaying ?? [],
            speaking: meetingStatus?.speaking ?? false, input: meetingStatus?.input ?? audioInput.description,
            output: meetingStatus?.output ?? audioOutput.description,
            recordingPath: meetingStatus?.recordingPath, latencyMs: meetingStatus?.latency)
        node.sendRate = meetingStatus?.sendRate
        return StatusReport(node: node, peers: meetingStatus?.peers ?? [], chat: meetingStatus?.chat ?? [])
    }

    /// `parley say`'s answer: whom the message is on its way to, and who cannot get it.
    static func describe(_ delivery: ChatDelivery) -> String {
        var text =
            delivery.recipients.isEmpty
            ? "sent, but nobody else is in the meeting" : "sent to " + delivery.recipients.joined(separator: ", ")
        if !delivery.unreachable.isEmpty {
            text += "; not to " + delivery.unreachable.joined(separator: ", ") + " (their Parley is too old for chat)"
        }
        return text
    }
}

/// The daemon as a service: joins the meeting it was started with (failing the whole process on
/// a refusal such as "meeting full"), then runs until SIGTERM/SIGINT, when it leaves gracefully.
/// ServiceLifecycle names services by their description in its (debug) logs: this one never
/// shows its invite.
public struct NodeService: Service, CustomStringConvertible {
    let daemon: NodeDaemon
    let initialInvite: String?

    public init(daemon: NodeDaemon, initialInvite: String?) {
        self.daemon = daemon
        self.initialInvite = initialInvite
    }

    public var description: String { "NodeService" }

    public func run() async throws {
        if let initialInvite {
            do {
                // No time limit: started for this meeting, the daemon waits for its rendezvous.
                _ = try await cancelWhenGracefulShutdown {
                    try await daemon.join(initialInvite, waitingAtMost: .seconds(365 * 86_400))
                }
            } catch let error as NodeError {
                await daemon.shutdown()
                throw error
            } catch {
                // Cancelled by a graceful shutdown while waiting: leave below.
            }
        }
        try? await gracefulShutdown()
        await daemon.shutdown()
    }
}
