import Logging
import NIOCore
import NIOPosix
import ParleyProtocol
import ParleyTestSupport
import RendezvousClient
import RendezvousServer
import RendezvousWire
import ServiceLifecycle
import ServiceLifecycleTestKit
import Sodium
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The real server on a loopback port, with the real client and a raw WebSocket where a test must
/// misbehave. Serialized: timing-sensitive limits should not compete with each other for 2 cores.
@Suite("Rendezvous live (server + client on loopback)", .serialized)
struct LiveServerTests {
    @Test func membersJoinRelayAndSeeEachOtherComeAndGo() async throws {
        try await withServer { _, addresses in
            let room = Ed25519.KeyPair.generate()
            let a = try TestMember(url: addresses.url, room: room)
            let aWelcome = try await a.joined()
            #expect(aWelcome.members.isEmpty)
            let b = try TestMember(url: addresses.url, room: room)
            let bWelcome = try await b.joined()
            #expect(bWelcome.members == [aWelcome.memberID])
            #expect(
                try await a.next("B joined") { if case .memberJoined(let id) = $0 { id } else { nil } }
                    == bWelcome.memberID)
            let c = try TestMember(url: addresses.url, room: room)
            let cWelcome = try await c.joined()
            #expect(Set(cWelcome.members) == [aWelcome.memberID, bWelcome.memberID])

            // To one.
            try await a.client.send(to: .member(bWelcome.memberID), payload: [1, 2, 3])
            let toB = try await b.next("A's payload") {
                if case .delivered(let from, let payload) = $0 { [from: payload] } else { nil }
            }
            #expect(toB == [aWelcome.memberID: [1, 2, 3]])
            // To all.
            try await c.client.send(to: .everyone, payload: Array("hello".utf8))
            for member in [a, b] {
                let got = try await member.next("C's broadcast") {
                    if case .delivered(let from, let payload) = $0 { [from: payload] } else { nil }
                }
                #expect(got == [cWelcome.memberID: Array("hello".utf8)])
            }
            // Leaving is announced.
            await b.stop()
            for member in [a, c] {
                #expect(
                    try await member.next("B left") { if case .memberLeft(let id) = $0 { id } else { nil } }
                        == bWelcome.memberID)
            }
            await a.stop()
            await c.stop()
        }
    }

    @Test func sendingBeforeJoiningFailsClearly() async throws {
        let client = RendezvousClient(
            configuration: .init(url: try RendezvousURL(parsing: "ws://127.0.0.1:9/")), roomKey: .generate())
        await #expect(throws: RendezvousClientError.notConnected) { try await client.send(to: .everyone, payload: [1]) }
    }

    @Test func badProofIsRefusedAlikeForExistingAndUnknownRooms() async throws {
        try await withServer { _, addresses in
            let room = Ed25519.KeyPair.generate()
            let member = try TestMember(url: addresses.url, room: room)
            _ = try await member.joined()
            for roomID in [room.publicKey, Ed25519.KeyPair.generate().publicKey] {
                let socket = try await rawConnect(addresses)
                let code = try await RawWebSocket.run { () -> RendezvousErrorCode? in
                    guard case .challenge(let nonce) = try socket.readMessage() else { return nil }
                    let wrong = JoinProof.make(nonce: nonce, roomKey: .generate())
                    try socket.send(.join(roomID: roomID, proof: wrong))
                    guard case .error(let error) = try socket.readMessage() else { return nil }
                    #expect(error.reason == "the join proof does not verify")
                    return socket.waitForEnd() ? error.code : nil
                }
                #expect(code == .badProof)
            }
            await member.stop()
        }
    }

    @Test func fullRoomStopsTheClientWithTheReason() async throws {
        try await withServer({ $0.limits.membersPerRoom = 2 }) { _, addresses in
            let room = Ed25519.KeyPair.generate()
            let a = try TestMember(url: addresses.url, room: room)
            let b = try TestMember(url: addresses.url, room: room)
            _ = try await a.joined()
            _ = try await b.joined()
            let c = try TestMember(url: addresses.url, room: room)
            guard case .failure(let error) = try await c.outcome() else {
                Issue.record("third member admitted"); return
            }
            guard case .rejected(let refusal) = error as? RendezvousClientError else {
                Issue.record("\(error)"); return
            }
            #expect(refusal.code == .roomFull)
            #expect("\(error)".contains("room is full"))
            await a.stop()
            await b.stop()
        }
    }

    @Test func oversizedMessagesAreRefused() async throws {
        try await withServer { _, addresses in
            let room = Ed25519.KeyPair.generate()
            for fragmented in [false, true] {
                let socket = try await rawConnect(addresses)
                _ = try await rawJoin(socket, room: room)
                let big = RendezvousMessage.send(to: 0, payload: [UInt8](repeating: 7, count: 20_000)).encoded()
                try await RawWebSocket.run {
                    if fragmented {
                        try socket.sendFrame(opcode: 0x2, Array(big[..<10_000]), fin: false)
                        try socket.sendFrame(opcode: 0x0, Array(big[10_000...]))
                    } else {
                        try socket.sendFrame(opcode: 0x2, big)
                    }
                }
                #expect(try await rawError(socket) == .tooLarge, "fragmented: \(fragmented)")
            }
            // A message at the limit passes, fragmented or not (alone in a fresh room: nothing
            // but the Close answer comes back).
            let socket = try await rawConnect(addresses)
            _ = try await rawJoin(socket, room: .generate())
            let atLimit = RendezvousMessage.send(to: 0, payload: [UInt8](repeating: 1, count: 16_384 - 5)).encoded()
            try await RawWebSocket.run {
                try socket.sendFrame(opcode: 0x2, Array(atLimit[..<100]), fin: false)
                try socket.sendFrame(opcode: 0x0, Array(atLimit[100...]))
                try socket.sendFrame(opcode: 0x2, atLimit)
                try socket.sendFrame(opcode: 0x8, [0x03, 0xE8])  // Close: the server answers Close
            }
            let afterClose = try await RawWebSocket.run { try socket.readFrame() }
            #expect(afterClose?.opcode == 0x8)
        }
    }

    struct Garbage: Sendable, CustomTestStringConvertible {
        let name: String
        let bytes: [UInt8]
        let expected: RendezvousErrorCode?
        var testDescription: String { name }
    }

    static let garbage: [Garbage] = [
        Garbage(name: "reserved opcode", bytes: RawWebSocket.frame(opcode: 0x3, [1, 2]), expected: .malformed),
        Garbage(name: "text frame", bytes: RawWebSocket.frame(opcode: 0x1, Array("hi".utf8)), expected: .malformed),
        Garbage(
            name: "unmasked frame", bytes: RawWebSocket.frame(opcode: 0x2, [2], masked: false), expected: .malformed),
        Garbage(name: "RSV bit set", bytes: [0xC2, 0x80, 0, 0, 0, 0], expected: .malformed),
        Garbage(name: "fragmented ping", bytes: RawWebSocket.frame(opcode: 0x9, [], fin: false), expected: .malformed),
        Garbage(name: "continuation first", bytes: RawWebSocket.frame(opcode: 0x0, [1]), expected: .malformed),
        Garbage(name: "unknown message type", bytes: RawWebSocket.frame(opcode: 0x2, [0x42]), expected: .malformed),
        Garbage(name: "JOIN cut short", bytes: RawWebSocket.frame(opcode: 0x2, [0x02, 0, 0]), expected: .malformed),
        Garbage(
            name: "frame claiming 2^40 bytes", bytes: [0x82, 0xFF, 0, 0, 0x01, 0, 0, 0, 0, 0, 1, 2, 3, 4],
            expected: .tooLarge),
    ]

    @Test(arguments: garbage)
    func malformedFramesGetAClearCloseAndTheServerCarriesOn(_ row: Garbage) async throws {
        try await withServer { _, addresses in
            let socket = try await rawConnect(addresses)
            try await RawWebSocket.run {
                _ = try socket.readMessage()  // CHALLENGE
                try socket.send(row.bytes)
            }
            #expect(try await rawError(socket) == row.expected)
            #expect(try await RawWebSocket.run { socket.waitForEnd() })
            // Still serving.
            let member = try TestMember(url: addresses.url, room: .generate())
            _ = try await member.joined()
            await member.stop()
        }
    }

    @Test func randomGarbageNeverCrashesTheServer() async throws {
        try await withServer { _, addresses in
            var generator = SystemRandomNumberGenerator()
            for round in 0..<40 {
                let socket = try await rawConnect(addresses)
                let noise = (0..<Int.random(in: 1...300, using: &generator)).map { _ in
                    UInt8.random(in: 0...255, using: &generator)
                }
                let afterJoin = round % 2 == 0
                let room = Ed25519.KeyPair.generate()
                if afterJoin { _ = try await rawJoin(socket, room: room) }
                try await RawWebSocket.run { try socket.send(noise) }
            }
            let member = try TestMember(url: addresses.url, room: .generate())
            _ = try await member.joined()
            await member.stop()
        }
    }

    @Test func rateLimitIsEnforced() async throws {
        try await withServer({
            $0.limits.messagesPerSecond = 1
            $0.limits.messageBurst = 5
        }) { _, addresses in
            let socket = try await rawConnect(addresses)
            _ = try await rawJoin(socket, room: .generate())  // JOIN: 1 token
            try await RawWebSocket.run {
                for _ in 0..<6 { try socket.send(.send(to: 0, payload: [1])) }
            }
            #expect(try await rawError(socket) == .rateLimited)
        }
    }

    @Test func connectionsPerAddressAreLimited() async throws {
        try await withServer({ $0.limits.connectionsPerAddress = 2 }) { _, addresses in
            let first = try await rawConnect(addresses)
            let second = try await rawConnect(addresses)
            let third = try await rawConnect(addresses)
            #expect(try await rawError(third) == .tooManyConnections)
            _ = (first, second)
        }
    }

    @Test func roomsPerAddressAreLimited() async throws {
        try await withServer({ $0.limits.roomsPerAddress = 1 }) { _, addresses in
            let first = try await rawConnect(addresses)
            _ = try await rawJoin(first, room: .generate())
            let second = try await rawConnect(addresses)
            let code = try await RawWebSocket.run { () -> RendezvousErrorCode? in
                guard case .challenge(let nonce) = try second.readMessage() else { return nil }
                let other = Ed25519.KeyPair.generate()
                try second.send(.join(roomID: other.publicKey, proof: JoinProof.make(nonce: nonce, roomKey: other)))
                guard case .error(let error) = try second.readMessage() else { return nil }
                return error.code
            }
            #expect(code == .tooManyConnections)
        }
    }

    @Test func slowReaderIsDroppedInsteadOfQueueing() async throws {
        try await withServer({
            $0.limits.outboundQueueBytes = 64 * 1024
            $0.limits.messagesPerSecond = 100_000
            $0.limits.messageBurst = 100_000
            $0.metricsListen = .init(host: "127.0.0.1", port: 0)
        }) { _, addresses in
            let room = Ed25519.KeyPair.generate()
            // A member that never reads, with a small receive window.
            let sleeper = try await rawConnect(addresses, receiveBufferBytes: 4096)
            let sleeperWelcome = try await rawJoin(sleeper, room: room)
            let sender = try await rawConnect(addresses)
            _ = try await rawJoin(sender, room: room)
            // Kernel buffers absorb a few MB first; 4096 × 16 kB = 64 MB is far more than they hold.
            let frame = RawWebSocket.frame(
                opcode: 0x2,
                RendezvousMessage.send(to: sleeperWelcome.memberID, payload: [UInt8](repeating: 0x55, count: 16_000))
                    .encoded())
            let left = try await RawWebSocket.run { () -> RendezvousMessage? in
                for _ in 0..<4096 {
                    try sender.send(frame)
                    _ = sender.absorbAvailable()
                    if sender.hasBufferedFrame { return try sender.readMessage() }
                }
                return nil
            }
            #expect(left == .memberLeft(sleeperWelcome.memberID))
            let metrics = try await scrape(addresses)
            #expect(metrics.contains(#"parley_rendezvous_rejections_total{reason="slow-reader"} 1"#))
        }
    }

    @Test func silentHandshakeIsCutOff() async throws {
        try await withServer({ $0.limits.handshakeTimeout = .milliseconds(500) }) { _, addresses in
            // Slowloris: TCP only, not even the HTTP request.
            let ended = try await RawWebSocket.run {
                let socket = try RawWebSocket(port: addresses.rendezvous.port, receiveTimeoutSeconds: 10)
                return socket.waitForEnd()
            }
            #expect(ended)
            // Upgraded, but no JOIN.
            let socket = try await rawConnect(addresses)
            #expect(try await rawError(socket) == .timeout)
        }
    }

    @Test func clientThatStopsAnsweringPingsIsDropped() async throws {
        try await withServer({
            $0.limits.pingInterval = .milliseconds(100)
            $0.limits.idleTimeout = .milliseconds(400)
        }) { _, addresses in
            let socket = try await rawConnect(addresses)
            _ = try await rawJoin(socket, room: .generate())
            #expect(try await rawError(socket) == .timeout)  // pings were skipped, never answered
            // The real client answers pings and stays: let 2.5 idle timeouts pass (time passing is
            // the point here, not waiting for an event), then it still relays.
            let room = Ed25519.KeyPair.generate()
            let a = try TestMember(url: addresses.url, room: room)
            _ = try await a.joined()
            let b = try TestMember(url: addresses.url, room: room)
            let bWelcome = try await b.joined()
            try await Task.sleep(for: .milliseconds(1000))
            try await a.client.send(to: .member(bWelcome.memberID), payload: [42])
            _ = try await b.next("payload after idle time") { if case .delivered(_, [42]) = $0 { true } else { nil } }
            #expect(!a.has { if case .disconnected = $0 { true } else { false } })
            await a.stop()
            await b.stop()
        }
    }
}

/// GET /metrics from the server's metrics listener.
func scrape(_ addresses: RendezvousServer.BoundAddresses) async throws -> String {
    let port = try #require(addresses.metrics?.port)
    return try await RawWebSocket.run {
        let socket = try RawWebSocket(port: port)
        try socket.send(Array("GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8))
        return String(decoding: socket.readAll(), as: UTF8.self)
    }
}
