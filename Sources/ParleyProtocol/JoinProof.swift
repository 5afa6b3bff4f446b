public import Sodium

/// The rendezvous join proof (docs/PROTOCOL.md §3): a signature by the room key over the server's
/// per-connection challenge nonce, so the server admits only holders of the room secret while
/// learning nothing but the room id (the room key's public half).
public enum JoinProof {
    public static let nonceLength = 32
    public static let roomIDLength = Ed25519.publicKeyLength
    public static let proofLength = Ed25519.signatureLength
    static let context: [UInt8] = Array("parley/v1/join\0".utf8)

    /// The bytes that are signed: context ‖ nonce ‖ room id.
    static func message(nonce: [UInt8], roomID: [UInt8]) -> [UInt8] {
        context + nonce + roomID
    }

    /// Signs the server's challenge `nonce` with the room key.
    public static func make(nonce: [UInt8], roomKey: Ed25519.KeyPair) -> [UInt8] {
        roomKey.sign(message(nonce: nonce, roomID: roomKey.publicKey))
    }

    /// Whether `proof` shows knowledge of the room key for `roomID` on the connection that was
    /// challenged with `nonce`. Malformed lengths are simply invalid.
    public static func verify(_ proof: [UInt8], nonce: [UInt8], roomID: [UInt8]) -> Bool {
        guard nonce.count == nonceLength, roomID.count == roomIDLength, proof.count == proofLength else {
            return false
        }
        return Ed25519.isValidSignature(proof, of: message(nonce: nonce, roomID: roomID), publicKey: roomID)
    }
}
