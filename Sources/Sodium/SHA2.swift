internal import CSodium

/// A hash function with a multi-part interface and a fixed output length (HMAC and Noise need
/// the block length too).
public protocol HashFunction {
    static var outputLength: Int { get }
    static var blockLength: Int { get }
    static func hasher() -> MultipartHasher
}

extension HashFunction {
    /// The digest of `input`.
    public static func hash(_ input: some ReadableBytes) -> [UInt8] {
        let hasher = hasher()
        hasher.update(input)
        return hasher.finalize()
    }
}

/// SHA-256 (FIPS 180-4, `crypto_hash_sha256`): the TLS certificate pin (SHA-256 of the leaf's
/// SubjectPublicKeyInfo) and Noise's `SHA256` suite.
public enum SHA256: HashFunction {
    public static let outputLength = Int(crypto_hash_sha256_BYTES)
    public static let blockLength = 64

    public static func hasher() -> MultipartHasher {
        sha2Hasher(
            outputLength: outputLength, stateByteCount: crypto_hash_sha256_statebytes(),
            initialize: crypto_hash_sha256_init, update: crypto_hash_sha256_update, final: crypto_hash_sha256_final)
    }
}

/// SHA-512 (FIPS 180-4, `crypto_hash_sha512`): Noise's `SHA512` suite.
public enum SHA512: HashFunction {
    public static let outputLength = Int(crypto_hash_sha512_BYTES)
    public static let blockLength = 128

    public static func hasher() -> MultipartHasher {
        sha2Hasher(
            outputLength: outputLength, stateByteCount: crypto_hash_sha512_statebytes(),
            initialize: crypto_hash_sha512_init, update: crypto_hash_sha512_update, final: crypto_hash_sha512_final)
    }
}

/// The SHA-2 functions share one shape in libsodium (`*_init`, `*_update`, `*_final` over a
/// typed state), so one adapter serves both.
private func sha2Hasher<State>(
    outputLength: Int, stateByteCount: Int,
    initialize: @escaping (UnsafeMutablePointer<State>) -> Int32,
    update: @escaping (UnsafeMutablePointer<State>, UnsafePointer<UInt8>, UInt64) -> Int32,
    final: @escaping (UnsafeMutablePointer<State>, UnsafeMutablePointer<UInt8>) -> Int32
) -> MultipartHasher {
    MultipartHasher(
        stateByteCount: stateByteCount, outputLength: outputLength,
        initialize: { _ = initialize($0.assumingMemoryBound(to: State.self)) },
        update: { state, bytes, count in
            guard let bytes, count > 0 else { return }
            _ = update(state.assumingMemoryBound(to: State.self), bytes, UInt64(count))
        },
        final: { state, output, _ in _ = final(state.assumingMemoryBound(to: State.self), output) })
}
