public import ParleyCore

/// The body of a transport packet of inner type 0x03 (docs/PROTOCOL.md §13.2): something a member
/// carries for two others over its own sessions with them.
///
/// ```
/// relay = kind: u8 || peer: identity_key[32] || payload
/// ```
/// - FORWARD (1), from an end to the relay: `peer` is the destination, `payload` one ICE-path
///   datagram (§8.1) of the sender's session with it.
/// - DELIVER (2), from the relay to the destination: `peer` is the source.
/// - FORWARD_ENVELOPE (3): `peer` is the destination, or 32 zero bytes for every member the relay
///   has a session with except the sender; `payload` is one signaling envelope (§6).
/// - DELIVER_ENVELOPE (4): `peer` is the member the envelope came from over the mesh.
/// - FAN_DELIVER (5, version 4 links only, §15.2): `peer` is the member who sent the frame,
///   `payload` its signed frame (`FanOutFrame`), passed on unchanged.
///
/// The relay reads none of the payloads: datagrams are sealed by the two ends' own session and
/// envelopes by their sender.
public struct RelayPacket: Sendable, Hashable {
    public enum Kind: UInt8, Sendable, Hashable {
        case forward = 1
        case deliver = 2
        case forwardEnvelope = 3
        case deliverEnvelope = 4
        case fanDeliver = 5

        public var carriesEnvelope: Bool { self == .forwardEnvelope || self == .deliverEnvelope }
    }

    public static let headerLength = 33
    /// The largest datagram a relay carries: a media payload (1200 bytes, §9.1) in a transport
    /// packet, with room to spare.
    public static let maximumDatagramLength = 1400
    /// The identity field of a FORWARD_ENVELOPE to everyone.
    public static let everyone = [UInt8](repeating: 0, count: 32)

    public var kind: Kind
    public var peer: [UInt8]
    public var payload: [UInt8]

    public init(kind: Kind, peer: [UInt8], payload: [UInt8]) {
        precondition(peer.count == 32, "an identity key is 32 bytes")
        self.kind = kind
        self.peer = peer
        self.payload = payload
    }

    public func encoded() -> [UInt8] {
        [kind.rawValue] + peer + payload
    }

    /// Parses a relay body; anything malformed is an error (the packet is dropped).
    public init(parsing body: some Collection<UInt8>) throws(WireFormatError) {
        var reader = ByteReader(Array(body))
        let rawKind = try reader.readU8("relay kind")
        guard let kind = Kind(rawValue: rawKind) else { throw WireFormatError("unknown relay kind \(rawKind)") }
        let peer = try reader.readBytes(32, "relay peer")
        let payload = reader.readRest()
        if kind == .fanDeliver {
            guard (FanOutFrame.minimumLength...FanOutFrame.maximumLength).contains(payload.count) else {
                throw WireFormatError("a fanned-out frame of \(payload.count) bytes is not a signed frame")
            }
            guard peer != Self.everyone else { throw WireFormatError("a fanned-out frame needs its sender") }
        } else if kind.carriesEnvelope {
            guard (Envelope.minimumLength...Envelope.maximumLength).contains(payload.count) else {
                throw WireFormatError("a relayed envelope of \(payload.count) bytes is not an envelope")
            }
        } else {
            guard (1...Self.maximumDatagramLength).contains(payload.count),
                PacketType(rawValue: payload[payload.startIndex]) != nil
            else { throw WireFormatError("a relayed datagram must be one ICE-path packet (§8.1)") }
            guard peer != Self.everyone else { throw WireFormatError("a relayed datagram needs a peer") }
        }
        self.kind = kind
        self.peer = peer
        self.payload = Array(payload)
    }
}
