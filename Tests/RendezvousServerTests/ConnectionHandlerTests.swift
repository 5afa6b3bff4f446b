import Logging
import NIOCore
import NIOEmbedded
import NIOWebSocket
import ParleyProtocol
import RendezvousWire
import Sodium
import Testing

@testable import RendezvousServer

/// The connection handler on `EmbeddedChannel`s sharing one `EmbeddedEventLoop`: the protocol
/// state machine, limits and timers, with a fake clock and no sockets.
@Suite("Rendezvous connection handler (EmbeddedChannel)")
struct ConnectionHandlerTests {
    final class Harness {
        let loop = EmbeddedEventLoop()
        let state: ServerState
        let room = Ed25519.KeyPair.generate()

        init(_ adjust: (inout RendezvousServerConfiguration) -> Void = { _ in }) {
            var configuration = RendezvousServerConfiguration()
            adjust(&configuration)
            state = ServerState(
                configuration: configuration, loop: loop, logger: Logger(label: "test"), metrics: ServerMetrics(),
                unixTime: { 1_700_000_000 })
        }

        /// A connection right after the upgrade: returns the channel and the CHALLENGE nonce.
        func connect(from address: String = "192.0.2.1") throws -> (EmbeddedChannel, [UInt8]) {
            let channel = EmbeddedChannel(loop: loop)
            try channel.connect(to: SocketAddress(ipAddress: address, port: 40000)).wait()
            let handler = try #require(state.accept(channel))
            try channel.pipeline.syncOperations.addHandlers([ClientFrameCheck(), handler])
            guard case .challenge(let nonce) = try read(channel) else { throw TestFailure("no CHALLENGE first") }
            return (channel, nonce)
        }

        /// Connects and joins `room` (or the harness room); returns the channel and WELCOME.
        func join(
            _ key: Ed25519.KeyPair? = nil, from address: String = "192.0.2.1"
        ) throws -> (EmbeddedChannel, RendezvousWelcome) {
            let key = key ?? room
            let (channel, nonce) = try connect(from: address)
            try write(channel, .join(roomID: key.publicKey, proof: JoinProof.make(nonce: nonce, roomKey: key)))
            guard case .welcome(let welcome) = try read(channel) else { throw TestFailure("no WELCOME") }
            return (channel, welcome)
        }

        func write(_ channel: EmbeddedChannel, _ message: RendezvousMessage) throws {
            try writeFrame(channel, .binary, message.encoded())
        }

        func writeFrame(
            _ channel: EmbeddedChannel, _ opcode: WebSocketOpcode, _ bytes: [UInt8], masked: Bool = true
        ) throws {
            var data = ByteBuffer(bytes: bytes)
            let key: WebSocketMaskingKey? = masked ? .random() : nil
            if let key { data.webSocketMask(key) }
            try channel.writeInbound(WebSocketFrame(fin: true, opcode: opcode, maskKey: key, data: data))
        }

        /// The next Parley message the server wrote (skipping pings), or nil if none.
        func read(_ channel: EmbeddedChannel) throws -> RendezvousMessage? {
            while let frame = try channel.readOutbound(as: WebSocketFrame.self) {
                guard frame.opcode == .binary else { continue }
                return try frame.data.withUnsafeReadableBytes { try RendezvousMessage.parse($0) }
            }
            return nil
        }

        func nextFrame(_ channel: EmbeddedChannel) throws -> WebSocketFrame? {
            try channel.readOutbound(as: WebSocketFrame.self)
        }

        /// Expects ERROR `code`, then a Close frame, and the connection closing.
        func expectError(
            _ channel: EmbeddedChannel, _ code: RendezvousErrorCode, sourceLocation: SourceLocation = #_sourceLocation
        ) throws {
            let message = try read(channel)
            guard case .error(let error) = message else {
                Issue.record(
                    "expected ERROR \(code.name), got \(String(describing: message))", sourceLocation: sourceLocation)
                return
            }
            #expect(error.code == code, "reason: \(error.reason)", sourceLocation: sourceLocation)
            #expect(try nextFrame(channel)?.opcode == .connectionClose, sourceLocation: sourceLocation)
            loop.advanceTime(by: .seconds(2))
            #expect(!channel.isActive, "closed after the ERROR", sourceLocation: sourceLocation)
        }
    }

    struct TestFailure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    @Test func validProofIsWelcomedWithTheOthersListed() throws {
        let harness = Harness()
        let (first, firstWelcome) = try harness.join()
        #expect(firstWelcome.members.isEmpty)
        let (_, secondWelcome) = try harness.join(from: "198.51.100.1")
        #expect(secondWelcome.members == [firstWelcome.memberID])
        #expect(try harness.read(first) == .memberJoined(secondWelcome.memberID))
        #expect(harness.state.rooms.roomCount == 1)
    }

    @Test func badProofAndUnknownRoomGetTheSameAnswer() throws {
        let harness = Harness()
        _ = try harness.join()  // the harness room exists
        for roomID in [harness.room.publicKey, Ed25519.KeyPair.generate().publicKey] {
            let (channel, nonce) = try harness.connect()
            // Signed by the wrong key: the proof does not verify, whether or not the room exists.
            let proof = JoinProof.make(nonce: nonce, roomKey: Ed25519.KeyPair.generate())
            try harness.write(channel, .join(roomID: roomID, proof: proof))
            try harness.expectError(channel, .badProof)
        }
    }

    @Test func proofForAnotherNonceIsRejected() throws {
        let harness = Harness()
        let (channel, _) = try harness.connect()
        let stale = JoinProof.make(nonce: RandomBytes.bytes(count: 32), roomKey: harness.room)
        try harness.write(channel, .join(roomID: harness.room.publicKey, proof: stale))
        try harness.expectError(channel, .badProof)
    }

    @Test func relaysToOneAndToAllButNeverBackOrOutside() throws {
        let harness = Harness()
        let (a, aWelcome) = try harness.join()
        let (b, bWelcome) = try harness.join()
        let (c, cWelcome) = try harness.join()
        let (outsider, _) = try harness.join(Ed25519.KeyPair.generate())
        for channel in [a, b] { while try harness.read(channel) != nil {} }  // MEMBER_JOINED noise

        try harness.write(a, .send(to: bWelcome.memberID, payload: [1, 2, 3]))
        #expect(try harness.read(b) == .deliver(from: aWelcome.memberID, payload: [1, 2, 3]))
        #expect(try harness.read(c) == nil)
        #expect(try harness.read(a) == nil)

        try harness.write(c, .send(to: RendezvousMessage.everyone, payload: [9]))
        #expect(try harness.read(a) == .deliver(from: cWelcome.memberID, payload: [9]))
        #expect(try harness.read(b) == .deliver(from: cWelcome.memberID, payload: [9]))
        #expect(try harness.read(c) == nil, "not echoed to the sender")
        #expect(try harness.read(outsider) == nil, "not delivered outside the room")

        try harness.write(a, .send(to: aWelcome.memberID &+ bWelcome.memberID &+ cWelcome.memberID, payload: [0]))
        try harness.write(a, .send(to: aWelcome.memberID, payload: [0]))
        for channel in [a, b, c] { #expect(try harness.read(channel) == nil, "unknown and own ids are dropped") }
        #expect(a.isActive)
    }

    @Test func leavingIsAnnouncedAndEmptyRoomsVanish() throws {
        let harness = Harness()
        let (a, _) = try harness.join()
        let (b, bWelcome) = try harness.join()
        _ = try harness.read(a)
        try b.close().wait()
        harness.loop.run()
        #expect(try harness.read(a) == .memberLeft(bWelcome.memberID))
        try a.close().wait()
        harness.loop.run()
        #expect(harness.state.rooms.roomCount == 0)
        #expect(harness.state.connectionCount == 0)
    }

    @Test func roomFull() throws {
        let harness = Harness { $0.limits.membersPerRoom = 2 }
        _ = try harness.join()
        _ = try harness.join()
        let (third, nonce) = try harness.connect()
        try harness.write(
            third, .join(roomID: harness.room.publicKey, proof: JoinProof.make(nonce: nonce, roomKey: harness.room)))
        try harness.expectError(third, .roomFull)
    }

    struct Misbehaviour: Sendable, CustomTestStringConvertible {
        let name: String
        let admitted: Bool
        let opcode: WebSocketOpcode
        let bytes: [UInt8]
        var masked = true
        var testDescription: String { name }
    }

    static let misbehaviours: [Misbehaviour] = [
        Misbehaviour(
            name: "SEND before JOIN", admitted: false, opcode: .binary,
            bytes: RendezvousMessage.send(to: 0, payload: []).encoded()),
        Misbehaviour(
            name: "second JOIN", admitted: true, opcode: .binary,
            bytes: RendezvousMessage.join(
                roomID: [UInt8](repeating: 0, count: 32), proof: [UInt8](repeating: 0, count: 64)
            ).encoded()),
        Misbehaviour(
            name: "server message from a client", admitted: true, opcode: .binary,
            bytes: RendezvousMessage.goingAway(retryAfterMilliseconds: 1).encoded()),
        Misbehaviour(name: "unknown type", admitted: true, opcode: .binary, bytes: [0x7F, 1, 2]),
        Misbehaviour(name: "empty message", admitted: false, opcode: .binary, bytes: []),
        Misbehaviour(name: "truncated JOIN", admitted: false, opcode: .binary, bytes: [0x02, 1, 2, 3]),
        Misbehaviour(name: "text message", admitted: true, opcode: .text, bytes: Array("hello".utf8)),
        Misbehaviour(
            name: "unmasked frame", admitted: true, opcode: .binary,
            bytes: RendezvousMessage.send(to: 0, payload: []).encoded(), masked: false),
    ]

    @Test(arguments: misbehaviours)
    func malformedInputIsAnsweredWithMalformed(_ row: Misbehaviour) throws {
        let harness = Harness()
        let channel: EmbeddedChannel = row.admitted ? try harness.join().0 : try harness.connect().0
        try harness.writeFrame(channel, row.opcode, row.bytes, masked: row.masked)
        try harness.expectError(channel, .malformed)
    }

    @Test func frameTooLargeIsAnsweredWithTooLarge() throws {
        let harness = Harness()
        let (channel, _) = try harness.join()
        channel.pipeline.fireErrorCaught(NIOWebSocketError.invalidFrameLength)
        try harness.expectError(channel, .tooLarge)
    }

    @Test func rateLimitClosesAfterTheBurst() throws {
        let harness = Harness {
            $0.limits.messagesPerSecond = 1
            $0.limits.messageBurst = 3
        }
        let (channel, _) = try harness.join()  // JOIN took one token
        try harness.write(channel, .send(to: 0, payload: []))
        try harness.write(channel, .send(to: 0, payload: []))
        #expect(channel.isActive)
        try harness.write(channel, .send(to: 0, payload: []))
        try harness.expectError(channel, .rateLimited)
    }

    @Test func rateRefillsWithTime() throws {
        let harness = Harness {
            $0.limits.messagesPerSecond = 10
            $0.limits.messageBurst = 2
        }
        let (channel, _) = try harness.join()
        for _ in 0..<20 {
            harness.loop.advanceTime(by: .milliseconds(100))
            try harness.write(channel, .send(to: 0, payload: []))
        }
        #expect(channel.isActive, "10 messages/s are within the limit")
    }

    @Test func tooManyConnectionsFromOneAddress() throws {
        let harness = Harness { $0.limits.connectionsPerAddress = 2 }
        _ = try harness.connect(from: "192.0.2.1")
        _ = try harness.connect(from: "192.0.2.1")
        _ = try harness.connect(from: "192.0.2.2")
        let channel = EmbeddedChannel(loop: harness.loop)
        try channel.connect(to: SocketAddress(ipAddress: "192.0.2.1", port: 1)).wait()
        let handler = try #require(harness.state.accept(channel))
        try channel.pipeline.syncOperations.addHandler(handler)
        try harness.expectError(channel, .tooManyConnections)
    }

    @Test func ipv6CountsPerSlash64() throws {
        let harness = Harness { $0.limits.connectionsPerAddress = 1 }
        _ = try harness.connect(from: "2001:db8:1:2::1")
        _ = try harness.connect(from: "2001:db8:1:3::1")  // another /64: fine
        let channel = EmbeddedChannel(loop: harness.loop)
        try channel.connect(to: SocketAddress(ipAddress: "2001:db8:1:2::ffff", port: 1)).wait()
        try channel.pipeline.syncOperations.addHandler(try #require(harness.state.accept(channel)))
        try harness.expectError(channel, .tooManyConnections)
    }

    @Test func tooManyRoomsFromOneAddress() throws {
        let harness = Harness { $0.limits.roomsPerAddress = 1 }
        _ = try harness.join()
        let other = Ed25519.KeyPair.generate()
        let (channel, nonce) = try harness.connect()
        try harness.write(channel, .join(roomID: other.publicKey, proof: JoinProof.make(nonce: nonce, roomKey: other)))
        try harness.expectError(channel, .tooManyConnections)
    }

    @Test func noJoinWithinTheHandshakeTimeout() throws {
        let harness = Harness { $0.limits.handshakeTimeout = .seconds(5) }
        let (channel, _) = try harness.connect()
        harness.loop.advanceTime(by: .seconds(4))
        #expect(channel.isActive)
        harness.loop.advanceTime(by: .seconds(1))
        try harness.expectError(channel, .timeout)
    }

    @Test func handshakeTimeoutAlsoCoversTheTimeBeforeTheUpgrade() throws {
        let harness = Harness { $0.limits.handshakeTimeout = .seconds(5) }
        let channel = EmbeddedChannel(loop: harness.loop)
        try channel.connect(to: SocketAddress(ipAddress: "192.0.2.1", port: 1)).wait()
        _ = try #require(harness.state.accept(channel))  // accepted, never upgraded (slowloris)
        harness.loop.advanceTime(by: .seconds(5))
        #expect(!channel.isActive)
        #expect(harness.state.connectionCount == 0)
    }

    @Test func pingsAndDropsAClientThatStopsAnswering() throws {
        let harness = Harness {
            $0.limits.pingInterval = .seconds(10)
            $0.limits.idleTimeout = .seconds(25)
        }
        let (channel, _) = try harness.join()
        harness.loop.advanceTime(by: .seconds(10))
        #expect(try harness.nextFrame(channel)?.opcode == .ping)
        try harness.writeFrame(channel, .pong, [])  // answered: alive
        harness.loop.advanceTime(by: .seconds(10))
        #expect(try harness.nextFrame(channel)?.opcode == .ping)
        harness.loop.advanceTime(by: .seconds(10))  // 20 s silent: still within 25
        #expect(try harness.nextFrame(channel)?.opcode == .ping)
        harness.loop.advanceTime(by: .seconds(10))  // 30 s silent
        try harness.expectError(channel, .timeout)
    }

    @Test func answersPings() throws {
        let harness = Harness()
        let (channel, _) = try harness.join()
        try harness.writeFrame(channel, .ping, [7, 7])
        let pong = try #require(try harness.nextFrame(channel))
        #expect(pong.opcode == .pong && Array(pong.data.readableBytesView) == [7, 7])
    }

    @Test func slowReaderIsDropped() throws {
        let harness = Harness()
        let (channel, _) = try harness.join()
        let handler = try channel.pipeline.syncOperations.handler(type: RendezvousConnectionHandler.self)
        handler.channelWritabilityChanged(context: try channel.pipeline.syncOperations.context(handler: handler))
        #expect(channel.isWritable, "still writable: nothing happens")
        #expect(channel.isActive)
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        harness.loop.run()
        #expect(!channel.isActive)
        #expect(harness.state.rooms.roomCount == 0)
    }

    @Test func goingAwayOnShutdown() throws {
        let harness = Harness { $0.limits.goingAwayRetry = .milliseconds(1500) }
        let (channel, _) = try harness.join()
        harness.state.goAway()
        #expect(try harness.read(channel) == .goingAway(retryAfterMilliseconds: 1500))
        #expect(try harness.nextFrame(channel)?.opcode == .connectionClose)
        #expect(harness.state.accept(EmbeddedChannel(loop: harness.loop)) == nil, "no new connections")
    }

    @Test func welcomeOffersStunAndFreshTurnCredentials() throws {
        let harness = Harness {
            $0.stunAdvertise = "stun.example.org:3478"
            $0.turn = .init(secret: Array("s".utf8), urls: ["turn:t:3478"], ttlSeconds: 60)
        }
        let (_, welcome) = try harness.join()
        #expect(welcome.services.count == 2)
        #expect(welcome.services.first == .stun("stun.example.org:3478"))
        guard case .turn(let credential) = welcome.services.last else { Issue.record("no TURN"); return }
        #expect(credential.username.hasPrefix("1700000060:"))
        #expect(credential.url == "turn:t:3478")
    }

    @Test func metricsCountRejectionsByReason() throws {
        let harness = Harness()
        let (channel, _) = try harness.connect()
        try harness.writeFrame(channel, .text, [])
        let text = String(decoding: harness.state.metrics.render(), as: UTF8.self)
        #expect(text.contains(#"parley_rendezvous_rejections_total{reason="malformed"} 1"#))
        #expect(text.contains("parley_rendezvous_connections 1"))
    }
}
