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

/// Shutdown and restart, TLS with a pinned key, the STUN responder, metrics, and version
/// negotiation, against the real server on loopback.
@Suite("Rendezvous live lifecycle, TLS, STUN, metrics", .serialized)
struct LiveLifecycleTests {
    static let fixtures: String = {
        var path = "\(#filePath)".split(separator: "/", omittingEmptySubsequences: false)
        path.removeLast(2)
        return path.joined(separator: "/") + "/Fixtures/rendezvous"
    }()

    @Test func clientsReconnectAfterARestart() async throws {
        var configuration = RendezvousServerConfiguration()
        configuration.listen = .init(host: "127.0.0.1", port: 0)
        configuration.limits.goingAwayRetry = .milliseconds(100)
        let first = RendezvousServer(configuration: configuration, logger: quietLogger)
        let addresses = try await first.start()
        let room = Ed25519.KeyPair.generate()
        let a = try TestMember(url: addresses.url, room: room)
        let b = try TestMember(url: addresses.url, room: room)
        let aBefore = try await a.joined()
        _ = try await b.joined()

        await first.shutdown()  // GOING_AWAY to both
        let retry = try await a.next("GOING_AWAY") {
            if case .disconnected(let reason, let retry) = $0 { (reason, retry) } else { nil }
        }
        #expect(retry.0.contains("going away"))
        #expect(retry.1 >= .milliseconds(100) && retry.1 <= .milliseconds(200), "hint plus up to the hint again")

        // The same address again, as after a restart. Port 0 gave a port in the kernel's ephemeral
        // range, so while nothing listens there a client's reconnect attempt can be given that very
        // port as its source and connect to itself (TCP simultaneous open); the port is free again
        // once the client gives up on that connection. Real deployments listen below the range.
        configuration.listen = addresses.rendezvous
        let second = RendezvousServer(configuration: configuration, logger: quietLogger)
        try await waitUntil(.seconds(10), "the old port to be free again", interval: .milliseconds(50)) {
            do {
                try await second.start()
                return true
            } catch let error as IOError where error.errnoCode == EADDRINUSE {
                return false
            }
        }
        let aAfter = try await a.joined(reconnected: true)
        let bAfter = try await b.joined(reconnected: true)
        #expect(aAfter.memberID != 0 && bAfter.memberID != 0)
        // The node re-announces itself with its new id; relaying works again.
        try await a.client.send(to: .everyone, payload: [5])
        _ = try await b.next("relay after restart") {
            if case .delivered(aAfter.memberID, [5]) = $0 { true } else { nil }
        }
        _ = aBefore
        await a.stop()
        await b.stop()
        await second.shutdown()
    }

    @Test func gracefulShutdownOfTheServiceSendsGoingAway() async throws {
        var configuration = RendezvousServerConfiguration()
        configuration.listen = .init(host: "127.0.0.1", port: 0)
        configuration.limits.goingAwayRetry = .milliseconds(2500)
        let server = RendezvousServer(configuration: configuration, logger: quietLogger)
        try await testGracefulShutdown { trigger in
            let addresses = try await server.start()
            let running = Task { try await server.run() }
            let socket = try await rawConnect(addresses)
            _ = try await rawJoin(socket, room: .generate())
            trigger.triggerGracefulShutdown()
            let message = try await RawWebSocket.run { try socket.readMessage() }
            #expect(message == .goingAway(retryAfterMilliseconds: 2500))
            #expect(try await RawWebSocket.run { socket.waitForEnd() })
            try await withTimeout(.seconds(10), "run() to return") { try await running.value }
            #expect(server.addresses == nil)
        }
    }

    @Test func pinnedTLSConnectsAndAWrongPinIsRefused() async throws {
        let pin = try SPKIPin.ofCertificate(pemFile: Self.fixtures + "/test-cert.pem")
        #expect(
            pin.map { String($0, radix: 16).leftPadded(2) }.joined()
                == "83cde2488332ae42f14460f5812183ef2e34a023ce992a03c518575ddfa10a44")
        try await withServer({
            $0.tls = .init(
                certificateChainPath: Self.fixtures + "/test-cert.pem", privateKeyPath: Self.fixtures + "/test-key.pem")
        }) { _, addresses in
            #expect(addresses.url.hasPrefix("wss://"))
            let room = Ed25519.KeyPair.generate()
            let a = try TestMember(url: addresses.url, room: room, pin: pin)
            let b = try TestMember(url: addresses.url, room: room, pin: pin)
            _ = try await a.joined()
            let bWelcome = try await b.joined()
            try await a.client.send(to: .member(bWelcome.memberID), payload: [1])
            _ = try await b.next("payload over TLS") { if case .delivered(_, [1]) = $0 { true } else { nil } }

            var wrong = pin
            wrong[0] ^= 1
            let impostor = try TestMember(url: addresses.url, room: room, pin: wrong)
            guard case .failure(let error) = try await impostor.outcome() else {
                Issue.record("wrong pin accepted"); return
            }
            #expect(error as? RendezvousClientError == .certificatePinMismatch)
            await a.stop()
            await b.stop()
        }
    }

    /// §4.1: with a pin, the key alone decides. The certificate names rv.example.org (no
    /// SubjectAltName) and the client connects to wss://127.0.0.1: it must join all the same, and
    /// still refuse a wrong pin.
    @Test func pinnedTLSDoesNotCheckTheHostName() async throws {
        let pin = try SPKIPin.ofCertificate(pemFile: Self.fixtures + "/other-host-cert.pem")
        try await withServer({
            $0.tls = .init(
                certificateChainPath: Self.fixtures + "/other-host-cert.pem",
                privateKeyPath: Self.fixtures + "/other-host-key.pem")
        }) { _, addresses in
            #expect(addresses.url.hasPrefix("wss://127.0.0.1:"))
            let room = Ed25519.KeyPair.generate()
            let member = try TestMember(url: addresses.url, room: room, pin: pin)
            _ = try await member.joined()
            await member.stop()
            var wrong = pin
            wrong[31] ^= 0x80
            let impostor = try TestMember(url: addresses.url, room: room, pin: wrong)
            guard case .failure(let error) = try await impostor.outcome() else {
                Issue.record("wrong pin accepted"); return
            }
            #expect(error as? RendezvousClientError == .certificatePinMismatch)
        }
    }

    /// The certificate `parleyd --host` makes for itself: the real server serves it, and a client
    /// holding its pin joins (a wrong pin still fails).
    @Test func aSelfSignedCertificateServesPinnedClients() async throws {
        let directory = "/tmp/parley-selfsigned-\(UInt32.random(in: 0...UInt32.max))"
        #expect(mkdir(directory, 0o700) == 0)
        defer {
            for file in ["cert.pem", "key.pem"] { unlink("\(directory)/\(file)") }
            rmdir(directory)
        }
        let pem = SelfSignedCertificate.make(commonName: "parleyd")
        for (file, text) in [("cert.pem", pem.certificate), ("key.pem", pem.privateKey)] {
            let descriptor = open("\(directory)/\(file)", O_WRONLY | O_CREAT | O_EXCL, 0o600)
            #expect(descriptor >= 0)
            _ = Array(text.utf8).withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
            close(descriptor)
        }
        #expect(pem.certificate.hasPrefix("-----BEGIN CERTIFICATE-----\n"))
        #expect(pem.privateKey.hasPrefix("-----BEGIN PRIVATE KEY-----\n"))
        let pin = try SPKIPin.ofCertificate(pemFile: "\(directory)/cert.pem")
        try await withServer({
            $0.tls = .init(certificateChainPath: "\(directory)/cert.pem", privateKeyPath: "\(directory)/key.pem")
        }) { _, addresses in
            let member = try TestMember(url: addresses.url, room: .generate(), pin: pin)
            _ = try await member.joined()
            await member.stop()
        }
        #expect(SelfSignedCertificate.make().certificate != pem.certificate, "a fresh key every time")
    }

    /// ERROR rate-limited (§4.4) is not a refusal: the client backs off and comes back, and a
    /// connection that was throttled again does not reset the back-off.
    @Test func aRateLimitedClientBacksOffAndComesBack() async throws {
        try await withServer({
            $0.limits.messagesPerSecond = 1
            $0.limits.messageBurst = 4
        }) { _, addresses in
            let member = try TestMember(url: addresses.url, room: .generate())
            var waits: [Duration] = []
            for round in 0..<2 {
                _ = try await member.joined(reconnected: round > 0)
                for _ in 0..<8 { try? await member.client.send(to: .everyone, payload: [1]) }
                let (reason, retryIn) = try await member.next("rate-limited") {
                    if case .disconnected(let reason, let retryIn) = $0 { (reason, retryIn) } else { nil }
                }
                #expect(reason.contains("rate-limited"), "\(reason)")
                waits.append(retryIn)
            }
            _ = try await member.joined(reconnected: true)
            // TestMember backs off from 50 ms: attempt 1 waits 50–100 ms, attempt 2 100–200 ms.
            #expect(waits[0] >= .milliseconds(50) && waits[0] <= .milliseconds(100), "\(waits)")
            #expect(waits[1] >= .milliseconds(100) && waits[1] <= .milliseconds(200), "\(waits)")
            await member.stop()
        }
    }

    @Test func stunResponderReportsTheSourceAddress() async throws {
        try await withServer({ $0.stunListen = .init(host: "127.0.0.1", port: 0) }) { _, addresses in
            let port = try #require(addresses.stun?.port)
            let (response, localPort) = try await RawWebSocket.run { try Self.stunRoundTrip(port: port) }
            let message = try STUNMessage.parse(response)
            #expect(message.type == 0x0101)
            let value = try #require(message.attribute(STUNAttribute.xorMappedAddress))
            let mapped = STUNBindingResponder.decodeXORMappedAddress(value, transactionID: message.transactionID)
            #expect(mapped == STUNTransportAddress(address: [127, 0, 0, 1], port: localPort))
            // WELCOME advertises it under the host the client used.
            let member = try TestMember(url: addresses.url, room: .generate())
            let welcome = try await member.joined()
            #expect(welcome.services == [.stun("127.0.0.1:\(port)")])
            await member.stop()
        }
    }

    /// One Binding request from a fresh UDP socket; returns the response and the socket's port.
    static func stunRoundTrip(port: Int) throws -> ([UInt8], UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let request = STUNMessage(type: 0x0001, transactionID: RandomBytes.bytes(count: 12)).encoded()
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, request, request.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        var buffer = [UInt8](repeating: 0, count: 1500)
        let received = recv(fd, &buffer, buffer.count, 0)
        guard received > 0 else { throw RawWebSocket.Failure(description: "no STUN response") }
        var local = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return (Array(buffer[0..<received]), UInt16(bigEndian: local.sin_port))
    }

    @Test func turnCredentialsGoOnlyToAdmittedMembers() async throws {
        try await withServer({
            $0.turn = .init(
                secret: Array("coturn-secret".utf8), urls: ["turn:127.0.0.1:3478?transport=udp"], ttlSeconds: 300)
        }) { _, addresses in
            // Before JOIN there is nothing but the CHALLENGE; a wrong proof gets only ERROR.
            let socket = try await rawConnect(addresses)
            let seen = try await RawWebSocket.run { () -> [RendezvousMessage] in
                var seen: [RendezvousMessage] = []
                guard let challenge = try socket.readMessage() else { return seen }
                seen.append(challenge)
                try socket.send(
                    .join(roomID: [UInt8](repeating: 1, count: 32), proof: [UInt8](repeating: 2, count: 64)))
                while let message = try socket.readMessage() { seen.append(message) }
                return seen
            }
            #expect(seen.count == 2)
            #expect(seen.last.map { if case .error(let e) = $0 { e.code == .badProof } else { false } } == true)
            let member = try TestMember(url: addresses.url, room: .generate())
            let welcome = try await member.joined()
            guard case .turn(let credential) = welcome.services.first else {
                Issue.record("no TURN credential"); return
            }
            let expiry = try #require(UInt64(credential.username.split(separator: ":").first ?? ""))
            let now = UInt64(time(nil))
            #expect(expiry >= now + 290 && expiry <= now + 310)
            #expect(credential.url == "turn:127.0.0.1:3478?transport=udp")
            await member.stop()
        }
    }

    @Test func metricsAreServedInPrometheusTextFormat() async throws {
        try await withServer({ $0.metricsListen = .init(host: "127.0.0.1", port: 0) }) { _, addresses in
            let room = Ed25519.KeyPair.generate()
            let a = try TestMember(url: addresses.url, room: room)
            let b = try TestMember(url: addresses.url, room: room)
            _ = try await a.joined()
            _ = try await b.joined()
            try await a.client.send(to: .everyone, payload: [1])
            _ = try await b.next("payload") { if case .delivered = $0 { true } else { nil } }
            let text = try await scrape(addresses)
            #expect(text.hasPrefix("HTTP/1.1 200 OK"))
            for line in [
                "parley_rendezvous_connections 2.0", "parley_rendezvous_members 2.0", "parley_rendezvous_rooms 1.0",
                "parley_rendezvous_messages_received_total 1", "parley_rendezvous_messages_relayed_total 1",
                "# TYPE parley_rendezvous_rejections_total counter", "parley_rendezvous_max_connections 50000.0",
                "parley_rendezvous_rejections_total{reason=\"misrouted\"} 0",
            ] {
                #expect(text.contains(line), "\(line)")
            }
            await a.stop()
            await b.stop()
        }
    }

    @Test func versionNegotiation() async throws {
        try await withServer({ $0.metricsListen = .init(host: "127.0.0.1", port: 0) }) { _, addresses in
            // A client offering only a future version gets HTTP 400.
            let status = try await RawWebSocket.run {
                try RawWebSocket(port: addresses.rendezvous.port).upgrade(protocols: "parley.v2")
            }
            #expect(status == 400)
            // Offering several, parley.v1 among them, is fine.
            let both = try await RawWebSocket.run {
                try RawWebSocket(port: addresses.rendezvous.port).upgrade(protocols: "parley.v2, parley.v1")
            }
            #expect(both == 101)
            // Our client against something that refuses the upgrade says so and gives up.
            let metricsPort = try #require(addresses.metrics?.port)
            let confused = try TestMember(url: "ws://127.0.0.1:\(metricsPort)/", room: .generate())
            guard case .failure(let error) = try await confused.outcome() else { Issue.record("no error"); return }
            #expect(error as? RendezvousClientError == .unsupportedVersion)
            #expect("\(error)" == "rendezvous does not speak Parley protocol v1")
        }
    }
}
