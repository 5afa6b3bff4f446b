import ICETestSupport
import ParleyTestSupport
import RendezvousWire
import Synchronization
import Testing

@testable import ICE

#if canImport(Glibc)
import Glibc
#endif

@Suite("Direct receive: the loop reads a ready stream's selected socket without a GLib iteration")
struct DirectReceiveTests {
    // MARK: Sockets and datagrams

    /// A UDP socket bound to loopback, for the tests to send from.
    final class Sender {
        let fd: Int32
        let port: UInt16

        init() throws {
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            try #require(fd >= 0)
            var address = Self.loopback(port: 0)
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
                }
            }
            try #require(bound)
            self.fd = fd
            port = UInt16(bigEndian: address.sin_port)
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

        var source: DatagramSource { DatagramSource(address: IPAddress("127.0.0.1")!, port: port) }

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

    /// A STUN binding request with no credentials, only the FINGERPRINT an ICE agent insists on.
    static func bindingRequest(_ transaction: [UInt8]) -> [UInt8] {
        STUNMessage(type: 0x0001, transactionID: transaction).encoded()
    }

    // MARK: What is read, what is left to libnice

    @Test func stunIsRecognizedByItsFixedHeader() {
        var request = Self.bindingRequest(Array(1...12))
        #expect(request.withUnsafeBytes { DirectSockets.mayBeSTUN($0) })
        request[0] = 0x40  // TURN ChannelData, or anything with the top bits set
        #expect(!request.withUnsafeBytes { DirectSockets.mayBeSTUN($0) })
        request[0] = 0
        request[7] = 0x43
        #expect(!request.withUnsafeBytes { DirectSockets.mayBeSTUN($0) })
        #expect(![UInt8](request.prefix(19)).withUnsafeBytes { DirectSockets.mayBeSTUN($0) })
    }

    @Test func mediaFromTheSelectedRemoteIsReadAndTheRestLeftInTheSocket() throws {
        let peer = try Sender()
        let stranger = try Sender()
        let receiver = try Sender()  // the socket read directly, as libnice's host sockets are
        let port = receiver.port
        let delivered = Mutex<[[UInt8]]>([])
        let route = DatagramRoute()
        route.set { datagram in delivered.withLock { $0.append(datagram) } }
        let (_, sink) = AsyncStream.makeStream(of: [UInt8].self)
        let context = ReceiveContext(sink: sink, route: route, counters: TrafficCounters(), ledger: CallbackLedger())
        let open = Atomic<Bool>(true)
        let socket = DirectSocket(fd: receiver.fd, remote: peer.source, context: context) {
            open.load(ordering: .relaxed)
        }
        let sockets = DirectSockets()
        sockets.add(socket)
        var records = [
            pollfd(fd: socket.fd, events: Int16(POLLIN), revents: Int16(POLLIN)),
            pollfd(fd: 3, events: Int16(POLLIN), revents: Int16(POLLIN)),  // not a direct socket: GLib's
        ]

        // The peer's media, all of it: read, and the socket is not GLib's to dispatch.
        for index in 0..<3 { peer.send([0xFF, UInt8(index)], to: port) }
        #expect(sockets.read(&records, records.count) == 1)
        #expect(records[0].revents == 0 && records[1].revents == Int16(POLLIN))
        #expect(delivered.withLock { $0 } == [[0xFF, 0], [0xFF, 1], [0xFF, 2]])

        // Media, then STUN from the peer: the media is read, the STUN left for libnice.
        let request = Self.bindingRequest(Array(1...12))
        peer.send([0xFF, 3], to: port)
        peer.send(request, to: port)
        records[0].revents = Int16(POLLIN)
        #expect(sockets.read(&records, 1) == 1)
        #expect(records[0].revents == Int16(POLLIN))
        #expect(delivered.withLock { $0.count } == 4)
        #expect(sockets.leftToLibnice.load(ordering: .relaxed) == 1)
        #expect(Self.nextDatagram(socket.fd) == request)

        // Anything from another address is libnice's too, although it would pass as media.
        stranger.send([0xFF, 4], to: port)
        #expect(sockets.read(&records, 1) == 1)
        #expect(Self.nextDatagram(socket.fd) == [0xFF, 4])

        // An error or hang-up is libnice's to see; nothing is read then.
        peer.send([0xFF, 5], to: port)
        records[0].revents = Int16(POLLIN | POLLERR)
        #expect(sockets.read(&records, 1) == 1)
        #expect(delivered.withLock { $0.count } == 4)

        // A socket libnice closed is never read, nor one that is not registered any more.
        records[0].revents = Int16(POLLIN)
        sockets.remove(socket)
        #expect(sockets.read(&records, 1) == 1)
        sockets.add(socket)
        open.store(false, ordering: .relaxed)
        #expect(sockets.read(&records, 1) == 1)
        #expect(delivered.withLock { $0.count } == 4)
        #expect(sockets.delivered.load(ordering: .relaxed) == 4)
    }

    /// The next datagram in `fd`, taken out.
    static func nextDatagram(_ fd: Int32) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 1500)
        let count = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
        return count >= 0 ? Array(buffer.prefix(count)) : nil
    }

    // MARK: Real agents

    typealias Deliveries = AsyncStream<([UInt8], onLoop: Bool)>.Iterator

    /// Sends batches of 10 datagrams tagged `tag` from A until one is read directly, all of it,
    /// on the loop thread; up to 5 tries. A batch during which something went to libnice is sent
    /// again: a check of A's arriving late on a busy machine is libnice's, and libnice reads what
    /// follows it in the same go.
    static func aBatchIsReadDirectly(
        _ link: SignalingLink, _ pacer: ReceivePacer, _ received: inout Deliveries, tag: UInt8
    ) async throws {
        let batch = (0..<10).map { [tag, UInt8($0)] }
        for _ in 0..<5 {
            let left = pacer.direct.leftToLibnice.load(ordering: .relaxed)
            let delivered = pacer.direct.delivered.load(ordering: .relaxed)
            for datagram in batch { #expect(link.a.stream.send(datagram)) }
            for datagram in batch {
                let next = try #require(await received.next())
                #expect(next.0 == datagram && next.onLoop)
            }
            guard pacer.direct.leftToLibnice.load(ordering: .relaxed) == left else { continue }
            #expect(pacer.direct.delivered.load(ordering: .relaxed) == delivered + batch.count)
            return
        }
        Issue.record("every batch met something for libnice")
    }

    @Test func aReadyStreamsMediaIsReadDirectlyAndLibniceStillAnswersItsChecks() async throws {
        let pacer = try ReceivePacer()
        try await withTimeout(.seconds(30), "media read directly, STUN and strangers read by libnice") {
            try await ReceivePacerTests.withPacedLink(pacer: pacer) { link, loop in
                let (stream, sink) = AsyncStream.makeStream(of: ([UInt8], onLoop: Bool).self)
                link.b.stream.deliverDatagrams { sink.yield(($0, onLoop: loop.isLoopThread)) }
                try await link.exchangeCredentials()
                _ = try await link.bothConnected()  // A can send
                _ = try await link.log.first(from: .b) { $0 == .stateChanged(.ready) }
                let selected = try await link.log.first(from: .b) {
                    if case .selectedPair = $0 { return true } else { return false }
                }
                guard case .selectedPair(let pair) = selected.event else {
                    Issue.record("no selected pair")
                    return
                }
                // B registered its socket on the loop when it went ready; a job queued now runs after.
                await ReceivePacerTests.roundTrip(loop)
                var received = stream.makeAsyncIterator()

                // The peer's media: read by the poll function, on the loop thread.
                try await Self.aBatchIsReadDirectly(link, pacer, &received, tag: 0xF1)

                // A STUN binding request from a new address: left for libnice, which answers it
                // (with 400, as it has no credentials).
                let stranger = try Sender()
                let transaction: [UInt8] = Array(1...12)
                var left = pacer.direct.leftToLibnice.load(ordering: .relaxed)
                stranger.send(Self.bindingRequest(transaction), to: pair.local.port)
                let answer = try #require(stranger.receive(), "libnice never answered the STUN request")
                let response = try STUNMessage.parse(answer)
                #expect(response.method == 0x0001 && response.messageClass == .errorResponse)
                #expect(response.transactionID == transaction)
                #expect(pacer.direct.leftToLibnice.load(ordering: .relaxed) > left)
                // libnice answers from inside its read, which goes on until the socket is empty:
                // what is sent before that read ends is libnice's. A job queued now runs in the
                // loop's next iteration, after it.
                await ReceivePacerTests.roundTrip(loop)

                // Anything else from a stranger is left to libnice too, which drops it (were it
                // delivered, the next batch would not match); the peer's media after it is read
                // directly again.
                left = pacer.direct.leftToLibnice.load(ordering: .relaxed)
                stranger.send([0xF2, 0xEE], to: pair.local.port)
                // The datagram is in the socket, so the loop's next poll finds it and GLib has
                // libnice read it in that iteration; a job queued after the first round trip runs
                // in a later one, once that read has ended.
                await ReceivePacerTests.roundTrip(loop)
                await ReceivePacerTests.roundTrip(loop)
                #expect(pacer.direct.leftToLibnice.load(ordering: .relaxed) > left)
                try await Self.aBatchIsReadDirectly(link, pacer, &received, tag: 0xF2)
            }
        }
    }
}
