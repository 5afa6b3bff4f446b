public import Sodium

/// The meeting's key schedule (docs/PROTOCOL.md §3): four independent keys derived from the
/// room secret with `crypto_kdf`, one context each. The rendezvous learns only `roomID` (the
/// public half of the room key) and join proofs; neither helps derive the others, which come from
/// the secret through distinct one-way derivations.
public struct RoomKeys: Sendable {
    /// `crypto_kdf` contexts (8 bytes each) and the subkey id used with every one of them.
    enum Context {
        static let roomKey = "parl-rid"
        static let signaling = "parl-sig"
        static let noisePSK = "parl-psk"
        static let mac = "parl-mac"
        static let subkeyID: UInt64 = 1
    }

    /// Ed25519 key pair from the `parl-rid` seed; signs join proofs.
    public let roomKey: Ed25519.KeyPair
    /// XChaCha20-Poly1305 key of signaling envelopes (§6).
    let signalingKey: SecureBytes
    /// The pre-shared key of the Noise handshake (§7).
    let noisePSK: SecureBytes
    /// Keys mac1 of handshake messages (§7.2), for rejection before any Diffie-Hellman.
    let macKey: SecureBytes

    /// The room id the rendezvous sees: the room key's public key.
    public var roomID: [UInt8] { roomKey.publicKey }

    /// Derives every key from a 32-byte room secret.
    public init(roomSecret: SecureBytes) throws(SodiumError) {
        func derive(_ context: String) throws(SodiumError) -> SecureBytes {
            try KDF.deriveKey(length: 32, id: Context.subkeyID, context: context, masterKey: roomSecret)
        }
        roomKey = try Ed25519.KeyPair(seed: derive(Context.roomKey))
        signalingKey = try derive(Context.signaling)
        noisePSK = try derive(Context.noisePSK)
        macKey = try derive(Context.mac)
    }

    /// Keys put together by hand: tests that need, say, the right MAC key with a wrong PSK.
    init(roomKey: Ed25519.KeyPair, signalingKey: SecureBytes, noisePSK: SecureBytes, macKey: SecureBytes) {
        self.roomKey = roomKey
        self.signalingKey = signalingKey
        self.noisePSK = noisePSK
        self.macKey = macKey
    }

    /// The keys of an invite's meeting.
    public init(invite: Invite) {
        // An invite's secret is always 32 bytes (checked when it was made or parsed).
        try! self.init(roomSecret: invite.roomSecret)
    }

    /// The proof for the rendezvous' CHALLENGE `nonce` (§3.3, §4.3).
    public func joinProof(nonce: [UInt8]) -> [UInt8] {
        JoinProof.make(nonce: nonce, roomKey: roomKey)
    }
}
