import Testing

@testable import RendezvousWire

/// RFC 5769 test vectors (§2.1 request, §2.2 IPv4 response, §2.3 IPv6 response), and the Binding
/// responder's behaviour (RFC 8489 §6.3).
@Suite("STUN Binding (RFC 8489)")
struct STUNTests {
    static let transactionID = hex("b7e7a701 bc34d686 fa87dfae")

    /// RFC 5769 §2.1: SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME, MESSAGE-INTEGRITY, FINGERPRINT.
    static let sampleRequest = hex(
        """
        00010058 2112a442 b7e7a701 bc34d686 fa87dfae 80220010 5354554e 20746573 7420636c 69656e74
        00240004 6e0001ff 80290008 932ff9b1 51263b36 00060009 6576746a 3a683676 59202020 00080014
        9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2 80280004 e57a3bcf
        """)
    /// RFC 5769 §2.2: mapped address 192.0.2.1:32853.
    static let sampleIPv4Response = hex(
        """
        0101003c 2112a442 b7e7a701 bc34d686 fa87dfae 8022000b 74657374 20766563 746f7220 00200008
        0001a147 e112a643 00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7 80280004 c07d4c96
        """)
    /// RFC 5769 §2.3: mapped address [2001:db8:1234:5678:11:2233:4455:6677]:32853.
    static let sampleIPv6Response = hex(
        """
        01010048 2112a442 b7e7a701 bc34d686 fa87dfae 8022000b 74657374 20766563 746f7220 00200014
        0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9 00080014 a382954e 4be67bf1 1784c97c 8292c275
        bfe3ed41 80280004 c8fb0b4c
        """)

    @Test func rfc5769RequestParsesWithItsFingerprint() throws {
        let request = try STUNMessage.parse(Self.sampleRequest)
        #expect(request.hasFingerprint)
        #expect(request.messageClass == .request)
        #expect(request.method == 0x001)
        #expect(request.transactionID == Self.transactionID)
        #expect(request.attribute(STUNAttribute.software) == Array("STUN test client".utf8))
        #expect(request.attribute(STUNAttribute.username) == Array("evtj:h6vY".utf8))
    }

    @Test(arguments: [
        (sampleIPv4Response, "192.0.2.1:32853"),
        (sampleIPv6Response, "[2001:db8:1234:5678:11:2233:4455:6677]:32853"),
    ])
    func rfc5769ResponsesDecodeToTheirMappedAddress(vector: [UInt8], address: String) throws {
        let response = try STUNMessage.parse(vector)
        #expect(response.messageClass == .successResponse)
        let value = try #require(response.attribute(STUNAttribute.xorMappedAddress))
        let mapped = try #require(STUNBindingResponder.decodeXORMappedAddress(value, transactionID: Self.transactionID))
        #expect(mapped.description == address)
        // Our encoder produces the vector's bytes for the same address.
        #expect(STUNBindingResponder.xorMappedAddress(mapped, transactionID: Self.transactionID).value == value)
    }

    @Test func aFlippedBitBreaksTheFingerprint() {
        var corrupted = Self.sampleRequest
        corrupted[30] ^= 0x01
        #expect(throws: RendezvousWireError.invalid("STUN FINGERPRINT does not match the message")) {
            try STUNMessage.parse(corrupted)
        }
    }

    @Test func crc32CheckValue() {
        // The CRC catalogue's check value for CRC-32/ISO-HDLC: the CRC of "123456789".
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
    }

    struct Malformed: CustomTestStringConvertible, Sendable {
        let name: String
        let bytes: [UInt8]
        var testDescription: String { name }
    }

    static let malformed: [Malformed] = [
        Malformed(name: "empty", bytes: []),
        Malformed(name: "short header", bytes: hex("0001 0000 2112a442 b7e7a701")),
        Malformed(name: "top bits set", bytes: hex("c001 0000 2112a442") + transactionID),
        Malformed(
            name: "RFC 3489 request with CHANGE-REQUEST",
            bytes: hex("0001 0008 2112a443") + transactionID + hex("0003 0004 00000006")),
        Malformed(name: "RFC 3489 response", bytes: hex("0101 0000 2112a443") + transactionID),
        Malformed(name: "length not a multiple of 4", bytes: hex("0001 0002 2112a442") + transactionID + [0, 0]),
        Malformed(name: "length beyond the datagram", bytes: hex("0001 0008 2112a442") + transactionID + [0, 0, 0, 0]),
        Malformed(name: "attribute overruns", bytes: hex("0001 0004 2112a442") + transactionID + hex("8022 0004")),
        Malformed(
            name: "padding missing", bytes: hex("0001 0008 2112a442") + transactionID + hex("8022 0005 0102030405")),
        Malformed(
            name: "attribute after FINGERPRINT",
            bytes: hex("0001 0010 2112a442") + transactionID + hex("8028 0004 00000000 8022 0000 00000000")),
    ]

    @Test(arguments: malformed)
    func malformedDatagramsAreRejectedAndNotAnswered(_ row: Malformed) {
        #expect(throws: RendezvousWireError.self) { try STUNMessage.parse(row.bytes) }
        #expect(STUNBindingResponder.response(to: row.bytes, from: Self.source) == nil)
    }

    static let source = STUNTransportAddress(address: [203, 0, 113, 7], port: 50000)!

    @Test(arguments: [
        STUNTransportAddress(address: [203, 0, 113, 7], port: 50000)!,
        STUNTransportAddress(address: hex("20010db8000000000000000000000001"), port: 1)!,
    ])
    func bindingRequestGetsTheSourceAddress(source: STUNTransportAddress) throws {
        let request = STUNMessage(type: 0x0001, transactionID: Self.transactionID, hasFingerprint: false)
        let answer = try #require(STUNBindingResponder.response(to: request.encoded(), from: source))
        let response = try STUNMessage.parse(answer)
        #expect(response.type == 0x0101)
        #expect(response.transactionID == Self.transactionID)
        #expect(response.hasFingerprint)
        let value = try #require(response.attribute(STUNAttribute.xorMappedAddress))
        #expect(STUNBindingResponder.decodeXORMappedAddress(value, transactionID: Self.transactionID) == source)
    }

    /// What libnice sends to gather a server-reflexive candidate: an RFC 3489 request (no magic
    /// cookie, no attributes). RFC 8489 §11: copy the cookie field, answer with MAPPED-ADDRESS.
    @Test func classicRFC3489RequestGetsMappedAddress() throws {
        let classicID = hex("055ab655") + Self.transactionID
        let answer = try #require(
            STUNBindingResponder.response(to: hex("0001 0000") + classicID, from: Self.source))
        #expect(answer == hex("0101 000c") + classicID + hex("0001 0008 0001 c350 cb007107"))
        // No IPv6 in classic STUN: an IPv6 source is not answered.
        let v6 = STUNTransportAddress(address: hex("20010db8000000000000000000000001"), port: 1)!
        #expect(STUNBindingResponder.response(to: hex("0001 0000") + classicID, from: v6) == nil)
    }

    @Test func rfc5769RequestIsAnsweredDespiteItsICEAttributes() throws {
        // PRIORITY (0x0024) is comprehension-required and not ours: RFC 8489 §6.3.1 says 420.
        let answer = try #require(STUNBindingResponder.response(to: Self.sampleRequest, from: Self.source))
        let response = try STUNMessage.parse(answer)
        #expect(response.type == 0x0111)
        #expect(response.attribute(STUNAttribute.unknownAttributes) == hex("0024"))
        #expect(response.attribute(STUNAttribute.errorCode)?.prefix(4) == [0, 0, 4, 20])
    }

    @Test func unknownOptionalAttributesAreIgnored() throws {
        let request = STUNMessage(
            type: 0x0001, transactionID: Self.transactionID,
            attributes: [STUNAttribute(type: 0x8022, value: Array("x".utf8)), STUNAttribute(type: 0xC057, value: [1])])
        let response = try STUNMessage.parse(
            try #require(STUNBindingResponder.response(to: request.encoded(), from: Self.source)))
        #expect(response.type == 0x0101)
    }

    @Test(arguments: [
        STUNMessage.type(method: 0x001, class: .indication),
        STUNMessage.type(method: 0x001, class: .successResponse),
        STUNMessage.type(method: 0x001, class: .errorResponse),
        STUNMessage.type(method: 0x003, class: .request),  // TURN Allocate: coturn's job, not ours
    ])
    func onlyBindingRequestsAreAnswered(type: UInt16) {
        let message = STUNMessage(type: type, transactionID: Self.transactionID)
        #expect(STUNBindingResponder.response(to: message.encoded(), from: Self.source) == nil)
    }

    @Test func messageTypeInterleavesMethodAndClass() {
        #expect(STUNMessage.type(method: 0x001, class: .request) == 0x0001)
        #expect(STUNMessage.type(method: 0x001, class: .indication) == 0x0011)
        #expect(STUNMessage.type(method: 0x001, class: .successResponse) == 0x0101)
        #expect(STUNMessage.type(method: 0x001, class: .errorResponse) == 0x0111)
        #expect(STUNMessage.type(method: 0xFFF, class: .errorResponse) == 0x3FFF)
        let message = STUNMessage(type: 0x3EEF, transactionID: Self.transactionID)
        #expect(STUNMessage.type(method: message.method, class: message.messageClass) == 0x3EEF)
    }

    @Test func ipv4MappedIPv6SourceIsReportedAsIPv4() {
        let mapped = STUNTransportAddress(address: hex("00000000000000000000ffff cb007107"), port: 9)
        #expect(mapped == STUNTransportAddress(address: [203, 0, 113, 7], port: 9))
        #expect(STUNTransportAddress(address: [1, 2, 3], port: 9) == nil)
    }
}
