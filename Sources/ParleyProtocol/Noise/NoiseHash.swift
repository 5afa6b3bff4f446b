import Sodium

/// A Noise hash function with the HMAC and HKDF built on it (Noise §4.3). libsodium has no
/// HMAC-BLAKE2b, so HMAC (RFC 2104) is built here from the multi-part hash, for every suite alike:
/// the SHA-256 and SHA-512 test vectors then check the same code the BLAKE2b suite runs.
public struct NoiseHash: Sendable {
    /// The name in a Noise protocol name (`BLAKE2b`, `SHA256`, `SHA512`).
    public let name: String
    /// HASHLEN.
    public let length: Int
    /// BLOCKLEN, HMAC's block size.
    let blockLength: Int
    private let makeHasher: @Sendable () -> MultipartHasher

    /// BLAKE2b with a 64-byte output (HASHLEN 64, BLOCKLEN 128).
    public static let blake2b = NoiseHash(name: "BLAKE2b", length: 64, blockLength: BLAKE2b.blockLength) {
        // 64 is a valid BLAKE2b output length, so this cannot throw.
        try! BLAKE2b.hasher(outputLength: 64)
    }
    public static let sha256 = NoiseHash(name: "SHA256", length: SHA256.outputLength, blockLength: SHA256.blockLength) {
        SHA256.hasher()
    }
    public static let sha512 = NoiseHash(name: "SHA512", length: SHA512.outputLength, blockLength: SHA512.blockLength) {
        SHA512.hasher()
    }
    public static let all: [NoiseHash] = [.blake2b, .sha256, .sha512]

    /// HASH(parts[0] || parts[1] || ...).
    func hash(_ parts: [any ReadableBytes]) -> [UInt8] {
        let hasher = makeHasher()
        for part in parts { hasher.update(part) }
        return hasher.finalize()
    }

    /// HMAC-HASH(key, parts[0] || parts[1] || ...) (RFC 2104), into zeroing storage.
    /// Noise keys (`ck`, HKDF temporaries) are at most HASHLEN ≤ BLOCKLEN bytes, so the key is
    /// only zero-padded, never hashed first. The padded key and the inner digest live in scratch
    /// memory that is zeroed before it is released (no allocation or page locking per HMAC).
    func hmac(key: SecureBytes, _ parts: [any ReadableBytes]) -> SecureBytes {
        precondition(key.count <= blockLength, "HMAC keys longer than a block are not used by Noise")
        return withUnsafeTemporaryAllocation(byteCount: blockLength + length, alignment: 8) { scratch in
            defer { Sodium.zero(scratch) }
            let paddedKey = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<blockLength])
            let innerDigest = UnsafeMutableRawBufferPointer(rebasing: scratch[blockLength...])
            paddedKey.initializeMemory(as: UInt8.self, repeating: 0)
            key.withUnsafeBytes { paddedKey.copyMemory(from: $0) }
            for index in paddedKey.indices { paddedKey[index] ^= 0x36 }
            let inner = makeHasher()
            inner.update(UnsafeRawBufferPointer(paddedKey))
            for part in parts { inner.update(part) }
            inner.finalize(into: innerDigest)
            // (k ⊕ ipad) ⊕ (ipad ⊕ opad) = k ⊕ opad
            for index in paddedKey.indices { paddedKey[index] ^= 0x36 ^ 0x5C }
            let outer = makeHasher()
            outer.update(UnsafeRawBufferPointer(paddedKey))
            outer.update(UnsafeRawBufferPointer(innerDigest))
            return outer.finalizeSecret()
        }
    }

    /// HKDF(chaining_key, input_key_material, num_outputs) as Noise §4.3 defines it (2 or 3 outputs).
    func hkdf(chainingKey: SecureBytes, inputKeyMaterial: some ReadableBytes, outputs: Int) -> [SecureBytes] {
        precondition(outputs == 2 || outputs == 3)
        let tempKey = hmac(key: chainingKey, [inputKeyMaterial])
        var results = [hmac(key: tempKey, [[UInt8(1)]])]
        for index in 2...outputs {
            results.append(hmac(key: tempKey, [results[index - 2], [UInt8(index)]]))
        }
        return results
    }
}
