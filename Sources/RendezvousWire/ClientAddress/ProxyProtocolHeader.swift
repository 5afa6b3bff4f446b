/// The PROXY protocol header (HAProxy's "The PROXY protocol", versions 1 and 2) that a TCP proxy
/// writes before the client's bytes, so the server behind it learns the client's address. Only a
/// trusted proxy's header is believed (`--trusted-proxy`): anyone else could claim any address.
public enum ProxyProtocolHeader {
    /// Version 2 starts with these 12 bytes (spec §2.2), which no HTTP request or TLS record can.
    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    /// Version 1 starts with `PROXY ` and is one line of at most 107 bytes, CRLF included (§2.1).
    static let v1Prefix: [UInt8] = Array("PROXY ".utf8)
    static let v1MaxLength = 107
    /// Version 2's header is 16 bytes plus a declared length of up to 65535; TLVs beyond this
    /// bound are not something a load balancer in front of a rendezvous sends.
    public static let v2MaxLength = 16 + 2048

    public enum Outcome: Hashable, Sendable {
        /// Too few bytes yet to tell (or to read the whole header).
        case needMoreBytes
        /// The stream does not start with a PROXY header: its bytes are the client's own.
        case absent
        /// A header of `length` bytes; `source` is the client's address, or nil when the proxy
        /// reports none (version 1 `UNKNOWN`, version 2 `LOCAL` such as its health checks, or a
        /// non-IP family): then the connection's own peer is the client.
        case header(length: Int, source: InternetAddress?)
    }

    /// Reads a header from the start of `bytes` (the first bytes the connection received).
    public static func parse(_ bytes: [UInt8]) throws(RendezvousWireError) -> Outcome {
        if startsLike(v2Signature, bytes) {
            return bytes.count < v2Signature.count ? .needMoreBytes : try parseV2(bytes)
        }
        if startsLike(v1Prefix, bytes) {
            return bytes.count < v1Prefix.count ? .needMoreBytes : try parseV1(bytes)
        }
        return .absent
    }

    /// Whether `bytes` and `signature` agree on their common length (and `bytes` is not empty).
    private static func startsLike(_ signature: [UInt8], _ bytes: [UInt8]) -> Bool {
        !bytes.isEmpty && bytes.prefix(signature.count).elementsEqual(signature.prefix(bytes.count))
    }

    /// `PROXY TCP4|TCP6 SOURCE DESTINATION SOURCE-PORT DESTINATION-PORT\r\n` or `PROXY UNKNOWN …\r\n`.
    private static func parseV1(_ bytes: [UInt8]) throws(RendezvousWireError) -> Outcome {
        let window = bytes.prefix(v1MaxLength)
        guard let end = window.indices.dropLast().first(where: { window[$0] == 13 && window[$0 + 1] == 10 }) else {
            if bytes.count >= v1MaxLength { throw .invalid("PROXY v1 header without CRLF in its first 107 bytes") }
            return .needMoreBytes
        }
        let line = String(decoding: bytes[..<end], as: UTF8.self)
        let fields = line.split(separator: " ", omittingEmptySubsequences: false)
        guard fields.count >= 2 else { throw .invalid("PROXY v1 header without a protocol") }
        if fields[1] == "UNKNOWN" { return .header(length: end + 2, source: nil) }
        guard fields.count == 6, fields[1] == "TCP4" || fields[1] == "TCP6" else {
            throw .invalid("PROXY v1 header is not TCP4, TCP6 or UNKNOWN with four fields")
        }
        let v4 = fields[1] == "TCP4"
        let addresses = fields[2...3].map { InternetAddress(parsing: $0) }
        guard let source = addresses[0], let destination = addresses[1], source.isIPv4 == v4,
            destination.isIPv4 == v4
        else { throw .invalid("PROXY v1 addresses are not \(v4 ? "IPv4" : "IPv6") addresses") }
        for port in fields[4...5] {
            guard (1...5).contains(port.utf8.count), port.utf8.allSatisfy({ (48...57).contains($0) }),
                let value = Int(port), value <= 65535
            else { throw .invalid("PROXY v1 port \"\(port)\" is not 0…65535") }
        }
        return .header(length: end + 2, source: source)
    }

    /// Signature, version and command, family and transport, length, addresses, TLVs (§2.2).
    private static func parseV2(_ bytes: [UInt8]) throws(RendezvousWireError) -> Outcome {
        guard bytes.count >= 16 else { return .needMoreBytes }
        let versionCommand = bytes[12]
        let family = bytes[13] >> 4
        let length = Int(bytes[14]) << 8 | Int(bytes[15])
        guard versionCommand >> 4 == 2 else { throw .invalid("PROXY v2 header of version \(versionCommand >> 4)") }
        let command = versionCommand & 0x0F
        guard command <= 1 else { throw .invalid("PROXY v2 command \(command) is neither LOCAL nor PROXY") }
        guard 16 + length <= v2MaxLength else {
            throw .invalid("PROXY v2 header of \(16 + length) bytes (at most \(v2MaxLength))")
        }
        guard bytes.count >= 16 + length else { return .needMoreBytes }
        // LOCAL: the proxy's own connection (a health check); addresses, if any, are ignored.
        guard command == 1 else { return .header(length: 16 + length, source: nil) }
        switch family {
        case 1:  // AF_INET: source, destination (4 bytes each), ports (2 each)
            guard length >= 12 else { throw .invalid("PROXY v2 IPv4 addresses need 12 bytes, header has \(length)") }
            return .header(length: 16 + length, source: InternetAddress(bytes: Array(bytes[16..<20])))
        case 2:  // AF_INET6: 16 + 16 + 2 + 2
            guard length >= 36 else { throw .invalid("PROXY v2 IPv6 addresses need 36 bytes, header has \(length)") }
            return .header(length: 16 + length, source: InternetAddress(bytes: Array(bytes[16..<32])))
        case 0, 3:  // AF_UNSPEC, AF_UNIX: no IP address to report
            return .header(length: 16 + length, source: nil)
        default:
            throw .invalid("PROXY v2 address family \(family) is unknown")
        }
    }
}
