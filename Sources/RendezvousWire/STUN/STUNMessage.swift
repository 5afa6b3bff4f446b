/// A STUN message (RFC 8489 §5): a 20-byte header (type, length, magic cookie, transaction id)
/// and TLV attributes padded to 4 bytes. FINGERPRINT (§14.7) is checked on parsing and added on
/// encoding rather than kept as an attribute.
public struct STUNMessage: Hashable, Sendable {
    /// The 14-bit message type: method and class interleaved (§5).
    public var type: UInt16
    /// 96 bits chosen by the requester; the response echoes them.
    public var transactionID: [UInt8]
    /// Attributes in order, without FINGERPRINT.
    public var attributes: [STUNAttribute]
    /// Whether the message carries (or is to carry) a FINGERPRINT attribute.
    public var hasFingerprint: Bool

    public static let headerLength = 20
    public static let transactionIDLength = 12
    /// RFC 8489 §5: the fixed value that tells STUN from other protocols on the same port.
    public static let magicCookie: UInt32 = 0x2112_A442
    /// §14.7: the CRC is XORed with "STUN" so a CRC of a different protocol cannot match.
    static let fingerprintXOR: UInt32 = 0x5354_554E

    public init(type: UInt16, transactionID: [UInt8], attributes: [STUNAttribute] = [], hasFingerprint: Bool = true) {
        self.type = type
        self.transactionID = transactionID
        self.attributes = attributes
        self.hasFingerprint = hasFingerprint
    }

    /// The method (12 bits), e.g. 0x001 for Binding.
    public var method: UInt16 { (type & 0x000F) | (type & 0x00E0) >> 1 | (type & 0x3E00) >> 2 }
    /// The class (2 bits): request, indication, success or error response.
    public var messageClass: STUNClass { STUNClass(rawValue: UInt8((type & 0x0010) >> 4 | (type & 0x0100) >> 7))! }

    /// The message type for `method` and `messageClass` (§5, figure 3).
    public static func type(method: UInt16, class messageClass: STUNClass) -> UInt16 {
        let c = UInt16(messageClass.rawValue)
        return (method & 0x000F) | (method & 0x0070) << 1 | (method & 0x0F80) << 2 | (c & 1) << 4 | (c & 2) << 7
    }

    /// The first attribute of `type`, if any.
    public func attribute(_ type: UInt16) -> [UInt8]? {
        attributes.first { $0.type == type }?.value
    }
}

/// STUN message class (RFC 8489 §5).
public enum STUNClass: UInt8, Hashable, Sendable {
    case request = 0b00
    case indication = 0b01
    case successResponse = 0b10
    case errorResponse = 0b11
}

/// One STUN attribute: a 16-bit type and its value (unpadded).
public struct STUNAttribute: Hashable, Sendable {
    public var type: UInt16
    public var value: [UInt8]

    public init(type: UInt16, value: [UInt8]) {
        self.type = type
        self.value = value
    }

    public static let mappedAddress: UInt16 = 0x0001
    public static let username: UInt16 = 0x0006
    public static let messageIntegrity: UInt16 = 0x0008
    public static let errorCode: UInt16 = 0x0009
    public static let unknownAttributes: UInt16 = 0x000A
    public static let realm: UInt16 = 0x0014
    public static let nonce: UInt16 = 0x0015
    public static let messageIntegritySHA256: UInt16 = 0x001C
    public static let passwordAlgorithm: UInt16 = 0x001D
    public static let userhash: UInt16 = 0x001E
    public static let xorMappedAddress: UInt16 = 0x0020
    public static let software: UInt16 = 0x8022
    public static let fingerprint: UInt16 = 0x8028

    /// Types 0x0000–0x7FFF are comprehension-required (§14): an agent that does not know one must
    /// not process the message as if it were absent.
    public var isComprehensionRequired: Bool { type < 0x8000 }

    /// The comprehension-required attributes RFC 8489 §18.3.1 registers, which a Binding server
    /// understands (even when, like MESSAGE-INTEGRITY here without credentials, it ignores them).
    static let knownComprehensionRequired: Set<UInt16> = [
        mappedAddress, username, messageIntegrity, errorCode, unknownAttributes, realm, nonce,
        messageIntegritySHA256, passwordAlgorithm, userhash, xorMappedAddress,
    ]
}

// MARK: - Parsing and encoding

extension STUNMessage {
    /// Parses one datagram as a STUN message. Strict (§6.3): the top two bits must be zero, the
    /// magic cookie present, the length a multiple of 4 matching the datagram, attributes must
    /// exactly fill it, and a FINGERPRINT must be last and correct. Never traps.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(RendezvousWireError) -> STUNMessage {
        var reader = WireReader(bytes)
        let type = try reader.readU16("STUN message type")
        guard type & 0xC000 == 0 else { throw .invalid("STUN message type has its top two bits set") }
        let length = Int(try reader.readU16("STUN message length"))
        guard try reader.readU32("STUN magic cookie") == magicCookie else {
            throw .invalid("STUN magic cookie is missing (not RFC 5389/8489 STUN)")
        }
        let transactionID = try reader.readBytes(transactionIDLength, "STUN transaction id")
        guard length % 4 == 0 else { throw .invalid("STUN message length \(length) is not a multiple of 4") }
        guard length == reader.remaining else {
            throw .invalid(
                "STUN message length \(length) does not match the \(reader.remaining) bytes after the header")
        }
        var attributes: [STUNAttribute] = []
        var hasFingerprint = false
        while !reader.isAtEnd {
            let attributeStart = reader.offset
            let attributeType = try reader.readU16("STUN attribute type")
            let valueLength = Int(try reader.readU16("STUN attribute length"))
            let value = try reader.readBytes(valueLength, "STUN attribute value")
            _ = try reader.readBytes((4 - valueLength % 4) % 4, "STUN attribute padding")
            guard attributeType == STUNAttribute.fingerprint else {
                attributes.append(STUNAttribute(type: attributeType, value: value))
                continue
            }
            // §14.7: FINGERPRINT is last, and is the CRC of everything before it, with the
            // header's length already covering the FINGERPRINT attribute itself.
            guard reader.isAtEnd else { throw .invalid("STUN FINGERPRINT is not the last attribute") }
            guard valueLength == 4 else { throw .invalid("STUN FINGERPRINT is \(valueLength) bytes, not 4") }
            let received = UInt32(value[0]) << 24 | UInt32(value[1]) << 16 | UInt32(value[2]) << 8 | UInt32(value[3])
            guard CRC32.checksum(bytes[0..<attributeStart]) ^ fingerprintXOR == received else {
                throw .invalid("STUN FINGERPRINT does not match the message")
            }
            hasFingerprint = true
        }
        return STUNMessage(
            type: type, transactionID: transactionID, attributes: attributes, hasFingerprint: hasFingerprint)
    }

    public static func parse(_ bytes: [UInt8]) throws(RendezvousWireError) -> STUNMessage {
        try bytes.parse(with: parse)
    }

    /// The datagram, attributes zero-padded, with FINGERPRINT last when `hasFingerprint`.
    /// Values must fit their u16 lengths and the transaction id must be 12 bytes (traps otherwise).
    public func encoded() -> [UInt8] {
        precondition(transactionID.count == Self.transactionIDLength, "STUN transaction id must be 12 bytes")
        var body = WireWriter()
        for attribute in attributes {
            precondition(attribute.value.count <= Int(UInt16.max), "STUN attribute longer than 65,535 bytes")
            body.writeU16(attribute.type)
            body.writeU16(UInt16(attribute.value.count))
            body.writeBytes(attribute.value)
            body.writeBytes(repeatElement(0, count: (4 - attribute.value.count % 4) % 4))
        }
        let fingerprintLength = hasFingerprint ? 8 : 0
        precondition(body.bytes.count + fingerprintLength <= Int(UInt16.max), "STUN message too long")
        var message = WireWriter(capacity: Self.headerLength + body.bytes.count + fingerprintLength)
        message.writeU16(type)
        message.writeU16(UInt16(body.bytes.count + fingerprintLength))
        message.writeU32(Self.magicCookie)
        message.writeBytes(transactionID)
        message.writeBytes(body.bytes)
        guard hasFingerprint else { return message.bytes }
        let crc = CRC32.checksum(message.bytes) ^ Self.fingerprintXOR
        message.writeU16(STUNAttribute.fingerprint)
        message.writeU16(4)
        message.writeU32(crc)
        return message.bytes
    }
}
