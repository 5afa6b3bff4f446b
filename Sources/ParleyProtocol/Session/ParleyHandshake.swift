import ParleyCore
import Sodium

/// Why a handshake message was not accepted (docs/PROTOCOL.md §7.3). The receiver drops it.
public enum HandshakeRejection: Error, Hashable, Sendable, CustomStringConvertible {
    case malformed
    /// mac1 does not verify: not from this room, not for us, or altered. No Diffie-Hellman was done.
    case badMAC
    /// The Noise message did not decrypt (wrong PSK, keys or tampering).
    case noiseFailed
    /// The initiator's static key is not the one this link's peer announced.
    case wrongPeer
    /// The timestamp is not newer than the last accepted one: a replayed initiation.
    case replayedTimestamp
    /// A response to no initiation of ours.
    case unknownIndex

    public var description: String {
        switch self {
        case .malformed: "malformed handshake message"
        case .badMAC: "handshake message with a bad mac1"
        case .noiseFailed: "handshake message did not decrypt"
        case .wrongPeer: "handshake from an unexpected static key"
        case .replayedTimestamp: "replayed handshake initiation (old timestamp)"
        case .unknownIndex: "handshake response to no pending initiation"
        }
    }
}

/// The two transport keys a handshake yields, from this side's point of view, and the final
/// handshake hash (equal on both sides; for known-answer vectors and channel binding).
struct TransportKeys: Sendable {
    let send: SecureBytes
    let receive: SecureBytes
    var handshakeHash: [UInt8] = []
}

/// Parley's pairwise handshake, `Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b` with WireGuard's framing
/// (§7): stateless steps that `PeerSession` strings together, and known-answer vectors call
/// directly with fixed ephemerals.
enum ParleyHandshake {
    static let protocolName = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b"
    static let prologueContext: [UInt8] = Array("parley/v1/handshake\0".utf8)

    /// `"parley/v1/handshake\0" || version: u8 || room_id[32] || initiator_identity[32] ||
    /// responder_identity[32]`: binds the session to the protocol version, the room and the
    /// two identities (not just their static keys).
    static func prologue(version: UInt8, roomID: [UInt8], initiator: [UInt8], responder: [UInt8]) -> [UInt8] {
        prologueContext + [version] + roomID + initiator + responder
    }

    struct Initiation: Sendable {
        var noise: NoiseHandshakeState
        let localIndex: UInt32
        let packet: [UInt8]
    }

    /// Message 1 (`e, es, s, ss`, payload = TAI64N timestamp) to `peer`.
    static func initiate(
        local: NodeIdentity, peer: PeerIdentity, keys: RoomKeys, version: UInt8, localIndex: UInt32,
        timestamp: TAI64N, ephemeral: X25519.KeyPair? = nil
    ) -> Initiation {
        // The protocol name is fixed and supported, and the PSK is 32 bytes: this cannot throw.
        var noise = try! NoiseHandshakeState(
            protocolName: protocolName, isInitiator: true,
            prologue: prologue(
                version: version, roomID: keys.roomID, initiator: local.publicKey, responder: peer.identityKey),
            localStatic: local.staticKey, remoteStatic: peer.staticKey, psks: [keys.noisePSK],
            presetEphemerals: ephemeral.map { [$0] } ?? [])
        // Writing the first message with valid keys cannot fail.
        let noiseMessage = try! noise.writeMessage(payload: timestamp.bytes)
        let packet = HandshakePacket.header(.handshakeInitiation) + localIndex.bigEndianBytes + noiseMessage
        let mac1Key = HandshakePacket.mac1Key(macKey: keys.macKey, receiverStatic: peer.staticKey)
        return Initiation(
            noise: noise, localIndex: localIndex, packet: HandshakePacket.appendingMAC1(packet, key: mac1Key))
    }

    struct AcceptedInitiation: Sendable {
        var noise: NoiseHandshakeState
        let remoteIndex: UInt32
        let timestamp: TAI64N
    }

    /// Checks and reads message 1 from `peer`: `checkInitiation`, then `readInitiation`.
    static func acceptInitiation(
        _ packet: [UInt8], local: NodeIdentity, peer: PeerIdentity, keys: RoomKeys, version: UInt8,
        mac1Key: SecureBytes
    ) throws(HandshakeRejection) -> AcceptedInitiation {
        try checkInitiation(packet, mac1Key: mac1Key)
        return try readInitiation(packet, local: local, peer: peer, keys: keys, version: version)
    }

    /// What a responder checks before any Diffie-Hellman (§7.3 steps 1–2): the layout and mac1.
    static func checkInitiation(_ packet: [UInt8], mac1Key: SecureBytes) throws(HandshakeRejection) {
        guard packet.count == HandshakePacket.initiationLength,
            HandshakePacket.hasValidHeader(packet, .handshakeInitiation)
        else { throw .malformed }
        guard HandshakePacket.hasValidMAC1(packet, key: mac1Key) else { throw .badMAC }
    }

    /// Reads a message 1 that passed `checkInitiation` (two Diffie-Hellman operations, §7.3
    /// step 5): Noise, the initiator's static key, and the timestamp's syntax. Freshness of the
    /// timestamp is the caller's check.
    static func readInitiation(
        _ packet: [UInt8], local: NodeIdentity, peer: PeerIdentity, keys: RoomKeys, version: UInt8
    ) throws(HandshakeRejection) -> AcceptedInitiation {
        var noise = try! NoiseHandshakeState(
            protocolName: protocolName, isInitiator: false,
            prologue: prologue(
                version: version, roomID: keys.roomID, initiator: peer.identityKey, responder: local.publicKey),
            localStatic: local.staticKey, remoteStatic: nil, psks: [keys.noisePSK])
        let payload: [UInt8]
        do {
            payload = try noise.readMessage(Array(packet[8..<(8 + HandshakePacket.initiationNoiseLength)]))
        } catch {
            throw .noiseFailed
        }
        guard let remoteStatic = noise.remoteStatic, Sodium.constantTimeEqual(remoteStatic, peer.staticKey) else {
            throw .wrongPeer
        }
        guard let timestamp = TAI64N(bytes: payload) else { throw .malformed }
        let remoteIndex = packet[4..<8].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        return AcceptedInitiation(noise: noise, remoteIndex: remoteIndex, timestamp: timestamp)
    }

    /// Message 2 (`e, ee, se, psk`, empty payload) answering an accepted initiation, and the
    /// transport keys. Fails only if the initiator's ephemeral is a low-order point (the DH
    /// refuses an all-zero result).
    static func respond(
        to accepted: AcceptedInitiation, peer: PeerIdentity, keys: RoomKeys, localIndex: UInt32,
        ephemeral: X25519.KeyPair? = nil
    ) throws(HandshakeRejection) -> (packet: [UInt8], keys: TransportKeys) {
        var noise = accepted.noise
        if let ephemeral { noise.presetEphemeral(ephemeral) }
        guard let noiseMessage = try? noise.writeMessage(payload: [UInt8]()), let ciphers = noise.transportCiphers
        else {
            throw .noiseFailed
        }
        let packet =
            HandshakePacket.header(.handshakeResponse) + localIndex.bigEndianBytes + accepted.remoteIndex.bigEndianBytes
            + noiseMessage
        let mac1Key = HandshakePacket.mac1Key(macKey: keys.macKey, receiverStatic: peer.staticKey)
        return (
            HandshakePacket.appendingMAC1(packet, key: mac1Key),
            TransportKeys(send: ciphers.send.key!, receive: ciphers.receive.key!, handshakeHash: noise.handshakeHash)
        )
    }

    /// Reads message 2 for our pending `initiation`; the peer's index and the transport keys.
    static func acceptResponse(
        _ packet: [UInt8], initiation: Initiation, mac1Key: SecureBytes
    ) throws(HandshakeRejection) -> (remoteIndex: UInt32, keys: TransportKeys) {
        guard packet.count == HandshakePacket.responseLength, HandshakePacket.hasValidHeader(packet, .handshakeResponse)
        else { throw .malformed }
        let receiverIndex = packet[8..<12].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        guard receiverIndex == initiation.localIndex else { throw .unknownIndex }
        guard HandshakePacket.hasValidMAC1(packet, key: mac1Key) else { throw .badMAC }
        var noise = initiation.noise
        do {
            let payload = try noise.readMessage(Array(packet[12..<(12 + HandshakePacket.responseNoiseLength)]))
            guard payload.isEmpty else { throw HandshakeRejection.malformed }
        } catch {
            throw .noiseFailed
        }
        guard let ciphers = noise.transportCiphers else { throw .noiseFailed }
        let remoteIndex = packet[4..<8].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        return (
            remoteIndex,
            TransportKeys(send: ciphers.send.key!, receive: ciphers.receive.key!, handshakeHash: noise.handshakeHash)
        )
    }
}
