/// A network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`; a bare address is a single host),
/// as `--trusted-proxy` names the proxies whose word about a client's address is believed.
public struct IPNetwork: Hashable, Sendable, CustomStringConvertible {
    /// The network's first address (host bits cleared).
    public let address: InternetAddress
    public let prefixLength: Int

    /// Parses `ADDRESS/PREFIX` or `ADDRESS`. Host bits set in the address are cleared
    /// (`192.0.2.7/24` is `192.0.2.0/24`). An IPv4-mapped IPv6 network of at least /96 is the
    /// IPv4 network it maps, so it matches the IPv4 peers a dual-stack socket reports.
    public init?(parsing text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let parsed = InternetAddress(parsing: parts[0]) else { return nil }
        var address = parsed
        var length = address.bytes.count * 8
        if parts.count == 2 {
            let digits = parts[1].utf8
            guard (1...3).contains(digits.count), digits.allSatisfy({ (48...57).contains($0) }),
                digits.count == 1 || digits.first != 48, let value = Int(parts[1]), value <= length
            else { return nil }
            length = value
        }
        if address.bytes.count == 16, address.unmapped.isIPv4, length >= 96 {
            address = address.unmapped
            length -= 96
        }
        self.address = InternetAddress(bytes: Self.masked(address.bytes, length))!
        prefixLength = length
    }

    /// Whether `candidate` lies in this network (an IPv4-mapped address counts as its IPv4).
    public func contains(_ candidate: InternetAddress) -> Bool {
        let candidate = candidate.unmapped
        guard candidate.bytes.count == address.bytes.count else { return false }
        return Self.masked(candidate.bytes, prefixLength) == address.bytes
    }

    public var description: String { "\(address)/\(prefixLength)" }

    private static func masked(_ bytes: [UInt8], _ length: Int) -> [UInt8] {
        bytes.indices.map { index in
            let bits = min(8, max(0, length - 8 * index))
            return bits == 8 ? bytes[index] : bytes[index] & ~(0xFF >> UInt8(bits))
        }
    }
}
