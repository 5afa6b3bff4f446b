/// An IPv4 (4 bytes) or IPv6 (16 bytes) address in network byte order, read from and written as
/// text. Strict: dotted-quad IPv4 without leading zeros (no octal guesses), IPv6 as RFC 4291 §2.2
/// writes it (one `::`, an IPv4 tail), no zone. For the addresses a trusted proxy reports
/// (`X-Forwarded-For`, the PROXY protocol) and the networks `--trusted-proxy` names. (The ICE
/// module's `IPAddress` parses with the C library; the rendezvous links no part of ICE, and this
/// parser of network input is pure Swift so that it can be fuzzed.)
public struct InternetAddress: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    public init?(parsing text: some StringProtocol) {
        let text = Substring(text)
        if let v4 = Self.parseIPv4(text) {
            bytes = v4
        } else if let v6 = Self.parseIPv6(text) {
            bytes = v6
        } else {
            return nil
        }
    }

    public var isIPv4: Bool { bytes.count == 4 }

    /// An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, as a dual-stack socket reports IPv4
    /// peers) as the IPv4 address it maps; any other address as it is.
    public var unmapped: InternetAddress {
        guard bytes.count == 16, bytes.prefix(12).elementsEqual(Self.mappedPrefix) else { return self }
        return InternetAddress(bytes: Array(bytes.suffix(4)))!
    }

    static let mappedPrefix: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]

    /// Dotted quad, or IPv6 in RFC 5952's canonical form (lowercase, the longest run of two or
    /// more zero groups as `::`, an IPv4-mapped address with its IPv4 tail).
    public var description: String {
        if isIPv4 { return bytes.map(String.init).joined(separator: ".") }
        if bytes.prefix(12).elementsEqual(Self.mappedPrefix) { return "::ffff:" + unmapped.description }
        let groups = (0..<8).map { UInt16(bytes[2 * $0]) << 8 | UInt16(bytes[2 * $0 + 1]) }
        var best = (start: -1, length: 0)
        var index = 0
        while index < 8 {
            guard groups[index] == 0 else {
                index += 1
                continue
            }
            var end = index
            while end < 8 && groups[end] == 0 { end += 1 }
            if end - index > best.length { best = (index, end - index) }
            index = end
        }
        let hex = groups.map { String($0, radix: 16) }
        guard best.length >= 2 else { return hex.joined(separator: ":") }
        let head = hex[..<best.start].joined(separator: ":")
        let tail = hex[(best.start + best.length)...].joined(separator: ":")
        return head + "::" + tail
    }

    // MARK: Parsing

    static func parseIPv4(_ text: Substring) -> [UInt8]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var bytes: [UInt8] = []
        for part in parts {
            let digits = part.utf8
            guard (1...3).contains(digits.count), digits.allSatisfy({ (48...57).contains($0) }),
                digits.count == 1 || digits.first != 48, let value = UInt8(part)
            else { return nil }
            bytes.append(value)
        }
        return bytes
    }

    static func parseIPv6(_ text: Substring) -> [UInt8]? {
        guard (2...45).contains(text.utf8.count) else { return nil }
        let characters = Array(text.utf8)
        // At most one "::"; everything before it is the head, after it the tail.
        // (":::" holds two overlapping ones, and is refused with the rest.)
        let doubleColons = (0..<(characters.count - 1)).filter { characters[$0] == 58 && characters[$0 + 1] == 58 }
        guard doubleColons.count <= 1 else { return nil }
        let groups: [UInt16]
        if let split = doubleColons.first {
            let head = Substring(decoding: characters[..<split], as: UTF8.self)
            let tail = Substring(decoding: characters[(split + 2)...], as: UTF8.self)
            guard let headGroups = Self.groups(head, ipv4Tail: false),
                let tailGroups = Self.groups(tail, ipv4Tail: true),
                headGroups.count + tailGroups.count <= 7
            else { return nil }
            groups = headGroups + [UInt16](repeating: 0, count: 8 - headGroups.count - tailGroups.count) + tailGroups
        } else {
            guard let all = Self.groups(text, ipv4Tail: true), all.count == 8 else { return nil }
            groups = all
        }
        return groups.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] }
    }

    /// The 16-bit groups of `part` (`a:b:c`, possibly ending in a dotted IPv4 address that counts
    /// as two groups); empty for an empty part; nil if any group is not 1 to 4 hex digits.
    private static func groups(_ part: Substring, ipv4Tail: Bool) -> [UInt16]? {
        guard !part.isEmpty else { return [] }
        let pieces = part.split(separator: ":", omittingEmptySubsequences: false)
        var groups: [UInt16] = []
        for (index, piece) in pieces.enumerated() {
            if ipv4Tail && index == pieces.count - 1 && piece.contains(".") {
                guard let v4 = parseIPv4(piece) else { return nil }
                groups += [UInt16(v4[0]) << 8 | UInt16(v4[1]), UInt16(v4[2]) << 8 | UInt16(v4[3])]
                continue
            }
            guard (1...4).contains(piece.utf8.count), piece.utf8.allSatisfy(\.isHexDigitASCII),
                let value = UInt16(piece, radix: 16)
            else { return nil }
            groups.append(value)
        }
        return groups
    }
}

extension UInt8 {
    var isHexDigitASCII: Bool {
        (48...57).contains(self) || (65...70).contains(self) || (97...102).contains(self)
    }
}
