internal import CSodium

/// BLAKE2b (RFC 7693) as libsodium's `crypto_generichash`: unkeyed or keyed, 16 to 64 output
/// bytes, one-shot or multi-part. Noise's HASH for the `BLAKE2b` suite (BLAKE2b-512), mac1,
/// checksums and the security code.
public enum BLAKE2b {
    public static let minOutputLength = Int(crypto_generichash_BYTES_MIN)
    public static let maxOutputLength = Int(crypto_generichash_BYTES_MAX)
    public static let maxKeyLength = Int(crypto_generichash_KEYBYTES_MAX)
    /// BLAKE2b's block length, which HMAC needs (RFC 7693 §2.1: bb = 128).
    public static let blockLength = 128

    /// The hash of `input`, `outputLength` bytes (16...64), keyed with `key` (1...64 bytes) when given.
    public static func hash(
        _ input: some ReadableBytes, outputLength: Int = 32, key: SecureBytes? = nil
    ) throws(SodiumError) -> [UInt8] {
        let hasher = try hasher(outputLength: outputLength, key: key)
        hasher.update(input)
        return hasher.finalize()
    }

    /// A hash chain over `input`: h = BLAKE2b(input), then `iterations − 1` times
    /// h = BLAKE2b(h || input), each `outputLength` bytes (16...64). One buffer, no allocation
    /// per round: the security code runs 16384 rounds each time a meeting's membership changes.
    public static func chain(
        _ input: some ReadableBytes, iterations: Int, outputLength: Int = 64
    ) throws(SodiumError) -> [UInt8] {
        guard (minOutputLength...maxOutputLength).contains(outputLength) else {
            throw SodiumError(
                "BLAKE2b output must be \(minOutputLength) to \(maxOutputLength) bytes, got \(outputLength)")
        }
        guard iterations >= 1 else { throw SodiumError("a hash chain needs at least one round, got \(iterations)") }
        Sodium.ensureInitialized()
        return input.withUnsafeBytes { input in
            // [h || input]: each round hashes the whole buffer into its first `outputLength` bytes.
            var buffer = [UInt8](repeating: 0, count: outputLength + input.count)
            buffer.withUnsafeMutableBytes { buffer in
                let base = buffer.bindMemory(to: UInt8.self).baseAddress!
                if let source = input.baseAddress {
                    (base + outputLength).update(from: source.assumingMemoryBound(to: UInt8.self), count: input.count)
                }
                _ = crypto_generichash(base, outputLength, base + outputLength, UInt64(input.count), nil, 0)
                for _ in 1..<iterations {
                    _ = crypto_generichash(base, outputLength, base, UInt64(buffer.count), nil, 0)
                }
            }
            return Array(buffer.prefix(outputLength))
        }
    }

    /// A multi-part BLAKE2b computation.
    public static func hasher(outputLength: Int = 32, key: SecureBytes? = nil) throws(SodiumError) -> MultipartHasher {
        guard (minOutputLength...maxOutputLength).contains(outputLength) else {
            throw SodiumError(
                "BLAKE2b output must be \(minOutputLength) to \(maxOutputLength) bytes, got \(outputLength)")
        }
        if let key, !(1...maxKeyLength).contains(key.count) {
            throw SodiumError("BLAKE2b key must be 1 to \(maxKeyLength) bytes, got \(key.count)")
        }
        return MultipartHasher(
            stateByteCount: crypto_generichash_statebytes(), outputLength: outputLength,
            initialize: { state in
                // The state type is over-aligned (CRYPTO_ALIGN(64)), so Swift imports it as opaque.
                let state = OpaquePointer(state)
                if let key {
                    key.withUnsafeBytes {
                        _ = crypto_generichash_init(
                            state, $0.bindMemory(to: UInt8.self).baseAddress, $0.count, outputLength)
                    }
                } else {
                    _ = crypto_generichash_init(state, nil, 0, outputLength)
                }
            },
            update: { state, bytes, count in
                _ = crypto_generichash_update(
                    OpaquePointer(state), bytes, UInt64(count))
            },
            final: { state, output, count in
                _ = crypto_generichash_final(OpaquePointer(state), output, count)
            })
    }
}
