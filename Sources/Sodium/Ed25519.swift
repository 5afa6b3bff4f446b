internal import CSodium

/// Ed25519 signatures (`crypto_sign_*`): identities, the room key, join proofs.
public enum Ed25519 {
    public static let publicKeyLength = Int(crypto_sign_PUBLICKEYBYTES)
    public static let seedLength = Int(crypto_sign_SEEDBYTES)
    public static let signatureLength = Int(crypto_sign_BYTES)

    /// An Ed25519 key pair. The secret part (libsodium's 64-byte seed‖public form) stays in
    /// `SecureBytes`.
    public struct KeyPair: Sendable {
        public let publicKey: [UInt8]
        let secretKey: SecureBytes

        /// The key pair determined by a 32-byte seed (`crypto_sign_seed_keypair`).
        public init(seed: SecureBytes) throws(SodiumError) {
            Sodium.ensureInitialized()
            guard seed.count == seedLength else {
                throw .wrongLength("Ed25519 seed", expected: seedLength, got: seed.count)
            }
            var publicKey = [UInt8](repeating: 0, count: publicKeyLength)
            var secretKey = SecureBytes(zeroedCount: Int(crypto_sign_SECRETKEYBYTES))
            secretKey.withUnsafeMutableBytes { secret in
                seed.withUnsafeBytes { seedBytes in
                    _ = crypto_sign_seed_keypair(
                        &publicKey, secret.bindMemory(to: UInt8.self).baseAddress!,
                        seedBytes.bindMemory(to: UInt8.self).baseAddress!)
                }
            }
            self.publicKey = publicKey
            self.secretKey = secretKey
        }

        /// A fresh random key pair.
        public static func generate() -> KeyPair {
            // A 32-byte seed is always the right length, so this cannot throw.
            try! KeyPair(seed: .random(count: seedLength))
        }

        /// The 32-byte seed this key pair was made from (to persist it).
        public var seed: SecureBytes {
            secretKey.withUnsafeBytes { SecureBytes(copying: UnsafeRawBufferPointer(rebasing: $0[0..<seedLength])) }
        }

        /// A detached signature over `message`.
        public func sign(_ message: some ReadableBytes) -> [UInt8] {
            var signature = [UInt8](repeating: 0, count: signatureLength)
            message.withUnsafeBytes { messageBytes in
                secretKey.withUnsafeBytes { secret in
                    _ = crypto_sign_detached(
                        &signature, nil, messageBytes.bindMemory(to: UInt8.self).baseAddress,
                        UInt64(messageBytes.count), secret.bindMemory(to: UInt8.self).baseAddress!)
                }
            }
            return signature
        }

        /// A detached signature over `message`, written to `signature` (64 bytes): for a thread
        /// that must not allocate (the audio capture thread signs fanned-out frames, PROTOCOL §15).
        public func sign(_ message: UnsafeRawBufferPointer, into signature: UnsafeMutableRawBufferPointer) {
            precondition(signature.count == signatureLength, "an Ed25519 signature is 64 bytes")
            secretKey.withUnsafeBytes { secret in
                _ = crypto_sign_detached(
                    signature.bindMemory(to: UInt8.self).baseAddress!, nil,
                    message.bindMemory(to: UInt8.self).baseAddress, UInt64(message.count),
                    secret.bindMemory(to: UInt8.self).baseAddress!)
            }
        }
    }

    /// Whether `signature` is a valid signature of `message` under `publicKey`.
    /// Wrong lengths are simply invalid.
    public static func isValidSignature(
        _ signature: some ReadableBytes, of message: some ReadableBytes, publicKey: some ReadableBytes
    ) -> Bool {
        Sodium.ensureInitialized()
        return signature.withUnsafeBytes { signatureBytes in
            message.withUnsafeBytes { messageBytes in
                publicKey.withUnsafeBytes { keyBytes in
                    guard signatureBytes.count == signatureLength, keyBytes.count == publicKeyLength else {
                        return false
                    }
                    return crypto_sign_verify_detached(
                        signatureBytes.bindMemory(to: UInt8.self).baseAddress!,
                        messageBytes.bindMemory(to: UInt8.self).baseAddress, UInt64(messageBytes.count),
                        keyBytes.bindMemory(to: UInt8.self).baseAddress!) == 0
                }
            }
        }
    }
}
