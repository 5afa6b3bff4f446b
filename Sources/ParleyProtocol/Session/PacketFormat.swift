import ParleyCore
import Sodium

/// The first byte of every Parley packet on an ICE path (docs/PROTOCOL.md §8.1).
public enum PacketType: UInt8, Sendable, Hashable, CaseIterable {
    case handshakeInitiation = 0x01
    case handshakeResponse = 0x02
    case transportData = 0x03
}

/// The first byte of a transport packet's plaintext (§8.3): what the rest of it is.
public struct InnerPacketType: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Empty body: keeps the session and the path alive, and confirms fresh keys (§8.3, §7.3).
    public static let keepalive = InnerPacketType(rawValue: 0x00)
    /// An audio frame (§9, audio).
    public static let media = InnerPacketType(rawValue: 0x01)
    /// A session control message (§10, node).
    public static let sessionControl = InnerPacketType(rawValue: 0x02)
    /// A packet relayed through this member for another pair, or to it from another member
    /// (§13, version 2 links only).
    public static let relay = InnerPacketType(rawValue: 0x03)
    /// A signed frame for the receiver to play and pass on to the others (§15.2, version 4 links
    /// only).
    public static let fanOut = InnerPacketType(rawValue: 0x04)

    /// Whether a link of protocol `version` carries this inner type (checked for every packet
    /// received: a comparison, not a set built each time).
    func isKnown(in version: UInt8) -> Bool {
        let highest =
            version >= 4 ? Self.fanOut.rawValue : version >= 2 ? Self.relay.rawValue : Self.sessionControl.rawValue
        return rawValue <= highest
    }

    public var description: String {
        switch self {
        case .keepalive: "keepalive"
        case .media: "media"
        case .sessionControl: "session-control"
        case .relay: "relay"
        case .fanOut: "fan-out"
        default: "inner-type-0x\(String(rawValue, radix: 16))"
        }
    }
}

/// The fixed layouts of the handshake messages (§7.2), WireGuard's with a Parley mac1:
///
/// ```
/// initiation (132) = 0x01 || 000000 || sender_index: u32 || ephemeral[32] || static[48] || timestamp[28] || mac1[16]
/// response    (76) = 0x02 || 000000 || sender_index: u32 || receiver_index: u32 || ephemeral[32] || empty[16] || mac1[16]
/// ```
enum HandshakePacket {
    static let initiationLength = 132
    static let responseLength = 76
    static let initiationNoiseLength = 32 + 48 + 28
    static let responseNoiseLength = 32 + 16
    static let mac1Length = 16
    static let mac1Context: [UInt8] = Array("parley/v1/mac1\0".utf8)

    /// The key of mac1 for messages to the holder of `receiverStatic`:
    /// `BLAKE2b-256(key = mac_key, "parley/v1/mac1\0" || receiver_static[32])`.
    static func mac1Key(macKey: SecureBytes, receiverStatic: [UInt8]) -> SecureBytes {
        // Output and key lengths are valid, so this cannot throw.
        let hasher = try! BLAKE2b.hasher(outputLength: 32, key: macKey)
        hasher.update(mac1Context)
        hasher.update(receiverStatic)
        return hasher.finalizeSecret()
    }

    /// `BLAKE2b-128(key = mac1_key, message without its mac1)`.
    static func mac1(_ messageWithoutMAC: some ReadableBytes, key: SecureBytes) -> [UInt8] {
        // Output and key lengths are valid, so this cannot throw.
        try! BLAKE2b.hash(messageWithoutMAC, outputLength: mac1Length, key: key)
    }

    /// Appends mac1 to a message built up to it.
    static func appendingMAC1(_ message: [UInt8], key: SecureBytes) -> [UInt8] {
        message + mac1(message, key: key)
    }

    /// Whether `packet` ends in a valid mac1 (constant-time comparison).
    static func hasValidMAC1(_ packet: [UInt8], key: SecureBytes) -> Bool {
        guard packet.count > mac1Length else { return false }
        return Sodium.constantTimeEqual(mac1(packet.dropLast(mac1Length), key: key), packet.suffix(mac1Length))
    }

    /// Type byte, then three reserved bytes that must be zero.
    static func header(_ type: PacketType) -> [UInt8] { [type.rawValue, 0, 0, 0] }
    static func hasValidHeader(_ packet: [UInt8], _ type: PacketType) -> Bool {
        packet.count >= 4 && packet[0] == type.rawValue && packet[1] == 0 && packet[2] == 0 && packet[3] == 0
    }
}

/// The transport data header (§8.2), authenticated as associated data:
/// `0x03 || 000000 || receiver_index: u32 || counter: u64` (16 bytes), then the ciphertext.
public struct TransportHeader: Sendable, Hashable {
    public static let length = 16
    /// Header, at least one byte of plaintext (the inner type), and the tag.
    public static let minimumPacketLength = length + 1 + ChaCha20Poly1305.tagLength

    public let receiverIndex: UInt32
    public let counter: UInt64

    /// Parses the header of a transport packet; nil unless the type is 0x03, the reserved bytes are
    /// zero and the packet is long enough to hold a tag and an inner type.
    public init?(packet: [UInt8]) {
        guard packet.count >= Self.minimumPacketLength, HandshakePacket.hasValidHeader(packet, .transportData) else {
            return nil
        }
        var reader = ByteReader(packet[4..<Self.length])
        // 12 bytes are there, so these reads cannot fail.
        receiverIndex = try! reader.readU32("receiver index")
        counter = try! reader.readU64("counter")
    }

    public init(receiverIndex: UInt32, counter: UInt64) {
        self.receiverIndex = receiverIndex
        self.counter = counter
    }

    /// Appends the 16 header bytes to `packet`.
    func write(into packet: inout [UInt8]) {
        packet.append(PacketType.transportData.rawValue)
        packet.append(0)
        packet.append(0)
        packet.append(0)
        for shift in stride(from: 24, through: 0, by: -8) {
            packet.append(UInt8(truncatingIfNeeded: receiverIndex >> shift))
        }
        for shift in stride(from: 56, through: 0, by: -8) { packet.append(UInt8(truncatingIfNeeded: counter >> shift)) }
    }
}
