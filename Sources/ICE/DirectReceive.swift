internal import CNice
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A ready stream's selected UDP socket, which the consumer (the playback thread, in
/// `ReceivePacer.collect`) reads itself instead of waking the loop thread for every datagram.
///
/// libnice stays the socket's owner: it made it, sends on it, and reads it whenever the socket is
/// handed back. The consumer only takes what is plainly the peer's media, datagrams from the
/// selected pair's remote address that are not STUN. It peeks at each datagram first, and anything
/// else (a consent check or keepalive, a check from a new address, a roaming peer, an error) it
/// leaves in the socket and hands the socket back, so libnice reads it as it always does. The
/// loop thread gives the socket to the consumer again once libnice has read it.
///
/// Who may read is one atomic `Owner`. Only the loop thread moves a socket out of the loop's
/// states (`grant`), back to it (`takeBack`), or out of use (`retire`); only the consumer moves it
/// between `consumer` and `reading`, and from `reading` to `handedBack`. The loop thread leaves a
/// socket out of its poll exactly while the consumer owns it, so libnice never reads it then. A
/// peek followed by a discard is only sound with one reader: a second between the two would make
/// the discard drop a datagram nobody delivered.
final class DirectSocket: Sendable {
    enum Owner: UInt8, Sendable {
        /// libnice reads it; the loop thread may grant it to the consumer.
        case loop
        /// The consumer left a datagram for libnice; the loop thread watches it until a poll finds
        /// it readable (libnice then reads it before the next poll), then it is `loop` again.
        case handedBack
        /// The consumer may read it; the loop thread leaves it out of its poll.
        case consumer
        /// The consumer is reading it now.
        case reading
        /// Out of use (the pair changed, the stream closes): nobody reads it through this object.
        case retired
    }

    let fd: Int32
    /// Where the selected pair's datagrams come from.
    let remote: DatagramSource
    let context: ReceiveContext
    private let owner = Atomic<UInt8>(Owner.loop.rawValue)
    // Safety: only read with `g_socket_is_closed` on the loop thread, the thread that closes it;
    // the reference is dropped in `deinit` (GObject reference counts are atomic).
    nonisolated(unsafe) let gsocket: UnsafeMutablePointer<GSocket>

    /// Takes over a reference to `socket` (libnice's, which closes it when the stream ends: the
    /// reference keeps the object, not the descriptor, which is why `isOpen` is checked).
    init(socket: UnsafeMutablePointer<GSocket>, remote: DatagramSource, context: ReceiveContext) {
        gsocket = socket
        fd = g_socket_get_fd(socket)
        self.remote = remote
        self.context = context
    }

    deinit { g_object_unref(gsocket) }

    /// Loop thread: whether libnice still has the socket open (it closes one that fails).
    var isOpen: Bool { g_socket_is_closed(gsocket) == 0 }

    var state: Owner { Owner(rawValue: owner.load(ordering: .acquiring))! }

    private func move(from: Owner, to: Owner) -> Bool {
        owner.compareExchange(expected: from.rawValue, desired: to.rawValue, ordering: .acquiringAndReleasing)
            .exchanged
    }

    // MARK: Loop thread

    /// Gives a socket libnice has nothing pending on to the consumer.
    @discardableResult
    func grant() -> Bool { move(from: .loop, to: .consumer) }

    /// A poll found a handed-back socket readable: libnice reads it before the next poll.
    func libniceReads() { _ = move(from: .handedBack, to: .loop) }

    /// Takes a socket back from a consumer that stopped asking; fails while it is reading (the
    /// consumer is not gone then: try at the next poll).
    @discardableResult
    func takeBack() -> Bool { move(from: .consumer, to: .loop) }

    /// Puts the socket out of use, waiting out a read in progress (a few system calls and
    /// deliveries), so libnice may close it once this returns.
    func retire() {
        while true {
            let current = state
            if current == .retired { return }
            if current != .reading, move(from: current, to: .retired) { return }
            sched_yield()
        }
    }

    // MARK: Consumer

    /// Starts a read; false if the consumer does not own the socket now.
    func beginReading() -> Bool { move(from: .consumer, to: .reading) }

    /// Ends a read: the consumer keeps the socket, or hands it back to libnice.
    func endReading(handingBack: Bool) {
        let moved = move(from: .reading, to: handingBack ? .handedBack : .consumer)
        precondition(moved, "a direct socket changed hands during a read")
    }
}

/// A datagram's source address as the kernel reports it, to compare with the selected remote.
struct DatagramSource: Hashable, Sendable {
    let family: sa_family_t
    let port: UInt16
    /// The IPv4 address in the first 4 bytes, or the IPv6 address.
    let address: [UInt8]

    /// From a `sockaddr_in` or `sockaddr_in6`; nil for any other family.
    init?(_ storage: UnsafeRawPointer) {
        let family = storage.load(as: sockaddr.self).sa_family
        switch Int32(family) {
        case AF_INET:
            let ip4 = storage.load(as: sockaddr_in.self)
            self.family = family
            port = UInt16(bigEndian: ip4.sin_port)
            address = withUnsafeBytes(of: ip4.sin_addr) { Array($0) }
        case AF_INET6:
            let ip6 = storage.load(as: sockaddr_in6.self)
            self.family = family
            port = UInt16(bigEndian: ip6.sin6_port)
            address = withUnsafeBytes(of: ip6.sin6_addr) { Array($0) }
        default:
            return nil
        }
    }

    /// Whether `storage` holds this source, without allocating (called on the playback thread).
    func matches(_ storage: UnsafeRawPointer) -> Bool {
        guard storage.load(as: sockaddr.self).sa_family == family else { return false }
        if Int32(family) == AF_INET {
            let ip4 = storage.load(as: sockaddr_in.self)
            return UInt16(bigEndian: ip4.sin_port) == port
                && withUnsafeBytes(of: ip4.sin_addr) { $0.elementsEqual(address) }
        }
        let ip6 = storage.load(as: sockaddr_in6.self)
        return UInt16(bigEndian: ip6.sin6_port) == port
            && withUnsafeBytes(of: ip6.sin6_addr) { $0.elementsEqual(address) }
    }
}

/// The direct sockets of one loop (its `ReceivePacer` owns it): registered by the loop thread,
/// read by the consumer.
final class DirectSockets: Sendable {
    /// What one consumer read may take from one socket: under a flood from the peer's address, the
    /// playback thread spends at most this many deliveries a frame on it (the rest waits a frame,
    /// and the socket's buffer drops what does not fit, as it would for libnice).
    static let datagramsPerRead = 64
    /// The largest datagram the consumer reads; a larger one is handed to libnice.
    static let bufferSize = 2048

    /// The consumer's view, swapped whole by the loop thread.
    private let published = Mutex<[DirectSocket]>([])
    /// Datagrams the consumer delivered, and hand-backs to libnice (for tests and status).
    let delivered = Atomic<Int>(0)
    let handBacks = Atomic<Int>(0)

    // Safety: `sockets` is touched only by the loop thread; `buffer` only by the consumer (one
    // thread, `ReceivePacer.collect`'s caller).
    private nonisolated(unsafe) var sockets: [DirectSocket] = []
    private nonisolated(unsafe) let buffer = UnsafeMutableRawBufferPointer.allocate(
        byteCount: bufferSize, alignment: 16)

    deinit { buffer.deallocate() }

    // MARK: Loop thread

    func add(_ socket: DirectSocket) {
        sockets.append(socket)
        publish()
    }

    /// Retires `socket` (see `DirectSocket.retire`) and forgets it.
    func remove(_ socket: DirectSocket) {
        socket.retire()
        sockets.removeAll { $0 === socket }
        publish()
    }

    /// Who owns each socket now (for tests).
    var owners: [DirectSocket.Owner] { published.withLock { $0.map(\.state) } }

    private func publish() {
        let current = sockets
        published.withLock { $0 = current }
    }

    /// Before each poll: with a consumer, grants it the sockets libnice has nothing pending on and
    /// that libnice still polls (one it closed is not in `records`); without one, takes every
    /// socket back. Returns whether the consumer owns any socket (the loop must then look at the
    /// consumer again within its bound).
    func assign(_ records: UnsafeMutablePointer<pollfd>, _ count: Int, consumerActive: Bool) -> Bool {
        var owned = false
        for socket in sockets {
            if !consumerActive {
                socket.takeBack()
            } else if socket.state == .loop, socket.isOpen, contains(records, count, socket.fd) {
                socket.grant()
            }
            owned = owned || isConsumerOwned(socket.state)
        }
        return owned
    }

    /// Whether the loop must leave `fd` out of its poll (the consumer owns it).
    func leavesOut(_ fd: Int32) -> Bool {
        for socket in sockets where socket.fd == fd && isConsumerOwned(socket.state) { return true }
        return false
    }

    /// After each poll: handed-back sockets found readable are libnice's to read now.
    func noteReadable(_ records: UnsafeMutablePointer<pollfd>, _ count: Int) {
        for socket in sockets where socket.state == .handedBack {
            for index in 0..<count where records[index].fd == socket.fd && records[index].revents != 0 {
                socket.libniceReads()
            }
        }
    }

    private func isConsumerOwned(_ state: DirectSocket.Owner) -> Bool { state == .consumer || state == .reading }

    private func contains(_ records: UnsafeMutablePointer<pollfd>, _ count: Int, _ fd: Int32) -> Bool {
        for index in 0..<count where records[index].fd == fd { return true }
        return false
    }

    // MARK: Consumer

    /// Reads the consumer's sockets; returns whether one was handed back (the loop thread must
    /// then be woken to watch it).
    func read() -> Bool {
        let sockets = published.withLock { $0 }
        var handedBack = false
        for socket in sockets where socket.beginReading() {
            let handBack = drain(socket)
            socket.endReading(handingBack: handBack)
            if handBack {
                handedBack = true
                handBacks.add(1, ordering: .relaxed)
            }
        }
        return handedBack
    }

    /// Delivers the socket's media datagrams; true when it stopped at one for libnice.
    private func drain(_ socket: DirectSocket) -> Bool {
        var source = sockaddr_storage()
        for _ in 0..<Self.datagramsPerRead {
            var sourceLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let length = withUnsafeMutablePointer(to: &source) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    recvfrom(
                        socket.fd, buffer.baseAddress, buffer.count, Int32(MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC), $0,
                        &sourceLength)
                }
            }
            if length < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK { return false }
                if errno == EINTR { continue }
                return true  // an error: libnice's to see (it drops a socket that fails)
            }
            let isMedia = withUnsafeBytes(of: &source) { source in
                length > 0 && length <= buffer.count && socket.remote.matches(source.baseAddress!)
                    && !Self.mayBeSTUN(UnsafeRawBufferPointer(rebasing: buffer[0..<length]))
            }
            guard isMedia else { return true }
            socket.context.deliver(UnsafeRawBufferPointer(rebasing: buffer[0..<length]))
            delivered.add(1, ordering: .relaxed)
            _ = recv(socket.fd, nil, 0, Int32(MSG_DONTWAIT))  // discards the datagram just delivered
        }
        return false
    }

    /// STUN's fixed header (RFC 8489 §5): the top two bits zero and the magic cookie at bytes 4–7.
    /// Anything that looks like it goes to libnice, which decides; a Parley datagram that happened
    /// to match would only take the slower path.
    static func mayBeSTUN(_ datagram: UnsafeRawBufferPointer) -> Bool {
        datagram.count >= 20 && datagram[0] & 0xC0 == 0 && datagram[4] == 0x21 && datagram[5] == 0x12
            && datagram[6] == 0xA4 && datagram[7] == 0x42
    }
}
