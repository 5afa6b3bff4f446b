internal import CNice
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A ready stream's selected UDP socket, which the loop's poll function reads itself when a poll
/// finds it readable, instead of returning to GLib for libnice to read it.
///
/// Why: a datagram that libnice reads costs the loop a whole GLib iteration around it (check,
/// dispatch with the source blocked and unblocked, libnice's agent lock and receive, prepare and
/// query again), which on this machine is 2–3× a plain read: 38–60 µs of CPU per datagram against
/// 13–18 µs at 50 datagrams a second (a GSocket source on a GLib loop against a blocking `recv`
/// loop). In a 1:1 call that was the network thread's whole cost.
///
/// libnice stays the socket's owner: it made it, sends on it, and reads whatever is not plainly the
/// peer's media. The poll function peeks at each datagram and takes only datagrams from the
/// selected pair's remote address that are not STUN. Anything else (a consent check or keepalive,
/// a check from a new address, a roaming peer, an error) it leaves in the socket and reports the
/// socket readable to GLib, so libnice reads it in the same iteration, as it always did. A peek
/// followed by a discard is sound because the loop thread is the socket's only reader.
///
/// Loop thread only (the `ReceivePacer`'s poll function, and `NiceSession`, which registers it).
final class DirectSocket: @unchecked Sendable {
    // Safety: created, used and dropped on the loop thread (`isOpen` included).
    let fd: Int32
    /// Where the selected pair's datagrams come from.
    let remote: DatagramSource
    let context: ReceiveContext
    /// Whether libnice still has the socket open (it closes one that fails).
    let isOpen: () -> Bool

    init(fd: Int32, remote: DatagramSource, context: ReceiveContext, isOpen: @escaping () -> Bool) {
        self.fd = fd
        self.remote = remote
        self.context = context
        self.isOpen = isOpen
    }

    /// For libnice's `socket`, taking over a reference to it: libnice closes the socket when the
    /// stream ends, and the reference keeps the object, not the descriptor, so `isOpen` asks it.
    convenience init(socket: UnsafeMutablePointer<GSocket>, remote: DatagramSource, context: ReceiveContext) {
        let reference = GSocketReference(socket)
        self.init(fd: g_socket_get_fd(socket), remote: remote, context: context) { reference.isOpen }
    }
}

/// One reference to a `GSocket`, dropped with this object.
private final class GSocketReference {
    private let socket: UnsafeMutablePointer<GSocket>

    init(_ socket: UnsafeMutablePointer<GSocket>) { self.socket = socket }

    deinit { g_object_unref(socket) }

    /// Read on the loop thread, the thread that closes it.
    var isOpen: Bool { g_socket_is_closed(socket) == 0 }
}

/// Where the selected pair's datagrams come from, to compare with a source the kernel reports.
struct DatagramSource: Hashable, Sendable {
    let address: IPAddress
    let port: UInt16

    /// Whether `storage` (a `sockaddr_in` or `sockaddr_in6`) holds this source, without
    /// allocating.
    func matches(_ storage: UnsafeRawPointer) -> Bool {
        switch Int32(storage.load(as: sockaddr.self).sa_family) {
        case AF_INET where address.isIPv4:
            let ip4 = storage.load(as: sockaddr_in.self)
            return UInt16(bigEndian: ip4.sin_port) == port
                && withUnsafeBytes(of: ip4.sin_addr) { $0.elementsEqual(address.bytes) }
        case AF_INET6 where !address.isIPv4:
            let ip6 = storage.load(as: sockaddr_in6.self)
            return UInt16(bigEndian: ip6.sin6_port) == port
                && withUnsafeBytes(of: ip6.sin6_addr) { $0.elementsEqual(address.bytes) }
        default:
            return false
        }
    }
}

/// The direct sockets of one loop (its `ReceivePacer` owns it). Loop thread only, but the
/// counters, which tests read.
final class DirectSockets: @unchecked Sendable {
    // Safety: `sockets` and `buffer` are touched only by the loop thread.
    /// What one read takes from one socket at most: past it (a flood from the peer's address),
    /// the rest is libnice's to read in GLib's iteration, as it all was before.
    static let datagramsPerRead = 64
    /// The largest datagram read here; a larger one is libnice's.
    static let bufferSize = 2048

    /// Datagrams delivered here, and readable sockets left to libnice (for tests).
    let delivered = Atomic<Int>(0)
    let leftToLibnice = Atomic<Int>(0)

    private var sockets: [DirectSocket] = []
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 16)

    deinit { buffer.deallocate() }

    func add(_ socket: DirectSocket) { sockets.append(socket) }

    func remove(_ socket: DirectSocket) { sockets.removeAll { $0 === socket } }

    /// After a poll: reads each readable direct socket's media and clears its readiness, unless
    /// something in it is libnice's (GLib then dispatches libnice's source for it in this
    /// iteration). Returns how many of `records` are still ready for GLib.
    func read(_ records: UnsafeMutablePointer<pollfd>, _ count: Int) -> Int32 {
        var ready: Int32 = 0
        for index in 0..<count where records[index].revents != 0 {
            // Errors and hang-ups are libnice's to see (it drops a socket that fails).
            if records[index].revents == Int16(POLLIN), let socket = socket(records[index].fd), socket.isOpen(),
                !drain(socket)
            {
                records[index].revents = 0
                continue
            }
            ready += 1
        }
        return ready
    }

    private func socket(_ fd: Int32) -> DirectSocket? {
        for socket in sockets where socket.fd == fd { return socket }
        return nil
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
                break  // an error: libnice's
            }
            let isMedia = withUnsafeBytes(of: &source) { source in
                length > 0 && length <= buffer.count && socket.remote.matches(source.baseAddress!)
                    && !Self.mayBeSTUN(UnsafeRawBufferPointer(rebasing: buffer[0..<length]))
            }
            guard isMedia else { break }
            delivered.add(1, ordering: .relaxed)  // first: whoever sees it delivered sees it counted
            socket.context.deliver(UnsafeRawBufferPointer(rebasing: buffer[0..<length]))
            _ = recv(socket.fd, nil, 0, Int32(MSG_DONTWAIT))  // discards the datagram just delivered
        }
        leftToLibnice.add(1, ordering: .relaxed)
        return true
    }

    /// STUN's fixed header (RFC 8489 §5): the top two bits zero and the magic cookie at bytes 4–7.
    /// Anything that looks like it goes to libnice, which decides; a Parley datagram that happened
    /// to match would only take libnice's path.
    static func mayBeSTUN(_ datagram: UnsafeRawBufferPointer) -> Bool {
        datagram.count >= 20 && datagram[0] & 0xC0 == 0 && datagram[4] == 0x21 && datagram[5] == 0x12
            && datagram[6] == 0xA4 && datagram[7] == 0x42
    }
}
