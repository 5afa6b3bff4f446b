internal import CSodium

/// Anonymous public-key encryption to an X25519 key (`crypto_box_seal`): an ephemeral X25519 key,
/// XSalsa20-Poly1305, 48 bytes of overhead. Only the holder of the recipient's secret key can open
/// it; the sender stays anonymous (Parley signs around it).
public enum SealedBox {
    public static let overhead = crypto_box_sealbytes()

    /// `plaintext` sealed to `recipientPublicKey` (an X25519 public key).
    public static func seal(
        _ plaintext: some ReadableBytes, to recipientPublicKey: some ReadableBytes
    ) throws(SodiumError) -> [UInt8] {
        Sodium.ensureInitialized()
        let keyCount = recipientPublicKey.withUnsafeBytes { $0.count }
        guard keyCount == X25519.publicKeyLength else {
            throw .wrongLength("sealed box recipient key", expected: X25519.publicKeyLength, got: keyCount)
        }
        let result: (Int32, [UInt8]) = plaintext.withUnsafeBytes { message in
            recipientPublicKey.withUnsafeBytes { key in
                var output = [UInt8](repeating: 0, count: message.count + overhead)
                let status = crypto_box_seal(
                    &output, message.bindMemory(to: UInt8.self).baseAddress, UInt64(message.count),
                    key.bindMemory(to: UInt8.self).baseAddress!)
                return (status, output)
            }
        }
        guard result.0 == 0 else { throw SodiumError("sealed box encryption failed") }
        return result.1
    }

    /// Opens a sealed box with the recipient's key pair. Throws `authenticationFailed` if it was
    /// sealed to another key or altered.
    public static func open(
        _ ciphertext: some ReadableBytes, with recipient: X25519.KeyPair
    ) throws(SodiumError) -> [UInt8] {
        Sodium.ensureInitialized()
        let result: (Int32, [UInt8]) = ciphertext.withUnsafeBytes { sealed in
            guard sealed.count >= overhead else { return (-1, []) }
            var output = [UInt8](repeating: 0, count: sealed.count - overhead)
            let status = recipient.secretKey.withUnsafeBytes { secret in
                crypto_box_seal_open(
                    &output, sealed.bindMemory(to: UInt8.self).baseAddress!, UInt64(sealed.count), recipient.publicKey,
                    secret.bindMemory(to: UInt8.self).baseAddress!)
            }
            return (status, output)
        }
        guard result.0 == 0 else { throw .authenticationFailed }
        return result.1
    }
}
