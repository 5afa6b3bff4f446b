internal import CSodium

/// ChaCha20-Poly1305 in its IETF form (RFC 8439): 32-byte key, 12-byte nonce, 16-byte tag.
/// Used for transport packets, where the nonce is a counter and must never repeat under one key.
public enum ChaCha20Poly1305 {
    public static let keyLength = Int(crypto_aead_chacha20poly1305_ietf_KEYBYTES)
    public static let nonceLength = Int(crypto_aead_chacha20poly1305_ietf_NPUBBYTES)
    public static let tagLength = Int(crypto_aead_chacha20poly1305_ietf_ABYTES)

    /// Encrypts and authenticates `plaintext`, authenticating `associatedData` too.
    /// Returns ciphertext followed by the tag.
    public static func seal(
        _ plaintext: some ReadableBytes,
        associatedData: some ReadableBytes,
        nonce: some ReadableBytes,
        key: SecureBytes
    ) throws(SodiumError) -> [UInt8] {
        try AEADCall.seal(
            plaintext, associatedData, nonce, key,
            lengths: (keyLength, nonceLength, tagLength), name: "ChaCha20-Poly1305",
            function: crypto_aead_chacha20poly1305_ietf_encrypt)
    }

    /// Verifies and decrypts `ciphertext` (ciphertext followed by tag).
    /// Throws `SodiumError.authenticationFailed` if anything was altered or the key/AD is wrong.
    public static func open(
        _ ciphertext: some ReadableBytes,
        associatedData: some ReadableBytes,
        nonce: some ReadableBytes,
        key: SecureBytes
    ) throws(SodiumError) -> [UInt8] {
        try AEADCall.open(
            ciphertext, associatedData, nonce, key,
            lengths: (keyLength, nonceLength, tagLength), name: "ChaCha20-Poly1305",
            function: crypto_aead_chacha20poly1305_ietf_decrypt)
    }
}

/// XChaCha20-Poly1305 (24-byte nonce, safe to pick at random). Used for signaling envelopes.
public enum XChaCha20Poly1305 {
    public static let keyLength = Int(crypto_aead_xchacha20poly1305_ietf_KEYBYTES)
    public static let nonceLength = Int(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES)
    public static let tagLength = Int(crypto_aead_xchacha20poly1305_ietf_ABYTES)

    public static func seal(
        _ plaintext: some ReadableBytes,
        associatedData: some ReadableBytes,
        nonce: some ReadableBytes,
        key: SecureBytes
    ) throws(SodiumError) -> [UInt8] {
        try AEADCall.seal(
            plaintext, associatedData, nonce, key,
            lengths: (keyLength, nonceLength, tagLength), name: "XChaCha20-Poly1305",
            function: crypto_aead_xchacha20poly1305_ietf_encrypt)
    }

    public static func open(
        _ ciphertext: some ReadableBytes,
        associatedData: some ReadableBytes,
        nonce: some ReadableBytes,
        key: SecureBytes
    ) throws(SodiumError) -> [UInt8] {
        try AEADCall.open(
            ciphertext, associatedData, nonce, key,
            lengths: (keyLength, nonceLength, tagLength), name: "XChaCha20-Poly1305",
            function: crypto_aead_xchacha20poly1305_ietf_decrypt)
    }
}

/// The shared call path of libsodium's `crypto_aead_*_ietf_{encrypt,decrypt}` functions,
/// which all have the same signature: one place checks lengths and handles empty buffers.
enum AEADCall {
    typealias Encrypt = (
        UnsafeMutablePointer<UInt8>, UnsafeMutablePointer<UInt64>?, UnsafePointer<UInt8>?, UInt64,
        UnsafePointer<UInt8>?, UInt64, UnsafePointer<UInt8>?, UnsafePointer<UInt8>, UnsafePointer<UInt8>
    ) -> Int32
    typealias Decrypt = (
        UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<UInt64>?, UnsafeMutablePointer<UInt8>?,
        UnsafePointer<UInt8>, UInt64, UnsafePointer<UInt8>?, UInt64, UnsafePointer<UInt8>, UnsafePointer<UInt8>
    ) -> Int32

    static func seal(
        _ plaintext: some ReadableBytes, _ ad: some ReadableBytes, _ nonce: some ReadableBytes,
        _ key: SecureBytes, lengths: (key: Int, nonce: Int, tag: Int), name: String, function: Encrypt
    ) throws(SodiumError) -> [UInt8] {
        Sodium.ensureInitialized()
        try check(key, nonce, lengths, name)
        var output: [UInt8] = []
        let result: Int32 = plaintext.withUnsafeBytes { input in
            ad.withUnsafeBytes { adBytes in
                nonce.withUnsafeBytes { nonceBytes in
                    key.withUnsafeBytes { keyBytes in
                        output = [UInt8](repeating: 0, count: input.count + lengths.tag)
                        return output.withUnsafeMutableBufferPointer { out in
                            function(
                                out.baseAddress!, nil, input.bindMemory(to: UInt8.self).baseAddress,
                                UInt64(input.count),
                                adBytes.bindMemory(to: UInt8.self).baseAddress, UInt64(adBytes.count), nil,
                                nonceBytes.bindMemory(to: UInt8.self).baseAddress!,
                                keyBytes.bindMemory(to: UInt8.self).baseAddress!)
                        }
                    }
                }
            }
        }
        guard result == 0 else { throw SodiumError("\(name) encryption failed") }
        return output
    }

    static func open(
        _ ciphertext: some ReadableBytes, _ ad: some ReadableBytes, _ nonce: some ReadableBytes,
        _ key: SecureBytes, lengths: (key: Int, nonce: Int, tag: Int), name: String, function: Decrypt
    ) throws(SodiumError) -> [UInt8] {
        Sodium.ensureInitialized()
        try check(key, nonce, lengths, name)
        var output: [UInt8] = []
        let result: Int32 = ciphertext.withUnsafeBytes { input in
            guard input.count >= lengths.tag else { return -1 }
            return ad.withUnsafeBytes { adBytes in
                nonce.withUnsafeBytes { nonceBytes in
                    key.withUnsafeBytes { keyBytes in
                        output = [UInt8](repeating: 0, count: input.count - lengths.tag)
                        return output.withUnsafeMutableBufferPointer { out in
                            function(
                                out.baseAddress, nil, nil, input.bindMemory(to: UInt8.self).baseAddress!,
                                UInt64(input.count), adBytes.bindMemory(to: UInt8.self).baseAddress,
                                UInt64(adBytes.count), nonceBytes.bindMemory(to: UInt8.self).baseAddress!,
                                keyBytes.bindMemory(to: UInt8.self).baseAddress!)
                        }
                    }
                }
            }
        }
        guard result == 0 else { throw .authenticationFailed }
        return output
    }

    private static func check(
        _ key: SecureBytes, _ nonce: some ReadableBytes, _ lengths: (key: Int, nonce: Int, tag: Int), _ name: String
    ) throws(SodiumError) {
        guard key.count == lengths.key else { throw .wrongLength("\(name) key", expected: lengths.key, got: key.count) }
        let nonceCount = nonce.withUnsafeBytes { $0.count }
        guard nonceCount == lengths.nonce else {
            throw .wrongLength("\(name) nonce", expected: lengths.nonce, got: nonceCount)
        }
    }
}
