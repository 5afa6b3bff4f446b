import RendezvousWire
import Testing

@Suite("Rendezvous messages (docs/PROTOCOL.md §4.2)")
struct RendezvousMessageTests {
    struct Valid: CustomTestStringConvertible, Sendable {
        let name: String
        let bytes: [UInt8]
        let message: RendezvousMessage
        var testDescription: String { name }
    }

    static let nonce = [UInt8](0..<32)
    static let roomID = [UInt8](repeating: 0xAA, count: 32)
    static let proof = [UInt8](repeating: 0xBB, count: 64)

    static let valid: [Valid] = [
        Valid(name: "CHALLENGE", bytes: [0x01] + nonce, message: .challenge(nonce: nonce)),
        Valid(name: "JOIN", bytes: [0x02] + roomID + proof, message: .join(roomID: roomID, proof: proof)),
        Valid(
            name: "WELCOME alone, no services", bytes: hex("03 0000002a 00 00"),
            message: .welcome(RendezvousWelcome(memberID: 42, members: []))),
        Valid(
            name: "WELCOME with two members and a STUN service",
            bytes: hex("03 0000002a 02 00000001 ffffffff 01 01 0009") + Array("rv.ex:347".utf8),
            message: .welcome(
                RendezvousWelcome(memberID: 42, members: [1, 0xFFFF_FFFF], services: [.stun("rv.ex:347")]))
        ),
        Valid(
            name: "WELCOME with a TURN credential",
            bytes: hex("03 00000007 00 01 02 0012 00000e10 0003") + Array("t:h".utf8) + hex("0003") + Array("1:a".utf8)
                + hex("0002") + Array("pw".utf8),
            message: .welcome(
                RendezvousWelcome(
                    memberID: 7, members: [],
                    services: [.turn(TURNCredential(ttlSeconds: 3600, url: "t:h", username: "1:a", password: "pw"))]))
        ),
        Valid(
            name: "WELCOME keeps an unknown service kind",
            bytes: hex("03 00000007 00 02 7f 0002 beef 01 0003") + Array("h:1".utf8),
            message: .welcome(
                RendezvousWelcome(
                    memberID: 7, members: [], services: [.unknown(kind: 0x7F, value: [0xBE, 0xEF]), .stun("h:1")]))
        ),
        Valid(name: "MEMBER_JOINED", bytes: hex("04 01020304"), message: .memberJoined(0x0102_0304)),
        Valid(name: "MEMBER_LEFT", bytes: hex("05 00000001"), message: .memberLeft(1)),
        Valid(name: "SEND to everyone, empty", bytes: hex("06 00000000"), message: .send(to: 0, payload: [])),
        Valid(
            name: "SEND to one", bytes: hex("06 00000009 c0ffee"), message: .send(to: 9, payload: [0xC0, 0xFF, 0xEE])),
        Valid(name: "DELIVER", bytes: hex("07 00000009 00"), message: .deliver(from: 9, payload: [0])),
        Valid(
            name: "ERROR", bytes: hex("08 0003 0009") + Array("room full".utf8),
            message: .error(RendezvousError(.roomFull, "room full"))),
        Valid(
            name: "ERROR with a code from the future", bytes: hex("08 0400 0000"),
            message: .error(RendezvousError(RendezvousErrorCode(rawValue: 0x400), ""))),
        Valid(name: "GOING_AWAY", bytes: hex("09 000003e8"), message: .goingAway(retryAfterMilliseconds: 1000)),
    ]

    @Test(arguments: valid)
    func parsesAndEncodesExactly(_ row: Valid) throws {
        #expect(try RendezvousMessage.parse(row.bytes) == row.message)
        #expect(row.message.encoded() == row.bytes)
    }

    struct Invalid: CustomTestStringConvertible, Sendable {
        let name: String
        let bytes: [UInt8]
        let error: RendezvousWireError
        var testDescription: String { name }
    }

    static let invalid: [Invalid] = [
        Invalid(name: "empty", bytes: [], error: .empty),
        Invalid(name: "type 0", bytes: [0x00], error: .unknownType(0)),
        Invalid(name: "type 0x0a", bytes: hex("0a 00"), error: .unknownType(0x0A)),
        Invalid(
            name: "short CHALLENGE", bytes: [0x01] + [UInt8](repeating: 0, count: 31),
            error: .truncated(field: "CHALLENGE nonce", needed: 32, available: 31)),
        Invalid(
            name: "long CHALLENGE", bytes: [0x01] + [UInt8](repeating: 0, count: 33),
            error: .trailingBytes(message: "CHALLENGE", count: 1)),
        Invalid(
            name: "JOIN without proof", bytes: [0x02] + roomID,
            error: .truncated(field: "JOIN join_proof", needed: 64, available: 0)),
        Invalid(
            name: "JOIN with a byte too many", bytes: [0x02] + roomID + proof + [0],
            error: .trailingBytes(message: "JOIN", count: 1)),
        Invalid(
            name: "WELCOME own id 0", bytes: hex("03 00000000 00 00"),
            error: .zeroMemberID(field: "WELCOME member_id")),
        Invalid(
            name: "WELCOME lists member 0", bytes: hex("03 00000001 01 00000000 00"),
            error: .zeroMemberID(field: "WELCOME member_ids")),
        Invalid(name: "WELCOME lists itself", bytes: hex("03 00000001 01 00000001 00"), error: .duplicateMemberID(1)),
        Invalid(
            name: "WELCOME lists a member twice", bytes: hex("03 00000001 02 00000002 00000002 00"),
            error: .duplicateMemberID(2)),
        Invalid(
            name: "WELCOME says 2 members, has 1", bytes: hex("03 00000001 02 00000002"),
            error: .truncated(field: "WELCOME member_ids", needed: 4, available: 0)),
        Invalid(
            name: "WELCOME without services count", bytes: hex("03 00000001 00"),
            error: .truncated(field: "WELCOME services count", needed: 1, available: 0)),
        Invalid(
            name: "WELCOME service longer than the message", bytes: hex("03 00000001 00 01 01 0005 6869"),
            error: .truncated(field: "service value", needed: 5, available: 2)),
        Invalid(
            name: "WELCOME empty STUN", bytes: hex("03 00000001 00 01 01 0000"),
            error: .invalid("STUN service has an empty host:port")),
        Invalid(
            name: "WELCOME STUN not UTF-8", bytes: hex("03 00000001 00 01 01 0001 ff"),
            error: .invalidUTF8(field: "STUN host:port")),
        Invalid(
            name: "WELCOME TURN with trailing bytes",
            bytes: hex("03 00000001 00 01 02 000b 00000001 0000 0000 0000 00"),
            error: .trailingBytes(message: "TURN service", count: 1)),
        Invalid(
            name: "WELCOME TURN url overruns", bytes: hex("03 00000001 00 01 02 0007 00000001 0009 00"),
            error: .truncated(field: "TURN url", needed: 9, available: 1)),
        Invalid(
            name: "WELCOME with bytes after the services", bytes: hex("03 00000001 00 00 00"),
            error: .trailingBytes(message: "WELCOME", count: 1)),
        Invalid(
            name: "MEMBER_JOINED 0", bytes: hex("04 00000000"), error: .zeroMemberID(field: "MEMBER_JOINED member_id")),
        Invalid(
            name: "MEMBER_LEFT short", bytes: hex("05 000001"),
            error: .truncated(field: "MEMBER_LEFT member_id", needed: 4, available: 3)),
        Invalid(
            name: "SEND without to", bytes: hex("06 0000"), error: .truncated(field: "SEND to", needed: 4, available: 2)
        ),
        Invalid(name: "DELIVER from 0", bytes: hex("07 00000000 01"), error: .zeroMemberID(field: "DELIVER from")),
        Invalid(
            name: "ERROR reason overruns", bytes: hex("08 0001 0005 6869"),
            error: .truncated(field: "ERROR reason", needed: 5, available: 2)),
        Invalid(
            name: "ERROR reason not UTF-8", bytes: hex("08 0001 0002 c328"), error: .invalidUTF8(field: "ERROR reason")),
        Invalid(
            name: "ERROR with trailing bytes", bytes: hex("08 0001 0000 00"),
            error: .trailingBytes(message: "ERROR", count: 1)),
        Invalid(
            name: "GOING_AWAY long", bytes: hex("09 00000001 00"),
            error: .trailingBytes(message: "GOING_AWAY", count: 1)
        ),
    ]

    @Test(arguments: invalid)
    func rejectsWithAClearError(_ row: Invalid) {
        #expect(throws: row.error) { try RendezvousMessage.parse(row.bytes) }
    }

    @Test func errorDescriptionsNameTheField() {
        let error = RendezvousWireError.truncated(field: "JOIN join_proof", needed: 64, available: 3)
        #expect(error.description == "truncated: JOIN join_proof needs 64 bytes, 3 left")
        #expect(RendezvousWireError.unknownType(0x0A).description == "unknown message type 0x0a")
    }

    @Test func errorCodesHaveTheirSpecNames() {
        #expect(RendezvousErrorCode.allKnown.map(\.rawValue) == Array(1...10))
        #expect(
            RendezvousErrorCode.allKnown.map(\.name) == [
                "malformed", "bad-proof", "room-full", "rate-limited", "too-large", "too-many-connections", "timeout",
                "slow-reader", "unsupported", "misrouted",
            ])
        #expect(RendezvousErrorCode(rawValue: 77).name == "code-77")
        #expect(RendezvousErrorCode.allKnown.filter(\.isRetryable) == [.timeout, .slowReader])
    }

    @Test func turnPasswordIsRedactedWhenPrinted() {
        let credential = TURNCredential(ttlSeconds: 60, url: "turn:h:3478", username: "1:x", password: "s3cret")
        #expect(!"\(credential)".contains("s3cret"))
        #expect(!"\(RendezvousService.turn(credential))".contains("s3cret"))
    }
}
