import ControlAPI
import Logging
import NIOPosix
import ParleyNode
import ParleyTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A handler that records requests and lets the test push watch events.
final class RecordingHandler: ControlHandler {
    let requests = Mutex<[ControlRequest]>([])
    let watchers = Mutex<[AsyncStream<ControlEvent>.Continuation]>([])

    func handle(_ request: ControlRequest) async -> ControlResponse {
        requests.withLock { $0.append(request) }
        switch request.method {
        case .status:
            return .success(
                status: StatusReport(
                    node: NodeStatus(
                        id: "0a0b", name: "test", muted: false, meeting: .idle, invite: nil,
                        securityCode: nil, rendezvous: .none),
                    peers: []))
        case .join where request.invite == "bad":
            return .failure("invalid invite: bad checksum (a typo?)")
        default:
            return .success()
        }
    }

    func events() async -> AsyncStream<ControlEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: ControlEvent.self)
        watchers.withLock { $0.append(continuation) }
        return stream
    }
}

/// A control server on a fresh socket path in a private temporary directory.
struct ServerFixture {
    let directory: String
    let path: String
    let handler = RecordingHandler()

    init() {
        var template = Array("/tmp/parley-control-XXXXXX".utf8CString)
        directory = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
        path = directory + "/parleyd.sock"
    }

    func server() -> ControlServer {
        ControlServer(
            path: path, handler: handler, group: MultiThreadedEventLoopGroup.singleton,
            logger: Logger(label: "test"))
    }

    /// Runs `body` while a bound server serves, then stops it. `body` uses the blocking client
    /// (as the CLI does), so it runs on its own thread, not on the concurrency pool the server
    /// needs. The limits are wide: the server answers from that pool, which the first seconds of
    /// `swift test` (every suite at once on 2 cores) starved for 10–23 s in clean-clone runs, and
    /// a 5 s limit failed there ("parleyd did not answer within 5 s"); a passing run is no slower.
    func withServer(_ body: @Sendable @escaping (ControlClient) throws -> Void) async throws {
        let bound = try await server().bind()
        let client = ControlClient(path: path, timeoutSeconds: 30)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await bound.serve() }
            defer { group.cancelAll() }
            try await withTimeout(.seconds(90), "control requests") {
                try await runBlocking { try body(client) }
            }
        }
    }

    func cleanUp() {
        unlink(path)
        rmdir(directory)
    }
}

@Suite("Control server over a real Unix socket")
struct ControlServerTests {
    @Test func requestsReachTheHandlerAndAnswersComeBack() async throws {
        let fixture = ServerFixture()
        defer { fixture.cleanUp() }
        try await fixture.withServer { client in
            let status = try client.send(ControlRequest(.status))
            #expect(status.status?.node.name == "test")
            try client.send(ControlRequest(.mute))
            #expect(throws: ControlError.daemon("invalid invite: bad checksum (a typo?)")) {
                try client.send(ControlRequest(.join, invite: "bad"))
            }
        }
        #expect(fixture.handler.requests.withLock { $0.map(\.method) } == [.status, .mute, .join])
    }

    @Test func socketIsOwnerOnly() async throws {
        let fixture = ServerFixture()
        defer { fixture.cleanUp() }
        try await fixture.withServer { _ in
            var info = stat()
            #expect(lstat(fixture.path, &info) == 0)
            #expect(info.st_mode & 0o777 == 0o600)
            #expect(info.st_mode & S_IFMT == S_IFSOCK)
        }
    }

    @Test func staleSocketIsReplacedAndALiveDaemonIsNot() async throws {
        let fixture = ServerFixture()
        defer { fixture.cleanUp() }
        // A socket file with nobody listening: what a crashed daemon leaves behind.
        let stale = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { bytes in
            for (index, byte) in fixture.path.utf8.enumerated() { bytes[index] = byte }
        }
        let boundStale = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(stale, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        #expect(boundStale == 0)
        close(stale)
        #expect(throws: ControlError.staleSocket(path: fixture.path)) {
            try ControlClient(path: fixture.path).send(ControlRequest(.status))
        }
        try await fixture.withServer { client in
            let answer = try client.send(ControlRequest(.status))
            #expect(answer.ok)
        }
        // A second daemon on the same path must refuse rather than steal the socket.
        let bound = try await fixture.server().bind()
        await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await bound.serve() }
            defer { group.cancelAll() }
            await #expect(throws: ControlError.system("another parleyd is already running on \(fixture.path)")) {
                _ = try await fixture.server().bind()
            }
        }
    }

    @Test func aNonSocketFileIsNeverReplaced() async throws {
        let fixture = ServerFixture()
        defer { fixture.cleanUp() }
        let file = open(fixture.path, O_CREAT | O_WRONLY, 0o600)
        close(file)
        await #expect(throws: ControlError.system("\(fixture.path) exists and is not a socket; refusing to replace it"))
        {
            _ = try await fixture.server().bind()
        }
    }

    /// A socket directory another user could write to (the attacker pre-created it 0777 in /tmp):
    /// the daemon refuses to put its socket there, with one line saying why.
    @Test func aSocketDirectoryOthersCanWriteIsRefused() async throws {
        let fixture = ServerFixture()
        defer { fixture.cleanUp() }
        #expect(chmod(fixture.directory, 0o777) == 0)
        let error = await #expect(throws: ControlError.self) { _ = try await fixture.server().bind() }
        #expect(
            error?.description == "control socket \(fixture.path): \(fixture.directory) is open to other users "
                + "(mode 777); refusing to use it: run chmod 700 \(fixture.directory)")
        var info = stat()
        #expect(lstat(fixture.path, &info) != 0, "no socket was created")
    }

    @Test func missingDaemonIsOneClearLine() {
        let error = #expect(throws: ControlError.self) {
            try ControlClient(path: "/tmp/parley-no-such-dir/parleyd.sock").send(ControlRequest(.status))
        }
        #expect(error == .noDaemon(path: "/tmp/parley-no-such-dir/parleyd.sock"))
        #expect(error?.description.contains("parleyd is not running") == true)
        #expect(error?.description.contains("\n") == false)
    }

    @Test func watchStreamsEventsUntilTheDaemonEndsIt() async throws {
        let fixture = ServerFixture()
        defer { fixture.cleanUp() }
        let handler = fixture.handler
        let pusher = Task {
            try await waitUntil(.seconds(10), "a watcher to subscribe") { handler.watchers.withLock { !$0.isEmpty } }
            let watcher = handler.watchers.withLock { $0[0] }
            watcher.yield(ControlEvent(kind: .peerJoined, peer: "ab", name: "alice"))
            watcher.yield(ControlEvent(kind: .speaking, speaking: ["alice"]))
            watcher.finish()
        }
        let received = Mutex<[ControlEvent]>([])
        try await fixture.withServer { client in
            try client.watch { event in
                received.withLock { $0.append(event) }
                return true
            }
        }
        try await pusher.value
        let events = received.withLock { $0 }
        #expect(events.map(\.kind) == [.peerJoined, .speaking])
        #expect(events.last?.speaking == ["alice"])
    }

    @Test func badRequestsAreAnsweredClearly() async throws {
        let fixture = ServerFixture()
        defer { fixture.cleanUp() }
        try await fixture.withServer { client in
            var future = ControlRequest(.status)
            future.version = 99
            #expect(
                throws: ControlError.daemon(
                    "parley speaks control API v99 but this parleyd speaks v1; use matching versions")
            ) {
                try client.send(future)
            }
        }
        #expect(fixture.handler.requests.withLock { $0.isEmpty })
    }
}
