internal import CSodium

/// Fixed-size secret bytes (keys, seeds, chaining values) that are zeroed when the last copy is
/// freed and are never printed. Value semantics with copy-on-write, in the manner of swift-crypto's
/// `SecureBytes`; comparisons are constant-time.
public struct SecureBytes: Sendable {
    // Safety: `Storage` is mutated only through `withUnsafeMutableBytes`, which first makes the
    // storage unique (copy-on-write), so no two threads ever share a buffer that is being written.
    final class Storage: @unchecked Sendable {
        let buffer: UnsafeMutableRawBufferPointer
        /// Called with the (already zeroed) buffer just before it is freed; tests observe it.
        let onFree: @Sendable (UnsafeMutableRawBufferPointer) -> Void

        init(count: Int, onFree: @escaping @Sendable (UnsafeMutableRawBufferPointer) -> Void) {
            Sodium.ensureInitialized()
            buffer = .allocate(byteCount: max(count, 1), alignment: 16)
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            // Keep secrets out of swap where the system allows it; failure (RLIMIT_MEMLOCK) is not fatal.
            _ = sodium_mlock(buffer.baseAddress!, buffer.count)
            self.onFree = onFree
        }

        deinit {
            // sodium_munlock zeroes the memory before unlocking it.
            _ = sodium_munlock(buffer.baseAddress!, buffer.count)
            Sodium.zero(buffer)
            onFree(buffer)
            buffer.deallocate()
        }
    }

    private var storage: Storage
    /// Number of secret bytes.
    public let count: Int

    /// `count` zero bytes.
    public init(zeroedCount count: Int) {
        self.init(zeroedCount: count, onFree: { _ in })
    }

    /// Test hook: `onFree` sees the buffer after it was zeroed and before it is deallocated.
    init(zeroedCount count: Int, onFree: @escaping @Sendable (UnsafeMutableRawBufferPointer) -> Void) {
        precondition(count >= 0)
        self.count = count
        storage = Storage(count: count, onFree: onFree)
    }

    /// A copy of `bytes`. The caller should zero its own copy when it no longer needs it.
    public init(copying bytes: some ReadableBytes) {
        let count = bytes.withUnsafeBytes { $0.count }
        self.init(zeroedCount: count)
        withUnsafeMutableBytes { destination in
            bytes.withUnsafeBytes { destination.copyMemory(from: $0) }
        }
    }

    /// `count` bytes from the system's secure random generator.
    public static func random(count: Int) -> SecureBytes {
        var secret = SecureBytes(zeroedCount: count)
        secret.withUnsafeMutableBytes { RandomBytes.fill($0) }
        return secret
    }

    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(rebasing: storage.buffer[0..<count]))
    }

    public mutating func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        if !isKnownUniquelyReferenced(&storage) {
            let copy = Storage(count: count, onFree: storage.onFree)
            copy.buffer.copyMemory(from: UnsafeRawBufferPointer(storage.buffer))
            storage = copy
        }
        return try body(UnsafeMutableRawBufferPointer(rebasing: storage.buffer[0..<count]))
    }

    /// Zeroes the secret now, without waiting for the last copy to go away.
    public mutating func zeroize() {
        withUnsafeMutableBytes { Sodium.zero($0) }
    }
}

extension SecureBytes: ReadableBytes {}

extension SecureBytes: Equatable {
    /// Constant-time comparison.
    public static func == (lhs: SecureBytes, rhs: SecureBytes) -> Bool {
        Sodium.constantTimeEqual(lhs, rhs)
    }
}

extension SecureBytes: CustomStringConvertible, CustomDebugStringConvertible {
    /// Never reveals the bytes, so a secret that reaches a log line or an error stays secret.
    public var description: String { "SecureBytes(\(count) bytes, redacted)" }
    public var debugDescription: String { description }
}
