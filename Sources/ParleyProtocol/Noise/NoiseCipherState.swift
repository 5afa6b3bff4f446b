import Sodium

/// Why a Noise operation failed.
public struct NoiseError: Error, Hashable, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }

    /// A ciphertext (encrypted static key or payload) did not authenticate: wrong keys (e.g. a
    /// different room's PSK), a tampered message, or a message from a different handshake.
    public static let decryptFailed = NoiseError("handshake message did not authenticate")
    static func truncated(_ what: String) -> NoiseError { NoiseError("handshake message too short for \(what)") }
}

/// Noise CipherState (§5.1) for ChaChaPoly: a key `k` (possibly empty) and a nonce counter `n`.
/// The nonce is 32 zero bits then `n` little-endian (§12.3).
public struct NoiseCipherState: Sendable {
    public static let keyLength = 32
    public static let tagLength = ChaCha20Poly1305.tagLength

    /// The key, or nil before one was mixed in (then encryption is the identity, §5.1).
    private(set) var key: SecureBytes?
    private(set) var nonce: UInt64 = 0

    init(key: SecureBytes? = nil) {
        self.key = key
    }

    var hasKey: Bool { key != nil }

    /// The 12-byte ChaChaPoly nonce for counter `n`: 4 zero bytes, then `n` little-endian.
    static func nonceBytes(_ n: UInt64) -> [UInt8] {
        [0, 0, 0, 0] + (0..<8).map { UInt8(truncatingIfNeeded: n >> (8 * $0)) }
    }

    /// EncryptWithAd: ciphertext ‖ tag, or the plaintext itself without a key.
    mutating func encrypt(
        _ plaintext: some ReadableBytes, associatedData: some ReadableBytes
    ) throws(NoiseError) -> [UInt8] {
        guard let key else { return plaintext.withUnsafeBytes { Array($0) } }
        guard nonce < UInt64.max else { throw NoiseError("nonce exhausted") }
        defer { nonce += 1 }
        do {
            return try ChaCha20Poly1305.seal(
                plaintext, associatedData: associatedData, nonce: Self.nonceBytes(nonce), key: key)
        } catch {
            throw NoiseError("encryption failed: \(error)")
        }
    }

    /// DecryptWithAd; the nonce advances only when the ciphertext authenticates (§5.1).
    mutating func decrypt(
        _ ciphertext: some ReadableBytes, associatedData: some ReadableBytes
    ) throws(NoiseError) -> [UInt8] {
        guard let key else { return ciphertext.withUnsafeBytes { Array($0) } }
        guard nonce < UInt64.max else { throw NoiseError("nonce exhausted") }
        do {
            let plaintext = try ChaCha20Poly1305.open(
                ciphertext, associatedData: associatedData, nonce: Self.nonceBytes(nonce), key: key)
            nonce += 1
            return plaintext
        } catch {
            throw .decryptFailed
        }
    }
}

/// Noise SymmetricState (§5.2): chaining key `ck`, handshake hash `h` and the current CipherState.
struct NoiseSymmetricState: Sendable {
    let hashFunction: NoiseHash
    private(set) var chainingKey: SecureBytes
    private(set) var handshakeHash: [UInt8]
    private(set) var cipher = NoiseCipherState()

    /// InitializeSymmetric: `h` is the protocol name zero-padded to HASHLEN, or its hash if longer.
    init(protocolName: String, hash: NoiseHash) {
        hashFunction = hash
        let name = Array(protocolName.utf8)
        handshakeHash =
            name.count <= hash.length
            ? name + [UInt8](repeating: 0, count: hash.length - name.count) : hash.hash([name])
        chainingKey = SecureBytes(copying: handshakeHash)
    }

    mutating func mixKey(_ inputKeyMaterial: some ReadableBytes) {
        let outputs = hashFunction.hkdf(chainingKey: chainingKey, inputKeyMaterial: inputKeyMaterial, outputs: 2)
        chainingKey = outputs[0]
        cipher = NoiseCipherState(key: Self.truncatedKey(outputs[1]))
    }

    mutating func mixHash(_ data: some ReadableBytes) {
        handshakeHash = hashFunction.hash([handshakeHash, data])
    }

    mutating func mixKeyAndHash(_ inputKeyMaterial: some ReadableBytes) {
        let outputs = hashFunction.hkdf(chainingKey: chainingKey, inputKeyMaterial: inputKeyMaterial, outputs: 3)
        chainingKey = outputs[0]
        mixHash(outputs[1])
        cipher = NoiseCipherState(key: Self.truncatedKey(outputs[2]))
    }

    mutating func encryptAndHash(_ plaintext: some ReadableBytes) throws(NoiseError) -> [UInt8] {
        let ciphertext = try cipher.encrypt(plaintext, associatedData: handshakeHash)
        mixHash(ciphertext)
        return ciphertext
    }

    mutating func decryptAndHash(_ ciphertext: some ReadableBytes) throws(NoiseError) -> [UInt8] {
        let plaintext = try cipher.decrypt(ciphertext, associatedData: handshakeHash)
        mixHash(ciphertext)
        return plaintext
    }

    /// Split: the two transport CipherStates (initiator→responder first).
    func split() -> (NoiseCipherState, NoiseCipherState) {
        let outputs = hashFunction.hkdf(chainingKey: chainingKey, inputKeyMaterial: [UInt8](), outputs: 2)
        return (
            NoiseCipherState(key: Self.truncatedKey(outputs[0])), NoiseCipherState(key: Self.truncatedKey(outputs[1]))
        )
    }

    /// With HASHLEN 64, cipher keys are the first 32 bytes of an HKDF output (§5.2).
    private static func truncatedKey(_ output: SecureBytes) -> SecureBytes {
        output.withUnsafeBytes {
            SecureBytes(copying: UnsafeRawBufferPointer(rebasing: $0[0..<NoiseCipherState.keyLength]))
        }
    }
}
