import ParleyCore

/// The `X-Forwarded-For` header: the addresses a request passed through, the client (as the first
/// proxy saw it) first, each proxy appending the address it received the request from. Only the
/// entries written by trusted proxies are believed; anything to their left may be made up by
/// the client.
public enum ForwardedFor {
    /// The entries of every `X-Forwarded-For` line in order, leftmost first; nil for an entry
    /// that is not an address (`unknown`, an obfuscated identifier, garbage). Entries may carry a
    /// port (`192.0.2.1:4711`, `[2001:db8::1]:4711`), which is dropped; empty entries are skipped.
    public static func hops(_ values: [String]) -> [InternetAddress?] {
        var hops: [InternetAddress?] = []
        for entry in values.flatMap({ $0.split(separator: ",") }) {
            var text = entry[...]
            while text.first == " " || text.first == "\t" { text = text.dropFirst() }
            while text.last == " " || text.last == "\t" { text = text.dropLast() }
            if !text.isEmpty { hops.append(address(String(text))) }
        }
        return hops
    }

    private static func address(_ text: String) -> InternetAddress? {
        if let address = InternetAddress(parsing: text) { return address }
        // With a port: IPv6 in brackets, or IPv4 with one colon.
        guard let (host, port) = HostPortText.split(text) else { return nil }
        if let port {
            guard (1...5).contains(port.utf8.count), port.utf8.allSatisfy({ (48...57).contains($0) }) else {
                return nil
            }
        }
        return InternetAddress(parsing: host)
    }
}
