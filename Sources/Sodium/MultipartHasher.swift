/// A multi-part hash computation (BLAKE2b, SHA-256, SHA-512): feed it with `update`, then
/// `finalize` once. The C state lives in memory this class owns, allocated with the alignment
/// libsodium asks for (BLAKE2b's state is `CRYPTO_ALIGN(64)`) and zeroed when freed, because a
/// keyed BLAKE2b state holds its key. Not thread-safe: one owner uses it.
public final class MultipartHasher {
    typealias Update = (UnsafeMutableRawPointer, UnsafePointer<UInt8>?, Int) -> Void
    typealias Final = (UnsafeMutableRawPointer, UnsafeMutablePointer<UInt8>, Int) -> Void

    /// Digest length in bytes.
    public let outputLength: Int
    private let state: UnsafeMutableRawPointer
    private let stateByteCount: Int
    private let updateFunction: Update
    private let finalFunction: Final
    private var finalized = false

    /// `initialize` sets up the freshly zeroed state (the algorithm's `*_init`).
    init(
        stateByteCount: Int, outputLength: Int, initialize: (UnsafeMutableRawPointer) -> Void,
        update: @escaping Update, final: @escaping Final
    ) {
        Sodium.ensureInitialized()
        self.stateByteCount = stateByteCount
        self.outputLength = outputLength
        state = .allocate(byteCount: stateByteCount, alignment: 64)
        state.initializeMemory(as: UInt8.self, repeating: 0, count: stateByteCount)
        updateFunction = update
        finalFunction = final
        initialize(state)
    }

    deinit {
        Sodium.zero(UnsafeMutableRawBufferPointer(start: state, count: stateByteCount))
        state.deallocate()
    }

    public func update(_ input: some ReadableBytes) {
        precondition(!finalized, "hasher used after finalize")
        input.withUnsafeBytes { updateFunction(state, $0.bindMemory(to: UInt8.self).baseAddress, $0.count) }
    }

    /// The digest, for public values.
    public func finalize() -> [UInt8] {
        var output = [UInt8](repeating: 0, count: outputLength)
        output.withUnsafeMutableBytes { finish(into: $0) }
        return output
    }

    /// The digest written straight into zeroing storage, for keys and chaining values.
    public func finalizeSecret() -> SecureBytes {
        var output = SecureBytes(zeroedCount: outputLength)
        output.withUnsafeMutableBytes { finish(into: $0) }
        return output
    }

    /// The digest written into `output` (exactly `outputLength` bytes), for short-lived secrets
    /// in scratch memory the caller zeroes (HMAC's inner digest) without allocating.
    public func finalize(into output: UnsafeMutableRawBufferPointer) {
        precondition(output.count == outputLength, "digest buffer has the wrong size")
        finish(into: output)
    }

    private func finish(into output: UnsafeMutableRawBufferPointer) {
        precondition(!finalized, "hasher finalized twice")
        finalized = true
        finalFunction(state, output.bindMemory(to: UInt8.self).baseAddress!, output.count)
    }
}
