import NIOConcurrencyHelpers
import ParleyProtocol
import ParleyTestSupport
import RendezvousClient
import RendezvousServer
import RendezvousWire
import Sodium
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What running several instances behind a load balancer needs from one (docs/OPERATIONS.md): the
/// room's shard key in the request path, checked against JOIN (§4.1); the client address a trusted
/// proxy reports, for the per-address limits; and asking every client to reconnect while serving.
@Suite("Rendezvous live: shard key, trusted proxies, reconnect", .serialized)
struct LiveShardAndProxyTests {
    /// Upgrades on `path` (after `preamble`, e.g. a PROXY header, with extra `headers`) and
    /// answers the CHALLENGE for `room`; returns the server's answer: WELCOME, or ERROR.
    func join(
        _ addresses: RendezvousServer.BoundAddresses, path: String = "/", room: Ed25519.KeyPair,
        preamble: [UInt8] = [], headers: [String] = []
    ) async throws -> RendezvousMessage? {
        let held = self.held
        return try await RawWebSocket.run {
            let socket = try RawWebSocket(port: addresses.rendezvous.port)
            if !preamble.isEmpty { try socket.send(preamble) }
            guard (try? socket.upgrade(path: path, headers: headers)) == 101 else { return nil }
            // Over a per-address limit, ERROR comes instead of CHALLENGE (§4.3).
            let first = try socket.readMessage()
            guard case .challenge(let nonce) = first else { return first }
            try socket.send(.join(roomID: room.publicKey, proof: JoinProof.make(nonce: nonce, roomKey: room)))
            let answer = try socket.readMessage()
            // Keep the connection open until the end of the test (it counts against the limits).
            held.withLockedValue { $0.append(socket) }
            return answer
        }
    }

    /// Connections kept open until the test ends (they count against the limits).
    let held = NIOLockedValueBox<[RawWebSocket]>([])

    func isWelcome(_ message: RendezvousMessage?) -> Bool {
        if case .welcome = message { true } else { false }
    }

    func errorCode(_ message: RendezvousMessage?) -> RendezvousErrorCode? {
        if case .error(let error) = message { error.code } else { nil }
    }

    @Test func memberRoutedByAnotherRoomsKeyIsRefusedAndAKeylessPathStillJoins() async throws {
        try await withServer { _, addresses in
            let room = Ed25519.KeyPair.generate()
            let other = Ed25519.KeyPair.generate()
            let key = RendezvousShard.key(roomID: room.publicKey)
            let refused = try await join(addresses, path: "/r/\(key)", room: other)
            #expect(errorCode(refused) == .misrouted)
            if case .error(let error) = refused { #expect(error.reason.contains("shard key")) }
            #expect(isWelcome(try await join(addresses, path: "/r/\(key)", room: room)))
            #expect(isWelcome(try await join(addresses, path: "/parley/r/\(key)?v=1", room: room)))
            // A client older than the shard key connects to the invite's path alone.
            #expect(isWelcome(try await join(addresses, path: "/", room: other)))
            #expect(isWelcome(try await join(addresses, path: "/parley", room: other)))
        }
    }

    /// The node's client asks for the invite's path plus the room's key (seen by a bare socket
    /// that reads the request line).
    @Test func clientRequestsTheRoomsShardPath() async throws {
        let listener = try TCPListener()
        let room = Ed25519.KeyPair.generate()
        let url = try RendezvousURL(parsing: "ws://127.0.0.1:\(listener.port)/parley/")
        let client = RendezvousClient(configuration: .init(url: url), roomKey: room, logger: quietLogger)
        let running = Task { try await client.run() }
        defer { running.cancel() }
        let requestLine = try await RawWebSocket.run { try listener.acceptAndReadLine() }
        #expect(requestLine == "GET /parley/r/\(RendezvousShard.key(roomID: room.publicKey)) HTTP/1.1")
    }

    /// A load balancer with no instance available answers 502/503/504: the client retries (§4.1)
    /// instead of concluding that the server does not speak Parley.
    @Test func gatewayErrorsAreRetriedLikeALostConnection() async throws {
        let listener = try TCPListener()
        var configuration = RendezvousClient.Configuration(
            url: try RendezvousURL(parsing: "ws://127.0.0.1:\(listener.port)/"))
        configuration.reconnect = .init(initial: .milliseconds(50), maximum: .milliseconds(100))
        let client = RendezvousClient(configuration: configuration, roomKey: .generate(), logger: quietLogger)
        let running = Task { try await client.run() }
        defer { running.cancel() }
        let gatewayError = "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        _ = try await RawWebSocket.run { try listener.acceptAndReadLine(answering: gatewayError) }
        // Retried: a second connection comes.
        let again = try await RawWebSocket.run {
            try listener.acceptAndReadLine(answering: "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        }
        #expect(again.hasPrefix("GET /r/"))
        // A plain 400 is a server that does not speak Parley: the client stops.
        let outcome = try await withTimeout(.seconds(10), "the client to stop") { await running.result }
        guard case .failure(let error) = outcome else { Issue.record("the client went on after a 400"); return }
        #expect(error as? RendezvousClientError == .unsupportedVersion)
    }

    // MARK: Trusted proxies

    static func proxyV1(_ client: String) -> [UInt8] {
        Array("PROXY TCP4 \(client) 127.0.0.1 40000 7777\r\n".utf8)
    }

    static func proxyV2(_ client: [UInt8]) -> [UInt8] {
        ProxyProtocolFixtures.v2Signature + [0x21, 0x11, 0x00, 0x0C] + client + [127, 0, 0, 1, 0x9C, 0x40, 0x1E, 0x61]
    }

    @Test func trustedProxyNamesTheClientThePerAddressLimitCounts() async throws {
        try await withServer({
            $0.trustedProxies = [IPNetwork(parsing: "127.0.0.0/8")!]
            $0.limits.connectionsPerAddress = 1
        }) { _, addresses in
            let room = Ed25519.KeyPair.generate()
            // One connection each from three clients behind the proxy: all within the limit of 1.
            #expect(isWelcome(try await join(addresses, room: room, preamble: Self.proxyV1("203.0.113.1"))))
            #expect(isWelcome(try await join(addresses, room: room, preamble: Self.proxyV2([203, 0, 113, 2]))))
            #expect(isWelcome(try await join(addresses, room: room, headers: ["X-Forwarded-For: 203.0.113.3"])))
            // A second one from the same client is over it, however the proxy says so.
            let again = [
                try await join(addresses, room: room, preamble: Self.proxyV2([203, 0, 113, 1])),
                try await join(addresses, room: room, headers: ["X-Forwarded-For: 198.51.100.9, 203.0.113.2"]),
                try await join(
                    addresses, room: room, headers: ["X-Forwarded-For: 203.0.113.3", "X-Forwarded-For: 127.0.0.5"]),
            ]
            #expect(again.map(errorCode) == [.tooManyConnections, .tooManyConnections, .tooManyConnections])
            // A header the proxy itself cannot have written is not believed: a bad PROXY line
            // closes the connection before any HTTP.
            let garbled = try await join(addresses, room: room, preamble: Array("PROXY TCP4 nonsense\r\n".utf8))
            #expect(garbled == nil)
        }
    }

    @Test func anUntrustedPeerCannotChooseTheAddressItIsCountedAs() async throws {
        try await withServer({ $0.limits.connectionsPerAddress = 1 }) { _, addresses in
            let room = Ed25519.KeyPair.generate()
            #expect(isWelcome(try await join(addresses, room: room, headers: ["X-Forwarded-For: 203.0.113.1"])))
            let second = try await join(addresses, room: room, headers: ["X-Forwarded-For: 203.0.113.2"])
            #expect(errorCode(second) == .tooManyConnections)
            // A PROXY header from a peer that is not a trusted proxy is no HTTP: refused outright.
            #expect(try await join(addresses, room: room, preamble: Self.proxyV1("203.0.113.3")) == nil)
        }
    }

    // MARK: Reconnect on request

    @Test func askingEveryoneToReconnectMovesClientsAndKeepsServing() async throws {
        try await withServer({ $0.limits.goingAwayRetry = .milliseconds(100) }) { server, addresses in
            let room = Ed25519.KeyPair.generate()
            let a = try TestMember(url: addresses.url, room: room)
            let b = try TestMember(url: addresses.url, room: room)
            _ = try await a.joined()
            _ = try await b.joined()
            await server.askEveryoneToReconnect()
            for member in [a, b] {
                let reason = try await member.next("GOING_AWAY") {
                    if case .disconnected(let reason, _) = $0 { reason } else { nil }
                }
                #expect(reason.contains("going away"))
            }
            let aAgain = try await a.joined(reconnected: true)
            let bAgain = try await b.joined(reconnected: true)
            #expect(aAgain.members == [bAgain.memberID] || bAgain.members == [aAgain.memberID])
            await a.stop()
            await b.stop()
        }
    }
}

/// The PROXY protocol v2 signature (spec §2.2), written out here so the test does not take it
/// from the code under test.
enum ProxyProtocolFixtures {
    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
}

/// A listening socket on 127.0.0.1 that accepts one connection and reads its first line.
final class TCPListener: @unchecked Sendable {
    // Safety: used by one test, one call at a time.
    let fd: Int32
    let port: Int

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && listen(fd, 4) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else { throw RawWebSocket.Failure(description: "cannot listen: errno \(errno)") }
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    deinit { close(fd) }

    /// Accepts a connection, reads its first line, and, with `answering`, writes that and
    /// closes once the request's head has arrived.
    func acceptAndReadLine(answering answer: String? = nil) throws -> String {
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let connection = accept(fd, nil, nil)
        guard connection >= 0 else { throw RawWebSocket.Failure(description: "no connection: errno \(errno)") }
        defer { close(connection) }
        setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var head: [UInt8] = []
        var byte: UInt8 = 0
        while !head.suffix(4).elementsEqual([13, 10, 13, 10]), recv(connection, &byte, 1, 0) == 1 { head.append(byte) }
        if let answer { _ = Array(answer.utf8).withUnsafeBytes { send(connection, $0.baseAddress, $0.count, 0) } }
        let line = head.prefix { $0 != 13 && $0 != 10 }
        return String(decoding: line, as: UTF8.self)
    }
}
