#if canImport(Glibc)
import Glibc
#endif

/// The typed client the CLI uses: connects to the daemon's socket, sends one request, reads the
/// answer. Blocking POSIX I/O with a time limit: the CLI is a one-shot program, and this keeps
/// it free of event-loop machinery.
public struct ControlClient: Sendable {
    public let path: String
    /// How long to wait for an answer (not used for `watch`, which streams until stopped).
    public let timeoutSeconds: Int

    public init(path: String = ControlSocketPath.defaultPath, timeoutSeconds: Int = 15) {
        self.path = path
        self.timeoutSeconds = timeoutSeconds
    }

    /// Sends `request` and returns the daemon's answer. A refusal by the daemon (`ok: false`)
    /// throws `ControlError.daemon` with its message.
    @discardableResult
    public func send(_ request: ControlRequest) throws(ControlError) -> ControlResponse {
        let connection = try Connection(path: path, timeoutSeconds: timeoutSeconds)
        defer { connection.close() }
        try connection.write(lineFor(request))
        guard let line = try connection.readLine() else { throw .closed }
        let response: ControlResponse
        do {
            response = try ControlCodec.decode(ControlResponse.self, from: line)
        } catch {
            throw .malformed("not a control response")
        }
        if !response.ok { throw .daemon(response.error ?? "parleyd refused the request") }
        return response
    }

    /// Streams live events to `onEvent` until it returns false or the daemon closes the stream.
    /// `subscribed` runs once the daemon has accepted the watch: every event from then on arrives.
    public func watch(subscribed: () -> Void = {}, _ onEvent: (ControlEvent) -> Bool) throws(ControlError) {
        let connection = try Connection(path: path, timeoutSeconds: timeoutSeconds)
        defer { connection.close() }
        try connection.write(lineFor(ControlRequest(.watch)))
        guard let first = try connection.readLine() else { throw .closed }
        guard let response = try? ControlCodec.decode(ControlResponse.self, from: first) else {
            throw .malformed("not a control response")
        }
        if !response.ok { throw .daemon(response.error ?? "parleyd refused to stream events") }
        connection.clearTimeout()
        subscribed()
        while let line = try connection.readLine() {
            guard let event = try? ControlCodec.decode(ControlEvent.self, from: line) else {
                throw .malformed("not an event")
            }
            if !onEvent(event) { return }
        }
    }

    private func lineFor(_ request: ControlRequest) throws(ControlError) -> [UInt8] {
        do { return try ControlCodec.line(request) } catch { throw .system("could not encode the request: \(error)") }
    }
}

/// `struct ucred` of SO_PEERCRED (socket(7)); Glibc's module hides it behind _GNU_SOURCE.
private struct PeerCredentials {
    var pid: pid_t = 0
    var uid: uid_t = 0
    var gid: gid_t = 0
}

/// One connected Unix stream socket with a line reader.
private final class Connection {
    private let descriptor: Int32
    private let timeoutSeconds: Int
    private var buffer: [UInt8] = []

    init(path: String, timeoutSeconds: Int) throws(ControlError) {
        guard path.utf8.count <= ControlSocketPath.maximumLength else { throw .pathTooLong(path: path) }
        self.timeoutSeconds = timeoutSeconds
        descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw .system("could not create a socket: \(Self.errorText())") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { destination in
            for (index, byte) in path.utf8.enumerated() { destination[index] = byte }
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if result != 0 {
            let code = errno
            Glibc.close(descriptor)
            switch code {
            case ENOENT: throw .noDaemon(path: path)
            case ECONNREFUSED: throw .staleSocket(path: path)
            case EACCES, EPERM: throw .permissionDenied(path: path)
            default: throw .system("could not connect to \(path): \(String(cString: strerror(code)))")
            }
        }
        // Only our own daemon may hear our requests (a join carries the invite): whoever answers on
        // the socket must run as this user, whatever the socket file's permissions say.
        var credentials = PeerCredentials()
        var length = socklen_t(MemoryLayout<PeerCredentials>.size)
        guard getsockopt(descriptor, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0 else {
            let reason = Self.errorText()
            Glibc.close(descriptor)
            throw .system("cannot tell who serves \(path): \(reason)")
        }
        guard credentials.uid == geteuid() else {
            Glibc.close(descriptor)
            throw .foreignDaemon(path: path, daemonUser: credentials.uid, user: geteuid())
        }
        setTimeout(seconds: timeoutSeconds)
    }

    func close() { Glibc.close(descriptor) }

    func clearTimeout() { setTimeout(seconds: 0) }

    private func setTimeout(seconds: Int) {
        var time = timeval(tv_sec: seconds, tv_usec: 0)
        _ = setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(descriptor, SOL_SOCKET, SO_SNDTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
    }

    func write(_ bytes: [UInt8]) throws(ControlError) {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes {
                send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            if written < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { throw .timeout(seconds: timeoutSeconds) }
                throw .closed
            }
            offset += written
        }
    }

    /// The next line without its newline, or nil at end of stream.
    func readLine() throws(ControlError) -> [UInt8]? {
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(buffer[..<newline])
                buffer.removeFirst(newline + 1)
                return line
            }
            guard buffer.count <= ControlCodec.maximumLineLength else { throw .malformed("line too long") }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let count = chunk.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if count < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { throw .timeout(seconds: timeoutSeconds) }
                throw .closed
            }
            if count == 0 {
                return buffer.isEmpty
                    ? nil
                    : {
                        defer { buffer = [] }; return buffer
                    }()
            }
            buffer += chunk[..<count]
        }
    }

    private static func errorText() -> String { String(cString: strerror(errno)) }
}
