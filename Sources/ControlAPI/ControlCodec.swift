#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Newline-delimited JSON framing of the control API. JSON escapes newlines inside strings, so a
/// raw `\n` always ends a message.
public enum ControlCodec {
    /// The longest line either side accepts; longer input is a protocol error, not a memory sink.
    public static let maximumLineLength = 1 << 20

    /// `value` as one JSON line including the terminating newline.
    public static func line(_ value: some Encodable) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array(try encoder.encode(value)) + [UInt8(ascii: "\n")]
    }

    /// Decodes one line (with or without its newline).
    public static func decode<T: Decodable>(_ type: T.Type, from line: some Collection<UInt8>) throws -> T {
        var bytes = Array(line)
        if bytes.last == UInt8(ascii: "\n") { bytes.removeLast() }
        do {
            return try JSONDecoder().decode(type, from: Data(bytes))
        } catch {
            throw ControlError.malformed("not a valid \(T.self) message")
        }
    }

    /// Pretty JSON for people (`parley status --json`), stable key order.
    public static func prettyJSON(_ value: some Encodable) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }
}

/// Everything that can go wrong talking to the daemon, each with one clear line for the user.
public enum ControlError: Error, CustomStringConvertible, Equatable, Sendable {
    case noDaemon(path: String)
    case staleSocket(path: String)
    case permissionDenied(path: String)
    /// The process answering on the socket runs as another user (SO_PEERCRED): not our daemon.
    case foreignDaemon(path: String, daemonUser: UInt32, user: UInt32)
    case timeout(seconds: Int)
    case closed
    case malformed(String)
    case pathTooLong(path: String)
    case system(String)
    /// The daemon understood and refused the request; its message is shown as is.
    case daemon(String)

    public var description: String {
        switch self {
        case .noDaemon(let path):
            "parleyd is not running (no control socket at \(path)); start it with `parleyd` or pass --socket"
        case .staleSocket(let path):
            "parleyd is not running (\(path) is a stale socket left by a daemon that exited); start `parleyd`"
        case .permissionDenied(let path):
            "permission denied on \(path): the daemon belongs to another user"
        case .foreignDaemon(let path, let daemonUser, let user):
            "\(path) is served by user \(daemonUser), not by you (user \(user)): someone may be impersonating "
                + "parleyd; refusing to talk to it (remove the socket's directory and restart parleyd)"
        case .timeout(let seconds):
            "parleyd did not answer within \(seconds) s"
        case .closed:
            "parleyd closed the connection without answering"
        case .malformed(let what):
            "parleyd sent a malformed answer: \(what)"
        case .pathTooLong(let path):
            "control socket path is too long for a Unix socket (max 107 bytes): \(path)"
        case .system(let message):
            message
        case .daemon(let message):
            message
        }
    }
}
