import CNice
import ICETestSupport
import ParleyTestSupport
import Synchronization
import Testing

@testable import ICE

#if canImport(Glibc)
import Glibc
#endif

@Suite("Direct receive: the consumer reads a ready stream's selected socket itself")
struct DirectReceiveTests {
    // MARK: Who reads

    /// A bound UDP GSocket on loopback, as libnice's host sockets are.
    static func loopbackSocket() throws -> UnsafeMutablePointer<GSocket> {
        let socket = try #require(
            g_socket_new(G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_DATAGRAM, G_SOCKET_PROTOCOL_UDP, nil))
        let address = g_inet_socket_address_new_from_string("127.0.0.1", 0)
        defer { g_object_unref(address) }
        try #require(
            g_socket_bind(
                socket, UnsafeMutableRawPointer(address)?.assumingMemoryBound(to: GSocketAddress.self), 1, nil) != 0)
        return socket
    }

    static func directSocket() throws -> DirectSocket {
        var storage = sockaddr_in()
        storage.sin_family = sa_family_t(AF_INET)
        storage.sin_port = UInt16(40_000).bigEndian
        storage.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let remote = try #require(withUnsafeBytes(of: &storage) { DatagramSource($0.baseAddress!) })
        let (_, sink) = AsyncStream.makeStream(of: [UInt8].self)
        let context = ReceiveContext(
            sink: sink, route: DatagramRoute(), counters: TrafficCounters(), ledger: CallbackLedger())
        return DirectSocket(socket: try loopbackSocket(), remote: remote, context: context)
    }

    @Test func oneSideReadsAtATimeAndOnlyTheLoopGivesTheSocketAway() throws {
        let socket = try Self.directSocket()
        #expect(socket.state == .loop)
        #expect(!socket.beginReading())  // not granted yet
        #expect(socket.grant())
        #expect(socket.beginReading())
        // While the consumer reads, the loop can neither take the socket back nor grant it again.
        #expect(!socket.takeBack())
        #expect(!socket.grant())
        #expect(socket.state == .reading)
        socket.endReading(handingBack: false)
        #expect(socket.state == .consumer)
        // A consumer that stopped asking loses it.
        #expect(socket.takeBack())
        #expect(!socket.beginReading())
        // A hand-back: the loop watches it until libnice has read it, and only then grants it.
        #expect(socket.grant() && socket.beginReading())
        socket.endReading(handingBack: true)
        #expect(socket.state == .handedBack)
        #expect(!socket.grant() && !socket.beginReading())
        socket.libniceReads()
        #expect(socket.grant())
        socket.retire()
        #expect(socket.state == .retired)
        #expect(!socket.beginReading() && !socket.grant() && !socket.takeBack())
    }

    @Test func aRetireWaitsForTheReadInProgress() async throws {
        let socket = try Self.directSocket()
        #expect(socket.grant() && socket.beginReading())
        let retired = Task.detached { socket.retire() }
        // The retiring thread spins; whatever it saw, the read it waits for is still the
        // consumer's to end.
        #expect(socket.state == .reading)
        socket.endReading(handingBack: false)
        await retired.value
        #expect(socket.state == .retired)
    }

    @Test func theLoopGrantsOnlyOpenPolledSocketsToAnActiveConsumerAndLeavesThemOutOfItsPoll() throws {
        let sockets = DirectSockets()
        let socket = try Self.directSocket()
        sockets.add(socket)
        var records = [pollfd(fd: 3, events: Int16(POLLIN), revents: 0)]
        // Not among libnice's descriptors (libnice removed it): not granted.
        #expect(!sockets.assign(&records, records.count, consumerActive: true))
        records.append(pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0))
        // No consumer: nothing is granted.
        #expect(!sockets.assign(&records, records.count, consumerActive: false))
        #expect(!sockets.leavesOut(socket.fd))
        #expect(sockets.assign(&records, records.count, consumerActive: true))
        #expect(sockets.leavesOut(socket.fd) && !sockets.leavesOut(3))
        // The consumer stops asking: the loop takes it back and polls it again.
        #expect(!sockets.assign(&records, records.count, consumerActive: false))
        #expect(socket.state == .loop && !sockets.leavesOut(socket.fd))
        // Handed back: granted again only after a poll found it readable.
        #expect(sockets.assign(&records, records.count, consumerActive: true))
        #expect(socket.beginReading())
        socket.endReading(handingBack: true)
        #expect(!sockets.assign(&records, records.count, consumerActive: true))
        sockets.noteReadable(&records, records.count)  // nothing readable
        #expect(!sockets.assign(&records, records.count, consumerActive: true))
        records[1].revents = Int16(POLLIN)
        sockets.noteReadable(&records, records.count)
        #expect(sockets.assign(&records, records.count, consumerActive: true))
        // A socket libnice closed is never granted, although its number is still polled.
        socket.takeBack()
        #expect(g_socket_close(socket.gsocket, nil) != 0)
        #expect(!sockets.assign(&records, records.count, consumerActive: true))
        sockets.remove(socket)
        #expect(socket.state == .retired && sockets.owners.isEmpty)
    }

    @Test func stunIsRecognizedByItsFixedHeader() {
        var request: [UInt8] = [0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42] + Array(repeating: 7, count: 12)
        #expect(request.withUnsafeBytes { DirectSockets.mayBeSTUN($0) })
        request[0] = 0x40  // TURN ChannelData, or anything with the top bits set
        #expect(!request.withUnsafeBytes { DirectSockets.mayBeSTUN($0) })
        request[0] = 0
        request[7] = 0x43
        #expect(!request.withUnsafeBytes { DirectSockets.mayBeSTUN($0) })
        #expect(![UInt8](request.prefix(19)).withUnsafeBytes { DirectSockets.mayBeSTUN($0) })
    }

    // MARK: Real agents

    /// A STUN binding request with no credentials, only the FINGERPRINT an ICE agent insists on
    /// (RFC 8489 §14.7: CRC-32 of the message before it, XOR 0x5354554E).
    static func bindingRequest(_ transaction: [UInt8]) -> [UInt8] {
        var message: [UInt8] = [0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42] + transaction
        let fingerprint = crc32(message) ^ 0x5354_554E
        message += [0x80, 0x28, 0x00, 0x04]
        message += withUnsafeBytes(of: fingerprint.bigEndian) { Array($0) }
        return message
    }

    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        return ~crc
    }

    /// A plain UDP socket on loopback, for a stranger to B's selected socket.
    final class Stranger {
        let fd: Int32

        init() throws {
            fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            try #require(fd >= 0)
            var address = Self.loopback(port: 0)
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            try #require(bound == 0)
            // Waiting for an answer is bounded by the socket, not by a sleep.
            var timeout = timeval(tv_sec: 10, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        }

        deinit { close(fd) }

        static func loopback(port: UInt16) -> sockaddr_in {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
            return address
        }

        func send(_ bytes: [UInt8], to port: UInt16) {
            var address = Self.loopback(port: port)
            let sent = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, bytes, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            #expect(sent == bytes.count)
        }

        func receive() -> [UInt8]? {
            var buffer = [UInt8](repeating: 0, count: 1500)
            let count = recv(fd, &buffer, buffer.count, 0)
            return count > 0 ? Array(buffer.prefix(count)) : nil
        }
    }

    /// Asks, and lets B's loop run, until the consumer owns B's selected socket (each ask counts
    /// the consumer active; each round trip is a pass of the loop, whose polls grant it).
    static func awaitConsumerOwns(_ pacer: ReceivePacer, _ loop: GLibExecutor) async throws {
        var rounds = 0
        while pacer.direct.owners != [.consumer] {
            pacer.collect()
            await ReceivePacerTests.roundTrip(loop)
            rounds += 1
            try #require(rounds <= 50, "B's selected socket never went to the consumer: \(pacer.direct.owners)")
        }
    }

    /// What B's stream delivered, and on which thread.
    typealias Deliveries = Mutex<[([UInt8], onLoop: Bool)]>

    /// Sends a batch of 10 datagrams tagged `tag` from A, once the consumer owns B's socket, and
    /// checks that the consumer delivered all of it on its own thread. A batch during which the
    /// consumer handed something back (a check of A's arriving late, on a busy machine: what
    /// follows it in the socket is then libnice's to read) is sent again, up to 5 times.
    static func consumerDeliversABatch(
        _ link: SignalingLink, _ pacer: ReceivePacer, _ loop: GLibExecutor, _ received: borrowing Deliveries, tag: UInt8
    ) async throws {
        let batch = (0..<10).map { [tag, UInt8($0)] }
        for _ in 0..<5 {
            try await Self.awaitConsumerOwns(pacer, loop)
            let handBacks = pacer.direct.handBacks.load(ordering: .relaxed)
            let delivered = pacer.direct.delivered.load(ordering: .relaxed)
            received.withLock { $0.removeAll() }
            for datagram in batch { #expect(link.a.stream.send(datagram)) }
            // A loopback send is in B's socket when it returns, or a few asks later should the
            // kernel still hold one back.
            var asks = 0
            while pacer.direct.delivered.load(ordering: .relaxed) < delivered + batch.count, asks < 50 {
                pacer.collect()
                asks += 1
            }
            guard pacer.direct.handBacks.load(ordering: .relaxed) == handBacks else {
                // Let libnice deliver the rest before the next try.
                while received.withLock({ $0.filter { $0.0.first == tag }.count }) < batch.count {
                    await ReceivePacerTests.roundTrip(loop)
                }
                continue
            }
            #expect(pacer.direct.delivered.load(ordering: .relaxed) == delivered + batch.count)
            let got = received.withLock { $0 }
            #expect(got.map { $0.0 } == batch)
            #expect(got.allSatisfy { !$0.onLoop })
            return
        }
        Issue.record("every batch met something handed back to libnice")
    }

    @Test func theConsumerDeliversMediaAndHandsLibniceWhatIsItsOwn() async throws {
        // No pacing (one socket), and the consumer is never counted gone.
        let pacer = try ReceivePacer(consumerGoneAfter: .seconds(600))
        try await withTimeout(.seconds(60), "media read by the consumer, STUN and strangers by libnice") {
            try await ReceivePacerTests.withPacedLink(pacer: pacer) { link, loop in
                let received = Deliveries([])
                link.b.stream.deliverDatagrams { datagram in
                    received.withLock { $0.append((datagram, onLoop: loop.isLoopThread)) }
                }
                try await link.exchangeCredentials()
                _ = try await link.bothConnected()  // A can send
                _ = try await link.log.first(from: .b) { $0 == .stateChanged(.ready) }
                let selected = try await link.log.first(from: .b) {
                    if case .selectedPair = $0 { return true } else { return false }
                }
                guard case .selectedPair(let pair) = selected.event else { return }

                // The peer's media: delivered by the consumer, on its own thread, all of it.
                try await Self.consumerDeliversABatch(link, pacer, loop, received, tag: 0xF1)

                // A STUN binding request from a new address: left for libnice, which answers it
                // (with 400, as it has no credentials) although the consumer owns the socket.
                let stranger = try Stranger()
                let transaction: [UInt8] = Array(1...12)
                try await Self.awaitConsumerOwns(pacer, loop)
                var handBacks = pacer.direct.handBacks.load(ordering: .relaxed)
                stranger.send(Self.bindingRequest(transaction), to: pair.local.port)
                pacer.collect()
                #expect(pacer.direct.handBacks.load(ordering: .relaxed) > handBacks)
                let answer = try #require(stranger.receive(), "libnice never answered the STUN request")
                #expect(answer.prefix(2) == [0x01, 0x11])  // a binding error response
                #expect(Array(answer[8..<20]) == transaction)

                // Anything else from a stranger is handed back too, and libnice drops it.
                try await Self.awaitConsumerOwns(pacer, loop)
                handBacks = pacer.direct.handBacks.load(ordering: .relaxed)
                stranger.send([0xEE, 0xEE], to: pair.local.port)
                pacer.collect()
                #expect(pacer.direct.handBacks.load(ordering: .relaxed) > handBacks)

                // Once libnice has read it, the consumer reads the peer's media again.
                try await Self.consumerDeliversABatch(link, pacer, loop, received, tag: 0xF2)
                #expect(!received.withLock { $0.contains { $0.0 == [0xEE, 0xEE] } })
            }
        }
    }

    @Test func aConsumerThatStopsAskingGivesTheSocketBackToLibnice() async throws {
        let pacer = try ReceivePacer(consumerGoneAfter: .milliseconds(500))
        try await withTimeout(.seconds(30), "datagrams delivered by libnice after the consumer stopped") {
            try await ReceivePacerTests.withPacedLink(pacer: pacer) { link, loop in
                let (stream, sink) = AsyncStream.makeStream(of: ([UInt8], onLoop: Bool).self)
                link.b.stream.deliverDatagrams { sink.yield(($0, onLoop: loop.isLoopThread)) }
                try await link.exchangeCredentials()
                _ = try await link.bothConnected()  // A can send
                _ = try await link.log.first(from: .b) { $0 == .stateChanged(.ready) }
                try await Self.awaitConsumerOwns(pacer, loop)
                // Nobody asks any more: the loop, whose poll waits no longer than the consumer's
                // bound while it owns a socket, takes it back and libnice delivers.
                for index in 0..<3 { #expect(link.a.stream.send([UInt8(index)])) }
                var received = stream.makeAsyncIterator()
                for index in 0..<3 {
                    let next = try #require(await received.next())
                    #expect(next.0 == [UInt8(index)] && next.onLoop)
                }
                #expect(pacer.direct.owners == [.loop])
            }
        }
    }
}
