/// A member id: chosen at random by the server, non-zero, unique within a room while its member is
/// present, meaningless outside it (docs/PROTOCOL.md §4.2).
public typealias RendezvousMemberID = UInt32

/// One rendezvous protocol message (docs/PROTOCOL.md §4.2): the content of one binary WebSocket
/// message, `type: u8 || body`, all integers big-endian.
public enum RendezvousMessage: Hashable, Sendable {
    /// Server → client, right after the upgrade: the nonce the join proof must sign.
    case challenge(nonce: [UInt8])
    /// Client → server: the room to join and the proof of holding its key (§3).
    case join(roomID: [UInt8], proof: [UInt8])
    /// Server → client: admitted; own member id, the members already present, offered services.
    case welcome(RendezvousWelcome)
    case memberJoined(RendezvousMemberID)
    case memberLeft(RendezvousMemberID)
    /// Client → server: relay `payload` to member `to`, or to every other member when `to` is
    /// `RendezvousMessage.everyone`.
    case send(to: RendezvousMemberID, payload: [UInt8])
    /// Server → client: `payload` as sent by member `from`.
    case deliver(from: RendezvousMemberID, payload: [UInt8])
    /// Server → client: the connection is refused or ended; the server closes it next.
    case error(RendezvousError)
    /// Server → client: the server is shutting down; reconnect after `retryAfterMilliseconds`
    /// plus jitter (§4.3).
    case goingAway(retryAfterMilliseconds: UInt32)

    /// The SEND recipient meaning "every other member of the room".
    public static let everyone: RendezvousMemberID = 0
    public static let nonceLength = 32
    public static let roomIDLength = 32
    public static let proofLength = 64
    /// Bytes a SEND or DELIVER adds around its payload (type and member id).
    public static let relayHeaderLength = 5

    /// The message's type byte.
    public var type: RendezvousMessageType {
        switch self {
        case .challenge: .challenge
        case .join: .join
        case .welcome: .welcome
        case .memberJoined: .memberJoined
        case .memberLeft: .memberLeft
        case .send: .send
        case .deliver: .deliver
        case .error: .error
        case .goingAway: .goingAway
        }
    }
}

/// The type byte of a rendezvous message, and which side may send it.
public enum RendezvousMessageType: UInt8, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    case challenge = 0x01
    case join = 0x02
    case welcome = 0x03
    case memberJoined = 0x04
    case memberLeft = 0x05
    case send = 0x06
    case deliver = 0x07
    case error = 0x08
    case goingAway = 0x09

    /// Whether clients send this type (JOIN, SEND); every other type is sent by the server only.
    public var isClientToServer: Bool { self == .join || self == .send }

    public var description: String {
        switch self {
        case .challenge: "CHALLENGE"
        case .join: "JOIN"
        case .welcome: "WELCOME"
        case .memberJoined: "MEMBER_JOINED"
        case .memberLeft: "MEMBER_LEFT"
        case .send: "SEND"
        case .deliver: "DELIVER"
        case .error: "ERROR"
        case .goingAway: "GOING_AWAY"
        }
    }
}

/// The body of WELCOME.
public struct RendezvousWelcome: Hashable, Sendable {
    /// The id the server gave this connection.
    public var memberID: RendezvousMemberID
    /// The members present before this one joined, in no particular order.
    public var members: [RendezvousMemberID]
    public var services: [RendezvousService]

    public init(memberID: RendezvousMemberID, members: [RendezvousMemberID], services: [RendezvousService] = []) {
        self.memberID = memberID
        self.members = members
        self.services = services
    }
}

// MARK: - Encoding

extension RendezvousMessage {
    /// The wire bytes. Values must respect the field sizes of §4.2 (32-byte nonce and room id,
    /// 64-byte proof, at most 255 members and services, strings and service values of at most
    /// 65,535 bytes); a value built otherwise is a programming error and traps. Every message
    /// `parse` returns satisfies them, so `encoded()` of a parsed message gives its bytes back.
    public func encoded() -> [UInt8] {
        var writer = WireWriter(capacity: 16)
        writer.writeU8(type.rawValue)
        switch self {
        case .challenge(let nonce):
            precondition(nonce.count == Self.nonceLength, "CHALLENGE nonce must be 32 bytes")
            writer.writeBytes(nonce)
        case .join(let roomID, let proof):
            precondition(roomID.count == Self.roomIDLength && proof.count == Self.proofLength, "JOIN field sizes")
            writer.writeBytes(roomID)
            writer.writeBytes(proof)
        case .welcome(let welcome):
            precondition(welcome.members.count <= 255 && welcome.services.count <= 255, "WELCOME list sizes")
            writer.writeU32(welcome.memberID)
            writer.writeU8(UInt8(welcome.members.count))
            for member in welcome.members { writer.writeU32(member) }
            writer.writeU8(UInt8(welcome.services.count))
            for service in welcome.services {
                let value = service.value
                precondition(value.count <= Int(UInt16.max), "service value longer than 65,535 bytes")
                writer.writeU8(service.kind)
                writer.writeU16(UInt16(value.count))
                writer.writeBytes(value)
            }
        case .memberJoined(let member), .memberLeft(let member):
            writer.writeU32(member)
        case .send(let member, let payload), .deliver(let member, let payload):
            writer.writeU32(member)
            writer.writeBytes(payload)
        case .error(let error):
            writer.writeU16(error.code.rawValue)
            writer.writeLengthPrefixedUTF8(error.reason)
        case .goingAway(let retryAfter):
            writer.writeU32(retryAfter)
        }
        return writer.bytes
    }
}

// MARK: - Parsing

extension RendezvousMessage {
    /// Parses one whole message. Strict: every length must match exactly, member ids that name a
    /// member must be non-zero, strings must be valid UTF-8; anything else is an error that says
    /// what was wrong. Never traps, whatever the input.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(RendezvousWireError) -> RendezvousMessage {
        var reader = WireReader(bytes)
        guard !reader.isAtEnd else { throw .empty }
        let rawType = try reader.readU8("type")
        guard let type = RendezvousMessageType(rawValue: rawType) else { throw .unknownType(rawType) }
        let message: RendezvousMessage
        switch type {
        case .challenge:
            message = .challenge(nonce: try reader.readBytes(nonceLength, "CHALLENGE nonce"))
        case .join:
            let roomID = try reader.readBytes(roomIDLength, "JOIN room_id")
            message = .join(roomID: roomID, proof: try reader.readBytes(proofLength, "JOIN join_proof"))
        case .welcome:
            message = .welcome(try parseWelcome(&reader))
        case .memberJoined:
            message = .memberJoined(try readMemberID(&reader, "MEMBER_JOINED member_id"))
        case .memberLeft:
            message = .memberLeft(try readMemberID(&reader, "MEMBER_LEFT member_id"))
        case .send:
            // `to` may be 0 (everyone).
            let to = try reader.readU32("SEND to")
            message = .send(to: to, payload: reader.readRest())
        case .deliver:
            let from = try readMemberID(&reader, "DELIVER from")
            message = .deliver(from: from, payload: reader.readRest())
        case .error:
            let code = RendezvousErrorCode(rawValue: try reader.readU16("ERROR code"))
            let reason = try reader.readUTF8(Int(try reader.readU16("ERROR reason_length")), "ERROR reason")
            message = .error(RendezvousError(code, reason))
        case .goingAway:
            message = .goingAway(retryAfterMilliseconds: try reader.readU32("GOING_AWAY retry_after_ms"))
        }
        try reader.expectEnd(type.description)
        return message
    }

    /// Parses one whole message from an array.
    public static func parse(_ bytes: [UInt8]) throws(RendezvousWireError) -> RendezvousMessage {
        try bytes.parse(with: parse)
    }

    private static func readMemberID(
        _ reader: inout WireReader, _ field: StaticString
    ) throws(RendezvousWireError) -> RendezvousMemberID {
        let id = try reader.readU32(field)
        guard id != 0 else { throw .zeroMemberID(field: "\(field)") }
        return id
    }

    private static func parseWelcome(_ reader: inout WireReader) throws(RendezvousWireError) -> RendezvousWelcome {
        let own = try readMemberID(&reader, "WELCOME member_id")
        let count = Int(try reader.readU8("WELCOME n"))
        var members: [RendezvousMemberID] = []
        var seen: Set<RendezvousMemberID> = [own]
        for _ in 0..<count {
            let member = try readMemberID(&reader, "WELCOME member_ids")
            // Ids are unique within a room, and the list holds the *other* members.
            guard seen.insert(member).inserted else { throw .duplicateMemberID(member) }
            members.append(member)
        }
        let serviceCount = Int(try reader.readU8("WELCOME services count"))
        var services: [RendezvousService] = []
        for _ in 0..<serviceCount {
            let kind = try reader.readU8("service kind")
            let value = try reader.readBytes(Int(try reader.readU16("service length")), "service value")
            services.append(try RendezvousService.parse(kind: kind, value: value))
        }
        return RendezvousWelcome(memberID: own, members: members, services: services)
    }
}
