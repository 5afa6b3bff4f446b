import ParleyCore

/// The rendezvous server an invite points to: `ws://` or `wss://`, a host (DNS name, IPv4, or
/// IPv6 in brackets), an optional port and an optional path (docs/PROTOCOL.md §2.3). Parsed
/// strictly: no user info, query or fragment.
public struct RendezvousURL: Sendable, Hashable, CustomStringConvertible {
    public enum Scheme: String, Sendable, Hashable {
        case ws, wss
        public var defaultPort: UInt16 { self == .ws ? 80 : 443 }
    }

    public let scheme: Scheme
    /// Lowercased; an IPv6 literal without its brackets.
    public let host: String
    /// The port written in the URL, if any.
    public let explicitPort: UInt16?
    /// `/` when the URL has no path.
    public let path: String

    public var port: UInt16 { explicitPort ?? scheme.defaultPort }
    /// The HTTP `Host` header for the WebSocket upgrade: the port only when it is not the default.
    public var hostHeader: String {
        let hostPart = isIPv6Literal ? "[\(host)]" : host
        return port == scheme.defaultPort ? hostPart : "\(hostPart):\(port)"
    }
    public var usesTLS: Bool { scheme == .wss }
    public var isIPv6Literal: Bool { host.contains(":") }

    /// The canonical form: lowercase scheme and host, the port only if it was written, the path
    /// only if it is not `/`.
    public var description: String {
        let hostPart = isIPv6Literal ? "[\(host)]" : host
        let portPart = explicitPort.map { ":\($0)" } ?? ""
        return "\(scheme.rawValue)://\(hostPart)\(portPart)\(path == "/" ? "" : path)"
    }

    public init(parsing text: String) throws(InviteError) {
        guard text.utf8.count <= 255 else { throw .badRendezvousURL("longer than 255 bytes") }
        guard let colon = text.firstIndex(of: ":"), text[colon...].hasPrefix("://") else {
            throw .badRendezvousURL("\"\(text)\" does not start with ws:// or wss://")
        }
        let schemeText = text[..<colon].lowercased()
        guard let scheme = Scheme(rawValue: schemeText) else {
            throw .badRendezvousURL("it must start with ws:// or wss://, not \(schemeText)://")
        }
        let rest = text[text.index(colon, offsetBy: 3)...]
        let authorityEnd = rest.firstIndex(where: { "/?#".contains($0) }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        let pathAndMore = rest[authorityEnd...]
        guard !pathAndMore.contains("?"), !pathAndMore.contains("#") else {
            throw .badRendezvousURL("a query (?) or fragment (#) is not allowed")
        }
        guard !authority.contains("@") else { throw .badRendezvousURL("user info (user@) is not allowed") }
        let (host, port) = try HostAndPort.parse(authority, what: "rendezvous URL")
        guard pathAndMore.isEmpty || Self.isValidPath(pathAndMore) else {
            throw .badRendezvousURL("the path \"\(pathAndMore)\" has characters a URL path cannot have")
        }
        self.scheme = scheme
        self.host = host
        explicitPort = port
        path = pathAndMore.isEmpty ? "/" : String(pathAndMore)
    }

    /// RFC 3986 §3.3: path characters are unreserved, sub-delims, ":", "@", "/" or %XX.
    private static func isValidPath(_ path: Substring) -> Bool {
        let bytes = Array(path.utf8)
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "%") {
                guard index + 2 < bytes.count, bytes[index + 1].isHexDigit, bytes[index + 2].isHexDigit else {
                    return false
                }
                index += 3
                continue
            }
            let allowed =
                byte.isASCIILetterOrDigit || Array("-._~!$&'()*+,;=:@/".utf8).contains(byte)
            guard allowed else { return false }
            index += 1
        }
        return true
    }
}

/// The `host[:port]` part of a URL (RFC 3986 §3.2.2, restricted): a DNS name or IPv4 address of
/// letters, digits, `-` and `.`, or an IPv6 literal in brackets.
enum HostAndPort {
    static func parse(_ authority: Substring, what: String) throws(InviteError) -> (host: String, port: UInt16?) {
        func fail(_ reason: String) -> InviteError {
            what == "rendezvous URL" ? .badRendezvousURL(reason) : .badTURNHint(reason)
        }
        guard let (host, portText) = HostPortText.split(String(authority)) else {
            throw fail(
                authority.hasPrefix("[")
                    ? "the IPv6 address needs a closing ] and nothing after it but :PORT"
                    : "\"\(authority)\" has more than one colon (an IPv6 address goes in brackets)")
        }
        if authority.hasPrefix("[") {
            guard host.contains(":"), host.count <= 45, host.utf8.allSatisfy({ $0.isHexDigit || $0 == 58 || $0 == 46 })
            else { throw fail("\"[\(host)]\" is not an IPv6 address") }
        } else {
            guard !host.isEmpty else { throw fail("it has no host") }
            guard host.utf8.count <= 253 else { throw fail("the host name is too long") }
            for label in host.split(separator: ".", omittingEmptySubsequences: false) {
                guard !label.isEmpty, label.utf8.count <= 63,
                    label.utf8.allSatisfy({ $0.isASCIILetterOrDigit || $0 == UInt8(ascii: "-") }),
                    !label.hasPrefix("-"), !label.hasSuffix("-")
                else { throw fail("\"\(host)\" is not a valid host name") }
            }
        }
        var port: UInt16?
        if let portText {
            guard !portText.isEmpty, portText.utf8.count <= 5, portText.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }),
                let value = UInt16(portText), value > 0
            else { throw fail("\"\(portText)\" is not a port number (1-65535)") }
            port = value
        }
        return (host.lowercased(), port)
    }
}

extension UInt8 {
    var isHexDigit: Bool {
        (48...57).contains(self) || (65...70).contains(self) || (97...102).contains(self)
    }
    var isASCIILetterOrDigit: Bool {
        (48...57).contains(self) || (65...90).contains(self) || (97...122).contains(self)
    }
}
