/// A TURN server suggested by the invite (docs/PROTOCOL.md §2.4): an RFC 7065 `turn:` or `turns:`
/// URI, with long-term credentials or none (then the rendezvous' WELCOME supplies them, §4.2).
public struct TURNHint: Sendable, Hashable, CustomStringConvertible {
    /// Canonical URI: `turn[s]:host[:port][?transport=udp|tcp]`.
    public let uri: String
    public let isTLS: Bool
    public let host: String
    public let explicitPort: UInt16?
    /// `udp` or `tcp` if the URI names one.
    public let transport: String?
    public let username: String
    public let password: String

    /// RFC 7065 §3.1: 3478 for turn:, 5349 for turns:.
    public var port: UInt16 { explicitPort ?? (isTLS ? 5349 : 3478) }
    public var hasCredentials: Bool { !username.isEmpty }

    public init(uri: String, username: String = "", password: String = "") throws(InviteError) {
        let lowered = uri.lowercased()
        let isTLS: Bool
        if lowered.hasPrefix("turns:") {
            isTLS = true
        } else if lowered.hasPrefix("turn:") {
            isTLS = false
        } else {
            throw .badTURNHint("\"\(uri)\" is not a turn: or turns: URI")
        }
        let rest = uri.dropFirst(isTLS ? 6 : 5)
        let parts = rest.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        var transport: String?
        if parts.count == 2 {
            switch parts[1].lowercased() {
            case "transport=udp": transport = "udp"
            case "transport=tcp": transport = "tcp"
            default: throw .badTURNHint("unknown query \"\(parts[1])\" (only transport=udp or transport=tcp)")
            }
        }
        let (host, port) = try HostAndPort.parse(parts[0], what: "TURN hint")
        guard username.utf8.count <= 255, password.utf8.count <= 255 else {
            throw .badTURNHint("user name and password are limited to 255 bytes each")
        }
        guard username.isEmpty == password.isEmpty else {
            throw .badTURNHint("give both a user name and a password, or neither")
        }
        let hostPart = host.contains(":") ? "[\(host)]" : host
        let canonical =
            (isTLS ? "turns:" : "turn:") + hostPart + (port.map { ":\($0)" } ?? "")
            + (transport.map { "?transport=\($0)" } ?? "")
        guard canonical.utf8.count <= 255 else { throw .badTURNHint("the URI is longer than 255 bytes") }
        self.uri = canonical
        self.isTLS = isTLS
        self.host = host
        explicitPort = port
        self.transport = transport
        self.username = username
        self.password = password
    }

    /// Never prints the password.
    public var description: String { hasCredentials ? "\(uri) (user \(username), password redacted)" : uri }
}
