/// A rendezvous URL (docs/PROTOCOL.md §4.1): `ws://` or `wss://`, a host (IPv6 in brackets), an
/// optional port (80 / 443 by default) and path (`/` when absent).
public struct RendezvousURL: Sendable, Hashable, CustomStringConvertible {
    public let usesTLS: Bool
    /// The host as written, without brackets for IPv6.
    public let host: String
    public let port: Int
    public let path: String

    public init(_ text: String) throws(RendezvousClientError) {
        let rest: Substring
        if text.hasPrefix("ws://") {
            usesTLS = false
            rest = text.dropFirst(5)
        } else if text.hasPrefix("wss://") {
            usesTLS = true
            rest = text.dropFirst(6)
        } else {
            throw .invalidURL("\(text): a rendezvous URL starts with ws:// or wss://")
        }
        let authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        let afterAuthority = rest[authority.endIndex...]
        let pathEnd = afterAuthority.firstIndex { $0 == "#" } ?? afterAuthority.endIndex
        path =
            afterAuthority.isEmpty || afterAuthority.first != "/"
            ? "/" + afterAuthority[..<pathEnd] : String(afterAuthority[..<pathEnd])
        var hostPart = authority
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw .invalidURL("\(text): unclosed IPv6 bracket") }
            hostPart = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") {
                portText = after.dropFirst()
            } else if !after.isEmpty {
                throw .invalidURL("\(text): unexpected text after the IPv6 address")
            }
        } else if let colon = authority.lastIndex(of: ":") {
            hostPart = authority[..<colon]
            portText = authority[authority.index(after: colon)...]
        }
        guard !hostPart.isEmpty, !hostPart.contains("@") else { throw .invalidURL("\(text): no host") }
        host = String(hostPart)
        if let portText {
            guard let port = Int(portText), (1...65535).contains(port) else { throw .invalidURL("\(text): bad port") }
            self.port = port
        } else {
            port = usesTLS ? 443 : 80
        }
    }

    /// The HTTP `Host` header value.
    public var hostHeader: String {
        let host = self.host.contains(":") ? "[\(self.host)]" : self.host
        return port == (usesTLS ? 443 : 80) ? host : "\(host):\(port)"
    }

    public var description: String { "\(usesTLS ? "wss" : "ws")://\(hostHeader)\(path)" }
}
