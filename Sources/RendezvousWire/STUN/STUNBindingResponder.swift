/// A transport address as STUN reports it: an IPv4 (4 bytes) or IPv6 (16 bytes) address and a port.
public struct STUNTransportAddress: Hashable, Sendable, CustomStringConvertible {
    /// 4 bytes for IPv4, 16 for IPv6, in network order.
    public let address: [UInt8]
    public let port: UInt16

    /// `nil` unless `address` is 4 or 16 bytes. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`,
    /// what a dual-stack socket reports for an IPv4 peer) becomes plain IPv4, as the peer sees it.
    public init?(address: [UInt8], port: UInt16) {
        switch address.count {
        case 4: self.address = address
        case 16 where address.prefix(12).elementsEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]):
            self.address = Array(address.suffix(4))
        case 16: self.address = address
        default: return nil
        }
        self.port = port
    }

    public var isIPv4: Bool { address.count == 4 }

    public var description: String {
        if isIPv4 { return address.map(String.init).joined(separator: ".") + ":\(port)" }
        let groups = stride(from: 0, to: 16, by: 2).map {
            String(UInt16(address[$0]) << 8 | UInt16(address[$0 + 1]), radix: 16)
        }
        return "[\(groups.joined(separator: ":"))]:\(port)"
    }
}

/// The STUN Binding server of RFC 8489 (§6.3, Binding method only, no authentication): answers a
/// Binding request with the source address it came from, so a node behind NAT learns its
/// server-reflexive candidate. Pure logic: the caller owns the socket.
public enum STUNBindingResponder {
    public static let bindingMethod: UInt16 = 0x001

    /// The response datagram to send back to `source`, or `nil` when the datagram must be dropped
    /// silently: not STUN, malformed, a bad FINGERPRINT, not a request, or not Binding (§6.3: a
    /// server discards what it cannot process, and answers only requests).
    public static func response(to datagram: UnsafeRawBufferPointer, from source: STUNTransportAddress) -> [UInt8]? {
        guard let request = try? STUNMessage.parse(datagram) else {
            return classicResponse(to: datagram, from: source)
        }
        guard request.messageClass == .request, request.method == bindingMethod else { return nil }
        // §6.3.1: unknown comprehension-required attributes get a 420 error listing them.
        let unknown = request.attributes.filter {
            $0.isComprehensionRequired && !STUNAttribute.knownComprehensionRequired.contains($0.type)
        }.map(\.type)
        if !unknown.isEmpty {
            return unknownAttributesError(for: request, unknown: unknown).encoded()
        }
        // §7.3.1: the success response carries XOR-MAPPED-ADDRESS; FINGERPRINT (§14.7) lets a
        // client that multiplexes STUN with other traffic on one port tell it apart.
        return STUNMessage(
            type: STUNMessage.type(method: bindingMethod, class: .successResponse),
            transactionID: request.transactionID,
            attributes: [xorMappedAddress(source, transactionID: request.transactionID)],
            hasFingerprint: true
        ).encoded()
    }

    /// The answer to an RFC 3489 ("classic") client, whose request has no magic cookie: RFC 8489
    /// §11 says a server should answer it with the cookie field copied and MAPPED-ADDRESS instead
    /// of XOR-MAPPED-ADDRESS. libnice gathers server-reflexive candidates this way, so without it
    /// nodes behind NAT learn no srflx candidate from the rendezvous (measured: two cone NATs never
    /// connected). Only the plain request is answered: an IPv4 source (classic STUN has no IPv6) and
    /// no attributes, so RESPONSE-ADDRESS (send the answer elsewhere: a reflector) and CHANGE-REQUEST
    /// (we have one address) never need deciding.
    static func classicResponse(to datagram: UnsafeRawBufferPointer, from source: STUNTransportAddress) -> [UInt8]? {
        let bindingRequest: [UInt8] = [0x00, 0x01, 0x00, 0x00]  // type 0x0001, length 0
        guard datagram.count == STUNMessage.headerLength, source.isIPv4,
            datagram.prefix(4).elementsEqual(bindingRequest)
        else { return nil }
        var writer = WireWriter(capacity: STUNMessage.headerLength + 12)
        writer.writeU16(STUNMessage.type(method: bindingMethod, class: .successResponse))
        writer.writeU16(12)  // one attribute: 4-byte header + 8-byte IPv4 MAPPED-ADDRESS
        writer.writeBytes(Array(datagram[4..<STUNMessage.headerLength]))  // 128-bit RFC 3489 transaction id
        writer.writeU16(STUNAttribute.mappedAddress)
        writer.writeU16(8)
        writer.writeBytes(addressValue(isIPv4: true, port: source.port, address: source.address))
        return writer.bytes
    }

    public static func response(to datagram: [UInt8], from source: STUNTransportAddress) -> [UInt8]? {
        datagram.withUnsafeBytes { response(to: $0, from: source) }
    }

    /// XOR-MAPPED-ADDRESS (§14.2): the port XORed with the cookie's top 16 bits, the address with
    /// the cookie (IPv4) or the cookie and transaction id (IPv6), so NATs that rewrite addresses
    /// they find in payloads leave it alone.
    public static func xorMappedAddress(_ address: STUNTransportAddress, transactionID: [UInt8]) -> STUNAttribute {
        let value = addressValue(
            isIPv4: address.isIPv4, port: address.port ^ UInt16(STUNMessage.magicCookie >> 16),
            address: zip(address.address, xorMask(transactionID)).map { $0 ^ $1 })
        return STUNAttribute(type: STUNAttribute.xorMappedAddress, value: value)
    }

    /// The value layout MAPPED-ADDRESS and XOR-MAPPED-ADDRESS share (§14.1, §14.2): a zero byte,
    /// the family (1 IPv4, 2 IPv6), the port, the address — XORed or not by the caller.
    private static func addressValue(isIPv4: Bool, port: UInt16, address: [UInt8]) -> [UInt8] {
        var writer = WireWriter(capacity: 20)
        writer.writeU8(0)
        writer.writeU8(isIPv4 ? 0x01 : 0x02)
        writer.writeU16(port)
        writer.writeBytes(address)
        return writer.bytes
    }

    /// Decodes an XOR-MAPPED-ADDRESS value (the client side, and tests).
    public static func decodeXORMappedAddress(_ value: [UInt8], transactionID: [UInt8]) -> STUNTransportAddress? {
        guard value.count == 8 || value.count == 20, value[1] == (value.count == 8 ? 0x01 : 0x02) else { return nil }
        let port = (UInt16(value[2]) << 8 | UInt16(value[3])) ^ UInt16(STUNMessage.magicCookie >> 16)
        return STUNTransportAddress(address: zip(value[4...], xorMask(transactionID)).map { $0 ^ $1 }, port: port)
    }

    private static func xorMask(_ transactionID: [UInt8]) -> [UInt8] {
        let cookie = STUNMessage.magicCookie
        return [UInt8(cookie >> 24), UInt8(cookie >> 16 & 0xFF), UInt8(cookie >> 8 & 0xFF), UInt8(cookie & 0xFF)]
            + transactionID
    }

    /// A 420 (Unknown Attribute) error response (§6.3.1.1, §14.8, §14.9).
    private static func unknownAttributesError(for request: STUNMessage, unknown: [UInt16]) -> STUNMessage {
        var errorCode = WireWriter()
        errorCode.writeU16(0)
        errorCode.writeU8(4)  // class: hundreds digit
        errorCode.writeU8(20)  // number: the rest
        errorCode.writeBytes("Unknown Attribute".utf8)
        var list = WireWriter()
        for type in unknown { list.writeU16(type) }
        return STUNMessage(
            type: STUNMessage.type(method: bindingMethod, class: .errorResponse),
            transactionID: request.transactionID,
            attributes: [
                STUNAttribute(type: STUNAttribute.errorCode, value: errorCode.bytes),
                STUNAttribute(type: STUNAttribute.unknownAttributes, value: list.bytes),
            ],
            hasFingerprint: true
        )
    }
}
