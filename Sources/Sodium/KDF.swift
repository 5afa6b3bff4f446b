internal import CSodium

/// Subkey derivation from a master key (`crypto_kdf_derive_from_key`, libsodium ≥ 1.0.12).
/// In libsodium 1.0.18 this is exactly BLAKE2b with `key = masterKey`, an empty message,
/// `outlen = length`, `salt = LE64(id) || 8 zero bytes` and `personal = context || 8 zero bytes`,
/// which is how other implementations (e.g. Python's `hashlib.blake2b`) reproduce it.
public enum KDF {
    public static let masterKeyLength = Int(crypto_kdf_KEYBYTES)
    public static let contextLength = Int(crypto_kdf_CONTEXTBYTES)
    public static let minSubkeyLength = Int(crypto_kdf_BYTES_MIN)
    public static let maxSubkeyLength = Int(crypto_kdf_BYTES_MAX)

    /// The `length`-byte subkey number `id` of `masterKey` for `context` (exactly 8 ASCII bytes:
    /// distinct contexts give independent keys).
    public static func deriveKey(
        length: Int, id: UInt64, context: String, masterKey: SecureBytes
    ) throws(SodiumError) -> SecureBytes {
        Sodium.ensureInitialized()
        let contextBytes = Array(context.utf8)
        guard contextBytes.count == contextLength else {
            throw .wrongLength("KDF context", expected: contextLength, got: contextBytes.count)
        }
        guard masterKey.count == masterKeyLength else {
            throw .wrongLength("KDF master key", expected: masterKeyLength, got: masterKey.count)
        }
        guard (minSubkeyLength...maxSubkeyLength).contains(length) else {
            throw SodiumError("KDF subkey must be \(minSubkeyLength) to \(maxSubkeyLength) bytes, got \(length)")
        }
        var subkey = SecureBytes(zeroedCount: length)
        subkey.withUnsafeMutableBytes { out in
            masterKey.withUnsafeBytes { master in
                contextBytes.withUnsafeBufferPointer { context in
                    context.withMemoryRebound(to: CChar.self) { context in
                        _ = crypto_kdf_derive_from_key(
                            out.bindMemory(to: UInt8.self).baseAddress!, length, id, context.baseAddress!,
                            master.bindMemory(to: UInt8.self).baseAddress!)
                    }
                }
            }
        }
        return subkey
    }
}
