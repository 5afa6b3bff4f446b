public import ControlAPI
import ICE
public import Logging
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

    public func events() async -> AsyncStream<ControlEvent> {
        eventHub.subscribe()
    }

    private func status() async -> StatusReport {
        let meetingStatus = await meeting?.status()
        let node = NodeStatus(
            id: shortID, name: configuration.displayName, muted: muted, meeting: meetingStatus?.state ?? .idle,
            invite: meeting?.invite.string, securityCode: meetingStatus?.securityCode,
            rendezvous: meetingStatus?.rendezvous ?? .none, relaying: meetingStatus?.relaying ?? [],
            recordingPath: meetingStatus?.recordingPath)
        return StatusReport(node: node, peers: meetingStatus?.peers ?? [])
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
