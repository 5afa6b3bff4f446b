import NIOPosix
import RendezvousWire

#if canImport(Glibc)
import Glibc
#endif

/// A deliberately dumb WebSocket client on a blocking socket, for tests that must misbehave in
/// ways a real client never would (garbage frames, no pongs, never reading) and see exactly what
/// the server sends. Every read is bounded by a receive timeout. Tests call it off the
/// cooperative pool (`RawWebSocket.run`), so a blocked read never starves async code.
final class RawWebSocket: @unchecked Sendable {
    // Safety: each instance is used by one test, one call at a time (calls are awaited in turn).
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    private let fd: Int32
    private var buffered: [UInt8] = []

    /// A dedicated pool: blocking reads never hold threads NIO or Swift concurrency need.
    static let pool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 16)
        pool.start()
        return pool
    }()

    /// Runs blocking socket work on `pool`.
    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await pool.runIfActive(body)
    }

    init(port: Int, receiveTimeoutSeconds: Int = 10, receiveBufferBytes: Int32? = nil) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket() failed") }
        var timeout = timeval(tv_sec: receiveTimeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        if var size = receiveBufferBytes {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else {
            Glibc.close(fd)
            throw Failure(description: "connect() to port \(port) failed: errno \(errno)")
        }
    }

    deinit { Glibc.close(fd) }

    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            guard sent > 0 else { throw Failure(description: "send() failed: errno \(errno)") }
            offset += sent
        }
    }

    /// Reads exactly `count` bytes; `nil` at end of stream.
    private func read(_ count: Int) throws -> [UInt8]? {
        while buffered.count < count {
            var chunk = [UInt8](repeating: 0, count: 65536)
            let received = recv(fd, &chunk, chunk.count, 0)
            if received == 0 { return nil }
            if received < 0 {
                if errno == ECONNRESET { return nil }
                throw Failure(description: "recv() failed or timed out: errno \(errno)")
            }
            buffered += chunk[0..<received]
        }
        defer { buffered.removeFirst(count) }
        return Array(buffered[0..<count])
    }

    /// Sends the HTTP upgrade request; returns the response status code.
    /// `headers`: extra header lines (`Name: value`).
    func upgrade(
        protocols: String? = RendezvousWire.subprotocol, path: String = "/", headers: [String] = []
    ) throws
        -> Int
    {
        var request = "GET \(path) HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        request += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        if let protocols { request += "Sec-WebSocket-Protocol: \(protocols)\r\n" }
        for header in headers { request += header + "\r\n" }
        try send(Array((request + "\r\n").utf8))
        var head: [UInt8] = []
        while !head.suffix(4).elementsEqual([13, 10, 13, 10]) {
            guard let byte = try read(1) else { throw Failure(description: "closed during the upgrade") }
            head += byte
        }
        let statusLine = String(decoding: head, as: UTF8.self).split(separator: "\r\n").first ?? ""
        guard let status = statusLine.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else {
            throw Failure(description: "bad status line \(statusLine)")
        }
        if status != 101 {  // drain the body so the caller can see the close
            while let _ = try? read(1) {}
        }
        return status
    }

    /// Sends one frame, masked as clients must unless told otherwise.
    func sendFrame(opcode: UInt8, _ payload: [UInt8], masked: Bool = true, fin: Bool = true) throws {
        try send(Self.frame(opcode: opcode, payload, masked: masked, fin: fin))
    }

    static func frame(opcode: UInt8, _ payload: [UInt8], masked: Bool = true, fin: Bool = true) -> [UInt8] {
        var frame: [UInt8] = [(fin ? 0x80 : 0) | opcode]
        let maskBit: UInt8 = masked ? 0x80 : 0
        switch payload.count {
        case ..<126: frame.append(maskBit | UInt8(payload.count))
        case ..<65536: frame += [maskBit | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        default:
            frame += [maskBit | 127] + (0..<8).reversed().map { UInt8(truncatingIfNeeded: payload.count >> ($0 * 8)) }
        }
        guard masked else { return frame + payload }
        let key: [UInt8] = (0..<4).map { _ in UInt8.random(in: 0...255) }
        return frame + key + payload.enumerated().map { $0.element ^ key[$0.offset % 4] }
    }

    func send(_ message: RendezvousMessage) throws {
        try sendFrame(opcode: 0x2, message.encoded())
    }

    /// The next frame: (opcode, payload), or nil at end of stream.
    func readFrame() throws -> (opcode: UInt8, payload: [UInt8])? {
        guard let header = try read(2) else { return nil }
        var length = Int(header[1] & 0x7F)
        if length == 126 {
            guard let extended = try read(2) else { return nil }
            length = Int(extended[0]) << 8 | Int(extended[1])
        } else if length == 127 {
            guard let extended = try read(8) else { return nil }
            length = extended.reduce(0) { $0 << 8 | Int($1) }
        }
        guard header[1] & 0x80 == 0 else { throw Failure(description: "server frames must not be masked") }
        guard let payload = try read(length) else { return nil }
        return (header[0] & 0x0F, payload)
    }

    /// The next Parley message, skipping control frames (pings stay unanswered); nil once the
    /// server sent Close or the stream ended.
    func readMessage() throws -> RendezvousMessage? {
        while let (opcode, payload) = try readFrame() {
            switch opcode {
            case 0x2: return try RendezvousMessage.parse(payload)
            case 0x8: return nil
            default: continue
            }
        }
        return nil
    }

    /// Takes in whatever has arrived, without blocking; false at end of stream.
    func absorbAvailable() -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let received = recv(fd, &chunk, chunk.count, Int32(MSG_DONTWAIT))
            if received == 0 { return false }
            if received < 0 { return true }
            buffered += chunk[0..<received]
        }
    }

    /// Whether a whole frame is buffered (so `readFrame` will not block).
    var hasBufferedFrame: Bool {
        guard buffered.count >= 2 else { return false }
        var length = Int(buffered[1] & 0x7F)
        var header = 2
        if length == 126, buffered.count >= 4 {
            length = Int(buffered[2]) << 8 | Int(buffered[3])
            header = 4
        } else if length >= 126 {
            return buffered.count >= 10
        }
        return buffered.count >= header + length
    }

    /// Everything until the end of the stream (or the receive timeout).
    func readAll() -> [UInt8] {
        var all: [UInt8] = []
        while let byte = try? read(1) { all += byte }
        return all
    }

    /// Reads until the server closes the TCP connection; true if it did within the timeout.
    func waitForEnd() -> Bool {
        while true {
            do {
                guard try readFrame() != nil else { return true }
            } catch {
                return false
            }
        }
    }
}
