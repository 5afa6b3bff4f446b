internal import CSodium

/// Entry point of the libsodium wrapper. Every public API in this module calls
/// `Sodium.ensureInitialized()` first, so callers never have to remember `sodium_init()`.
public enum Sodium {
    /// `sodium_init()` runs exactly once per process (Swift static lets are initialised once,
    /// thread-safely). It returns 1 when already initialised and -1 only when the library cannot
    /// run at all (no usable randomness source), which is unrecoverable.
    private static let initialization: Int32 = sodium_init()

    /// Initialises libsodium if that has not happened yet. Cheap after the first call.
    public static func ensureInitialized() {
        precondition(initialization >= 0, "libsodium could not initialise (no randomness source?)")
    }

    /// The libsodium version string, for diagnostics.
    public static var versionString: String {
        ensureInitialized()
        return String(cString: sodium_version_string())
    }

    /// Compares two byte sequences in time that depends only on their length (`sodium_memcmp`).
    /// Sequences of different lengths are unequal.
    public static func constantTimeEqual(_ a: some ReadableBytes, _ b: some ReadableBytes) -> Bool {
        ensureInitialized()
        return a.withUnsafeBytes { pa in
            b.withUnsafeBytes { pb in
                guard pa.count == pb.count else { return false }
                guard pa.count > 0 else { return true }
                return sodium_memcmp(pa.baseAddress!, pb.baseAddress!, pa.count) == 0
            }
        }
    }

    /// Overwrites memory with zeros in a way the compiler may not optimise away (`sodium_memzero`).
    public static func zero(_ buffer: UnsafeMutableRawBufferPointer) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        sodium_memzero(base, buffer.count)
    }

    /// Zeroes the contents of an array in place (its count is kept).
    public static func zero(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { zero($0) }
    }
}

/// A failure reported by libsodium, or a misuse caught before calling it.
public struct SodiumError: Error, Hashable, CustomStringConvertible, Sendable {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }

    /// Authentication failed: wrong key, wrong associated data, or tampered ciphertext.
    public static let authenticationFailed = SodiumError("authentication failed")
    /// A signature did not verify under the given public key.
    public static let invalidSignature = SodiumError("invalid signature")

    static func wrongLength(_ what: String, expected: Int, got: Int) -> SodiumError {
        SodiumError("\(what) must be \(expected) bytes, got \(got)")
    }
}
