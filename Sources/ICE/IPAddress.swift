#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 address literal. Parsing is strict: dotted-quad IPv4 or RFC 4291 IPv6 text, no
/// host names, no zone ids (`%eth0`), no surrounding brackets. Addresses arrive from the network in
/// candidate lines, so anything else is refused rather than guessed at.
public struct IPAddress: Hashable, Sendable, CustomStringConvertible {
    /// 4 bytes (IPv4) or 16 bytes (IPv6), network order.
    public let bytes: [UInt8]

    public var isIPv4: Bool { bytes.count == 4 }

    /// Parses `text`; nil if it is not an address literal.
    public init?(_ text: some StringProtocol) {
        // inet_pton reads a C string: refuse anything it could truncate or misread (NUL, non-ASCII).
        guard !text.isEmpty, text.utf8.count <= 45,
            text.utf8.allSatisfy({ $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: ":") || Self.isHexDigit($0) })
        else { return nil }
        let string = String(text)
        if string.contains(":") {
            var address = in6_addr()
            guard inet_pton(AF_INET6, string, &address) == 1 else { return nil }
            bytes = withUnsafeBytes(of: &address) { Array($0) }
        } else {
            var address = in_addr()
            guard inet_pton(AF_INET, string, &address) == 1 else { return nil }
            bytes = withUnsafeBytes(of: &address) { Array($0) }
        }
    }

    /// From raw network-order bytes (4 or 16).
    public init?(bytes: [UInt8]) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    /// Canonical text (RFC 5952 for IPv6, as inet_ntop writes it).
    public var description: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        let family = isIPv4 ? AF_INET : AF_INET6
        let written = bytes.withUnsafeBytes { raw in
            inet_ntop(family, raw.baseAddress, &buffer, socklen_t(buffer.count))
        }
        precondition(written != nil, "inet_ntop failed on a valid \(bytes.count)-byte address")
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The IPv4 address inside an IPv4-mapped IPv6 address (::ffff:a.b.c.d), classified as itself.
    private var effectiveIPv4: [UInt8]? {
        if isIPv4 { return bytes }
        if bytes.prefix(10).allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff {
            return Array(bytes[12...])
        }
        return nil
    }

    /// 0.0.0.0 or :: (RFC 1122 §3.2.1.3, RFC 4291 §2.5.2): never a peer's address.
    public var isUnspecified: Bool { bytes.allSatisfy { $0 == 0 } || effectiveIPv4 == [0, 0, 0, 0] }

    /// 127.0.0.0/8 or ::1.
    public var isLoopback: Bool {
        if let v4 = effectiveIPv4 { return v4[0] == 127 }
        return bytes == [UInt8](repeating: 0, count: 15) + [1]
    }

    /// 169.254.0.0/16 (RFC 3927) or fe80::/10 (RFC 4291 §2.5.6).
    public var isLinkLocal: Bool {
        if let v4 = effectiveIPv4 { return v4[0] == 169 && v4[1] == 254 }
        return bytes[0] == 0xfe && bytes[1] & 0xc0 == 0x80
    }

    /// 224.0.0.0/4 or ff00::/8.
    public var isMulticast: Bool {
        if let v4 = effectiveIPv4 { return v4[0] & 0xf0 == 0xe0 }
        return bytes[0] == 0xff
    }

    /// 255.255.255.255 (limited broadcast) and the rest of 240.0.0.0/4 (reserved, RFC 1112 §4).
    public var isBroadcastOrReserved: Bool {
        if let v4 = effectiveIPv4 { return v4[0] & 0xf0 == 0xf0 }
        return false
    }

    private static func isHexDigit(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "f"),
            UInt8(ascii: "A")...UInt8(ascii: "F"):
            true
        default: false
        }
    }
}
