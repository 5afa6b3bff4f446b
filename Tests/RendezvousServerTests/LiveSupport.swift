import Logging
import NIOConcurrencyHelpers
import ParleyProtocol
import ParleyTestSupport
import RendezvousClient
import RendezvousServer
import RendezvousWire
import Sodium

/// Tests log only warnings and worse (Scripts/test output stays readable).
let quietLogger: Logger = {
    var logger = Logger(label: "test.rendezvous")
    logger.logLevel = .warning
    return logger
}()

/// Runs `body` against a real server on 127.0.0.1, port 0, and always shuts it down.
func withServer<T: Sendable>(
    _ adjust: (inout RendezvousServerConfiguration) -> Void = { _ in },
    _ body: (RendezvousServer, RendezvousServer.BoundAddresses) async throws -> T
) async throws -> T {
    var configuration = RendezvousServerConfiguration()
    configuration.listen = .init(host: "127.0.0.1", port: 0)
    adjust(&configuration)
    let server = RendezvousServer(configuration: configuration, logger: quietLogger)
    let addresses = try await server.start()
    do {
        let result = try await body(server, addresses)
        await server.shutdown()
        return result
    } catch {
        await server.shutdown()
        throw error
    }
}

/// A real `RendezvousClient` running in a task, whose events a test awaits with a time limit.
final class TestMember: Sendable {
    let client: RendezvousClient
    private let task: Task<Void, any Error>
    private let recorder: Task<Void, Never>
    private let events = NIOLockedValueBox<[RendezvousClient.Event]>([])

    init(url: String, room: Ed25519.KeyPair, pin: [UInt8]? = nil) throws {
        var configuration = RendezvousClient.Configuration(url: try RendezvousURL(parsing: url), certificatePin: pin)
        configuration.reconnect = .init(initial: .milliseconds(50), maximum: .milliseconds(400))
        configuration.handshakeTimeout = .seconds(5)
        let client = RendezvousClient(configuration: configuration, roomKey: room, logger: quietLogger)
        self.client = client
        task = Task { try await client.run() }
        let events = self.events
        recorder = Task {
            for await event in client.events { events.withLockedValue { $0.append(event) } }
        }
    }

    /// Waits for (and consumes) the first event `matching` returns a value for. The limit is
    /// generous: at the start of `swift test` every suite starts at once on 2 cores, and a WELCOME
    /// on loopback took over 10 s there (a clean clone's run failed on it, CI's took 30 s in all).
    func next<T: Sendable>(
        _ what: String, within limit: Duration = .seconds(30),
        _ matching: @escaping @Sendable (RendezvousClient.Event) -> T?
    ) async throws -> T {
        let found = NIOLockedValueBox<T?>(nil)
        try await waitUntil(limit, what) { [events] in
            events.withLockedValue { events in
                guard let index = events.firstIndex(where: { matching($0) != nil }) else { return false }
                found.withLockedValue { $0 = matching(events[index]) }
                events.remove(at: index)
                return true
            }
        }
        return found.withLockedValue { $0! }
    }

    /// Whether an event matching `predicate` has arrived (without waiting or consuming it).
    func has(_ predicate: @escaping @Sendable (RendezvousClient.Event) -> Bool) -> Bool {
        events.withLockedValue { $0.contains(where: predicate) }
    }

    func joined(reconnected: Bool = false) async throws -> RendezvousWelcome {
        try await next("WELCOME") {
            if case .joined(let welcome, let again) = $0, again == reconnected { welcome } else { nil }
        }
    }

    /// How `run()` ended (after it ended by itself).
    func outcome(within limit: Duration = .seconds(10)) async throws -> Result<Void, any Error> {
        let task = self.task
        return try await withTimeout(limit, "the client to stop") { await task.result }
    }

    deinit { task.cancel() }

    func stop() async {
        task.cancel()
        _ = await task.result
        _ = await recorder.value
    }
}

/// Connects a raw WebSocket and completes the upgrade (off the cooperative pool).
func rawConnect(
    _ addresses: RendezvousServer.BoundAddresses, receiveBufferBytes: Int32? = nil
) async throws -> RawWebSocket {
    try await RawWebSocket.run {
        let socket = try RawWebSocket(port: addresses.rendezvous.port, receiveBufferBytes: receiveBufferBytes)
        let status = try socket.upgrade()
        guard status == 101 else { throw RawWebSocket.Failure(description: "upgrade answered \(status)") }
        return socket
    }
}

/// Upgrades, answers the CHALLENGE for `room` and returns the WELCOME.
func rawJoin(_ socket: RawWebSocket, room: Ed25519.KeyPair) async throws -> RendezvousWelcome {
    try await RawWebSocket.run {
        guard case .challenge(let nonce) = try socket.readMessage() else {
            throw RawWebSocket.Failure(description: "no CHALLENGE")
        }
        try socket.send(.join(roomID: room.publicKey, proof: JoinProof.make(nonce: nonce, roomKey: room)))
        guard case .welcome(let welcome) = try socket.readMessage() else {
            throw RawWebSocket.Failure(description: "no WELCOME")
        }
        return welcome
    }
}

/// Reads messages until an ERROR; returns its code (nil if the connection ended without one).
func rawError(_ socket: RawWebSocket) async throws -> RendezvousErrorCode? {
    try await RawWebSocket.run {
        while let message = try socket.readMessage() {
            if case .error(let error) = message { return error.code }
        }
        return nil
    }
}
