internal import CSodium

/// X25519 Diffie-Hellman (RFC 7748, `crypto_scalarmult`): node static keys, Noise ephemerals.
public enum X25519 {
    public static let publicKeyLength = Int(crypto_scalarmult_BYTES)
    public static let secretKeyLength = Int(crypto_scalarmult_SCALARBYTES)
    public static let sharedSecretLength = Int(crypto_scalarmult_BYTES)

    /// An X25519 key pair; the secret scalar stays in `SecureBytes`.
    public struct KeyPair: Sendable {
        public let publicKey: [UInt8]
        /// The 32-byte secret scalar (to persist it). libsodium clamps it on use (RFC 7748 §5).
        public let secretKey: SecureBytes

        /// The key pair of a 32-byte secret scalar (`crypto_scalarmult_base`).
        public init(secretKey: SecureBytes) throws(SodiumError) {
            Sodium.ensureInitialized()
            guard secretKey.count == secretKeyLength else {
                throw .wrongLength("X25519 secret key", expected: secretKeyLength, got: secretKey.count)
            }
            var publicKey = [UInt8](repeating: 0, count: publicKeyLength)
            let result = secretKey.withUnsafeBytes { secret in
                crypto_scalarmult_base(&publicKey, secret.bindMemory(to: UInt8.self).baseAddress!)
            }
            guard result == 0 else { throw SodiumError("X25519 public key derivation failed") }
            self.publicKey = publicKey
            self.secretKey = secretKey
        }

        /// A fresh random key pair.
        public static func generate() -> KeyPair {
            // A 32-byte random scalar is always the right length, so this cannot throw.
            try! KeyPair(secretKey: .random(count: secretKeyLength))
        }

        /// The shared secret with `theirPublicKey`. Throws for a wrong-length key and for a
        /// low-order point (an all-zero result, which libsodium refuses: RFC 7748 §6.1 allows
        /// such a check, and a contributory result is what Noise and WireGuard rely on).
        public func sharedSecret(with theirPublicKey: some ReadableBytes) throws(SodiumError) -> SecureBytes {
            var shared = SecureBytes(zeroedCount: sharedSecretLength)
            let result: Int32 = theirPublicKey.withUnsafeBytes { theirs in
                guard theirs.count == publicKeyLength else { return -2 }
                return secretKey.withUnsafeBytes { secret in
                    shared.withUnsafeMutableBytes { out in
                        crypto_scalarmult(
                            out.bindMemory(to: UInt8.self).baseAddress!,
                            secret.bindMemory(to: UInt8.self).baseAddress!,
                            theirs.bindMemory(to: UInt8.self).baseAddress!)
                    }
                }
            }
            switch result {
            case 0: return shared
            case -2:
                throw .wrongLength(
                    "X25519 public key", expected: publicKeyLength,
                    got: theirPublicKey.withUnsafeBytes { $0.count })
            default: throw SodiumError("X25519 produced an all-zero shared secret (low-order public key)")
            }
        }
    }
}
