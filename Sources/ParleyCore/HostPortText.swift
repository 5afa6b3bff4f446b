/// `host:port` as URLs, WELCOME's STUN service and the command lines write it: an IPv6 host in
/// brackets (`[2001:db8::1]:3478`), so the last colon is not a guess. The one splitter of such
/// text: invites (`RendezvousURL`), ICE server flags, the rendezvous's listen address and proxy
/// headers all use it and then judge the parts by their own rules.
public enum HostPortText {
    /// Splits `host:port`, `[v6]:port`, `host` or `[v6]` into the host (brackets removed) and the
    /// port text if there is one; nil when the text cannot be either (an unclosed bracket, text
    /// after it, or an IPv6 address without brackets). Callers judge the parts: whether a port is
    /// required, which numbers it may be, what an empty host means.
    public static func split(_ text: String) -> (host: Substring, port: Substring?)? {
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            let host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            if rest.isEmpty { return (host, nil) }
            guard rest.hasPrefix(":") else { return nil }
            return (host, rest.dropFirst())
        }
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        switch parts.count {
        case 1: return (parts[0], nil)
        case 2: return (parts[0], parts[1])
        default: return nil
        }
    }
}
