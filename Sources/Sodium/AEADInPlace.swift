internal import CSodium

/// In-place ChaCha20-Poly1305-IETF for the transport hot path (~50 packets/s per peer): the
/// caller builds `header || plaintext || room for the tag` in one reusable buffer and this
/// encrypts it where it lies, so sealing a packet allocates nothing. libsodium allows the
/// ciphertext to overlap the plaintext exactly (in-place operation).
extension ChaCha20Poly1305 {
    /// Encrypts `buffer[associatedDataLength ..< buffer.count - tagLength]` in place and writes the
    /// tag into the last `tagLength` bytes; `buffer[0 ..< associatedDataLength]` is authenticated
    /// as associated data. `nonce` must be `nonceLength` bytes and `key` `keyLength` bytes.
    public static func sealInPlace(
        _ buffer: UnsafeMutableRawBufferPointer, associatedDataLength: Int, nonce: UnsafeRawBufferPointer,
        key: SecureBytes
    ) throws(SodiumError) {
        let result = try inPlace(buffer, associatedDataLength, nonce, key) { ad, message, length, tag, nonce, key in
            crypto_aead_chacha20poly1305_ietf_encrypt_detached(
                message, tag, nil, message, length, ad, UInt64(associatedDataLength), nil, nonce, key)
        }
        guard result == 0 else { throw SodiumError("ChaCha20-Poly1305 encryption failed") }
    }

    /// Verifies and decrypts in place the layout `sealInPlace` produces. On success the plaintext
    /// is `buffer[associatedDataLength ..< buffer.count - tagLength]`; on failure this throws
    /// `authenticationFailed` and the ciphertext bytes are no longer meaningful (libsodium clears
    /// its output when the tag does not verify), so no unauthenticated plaintext is ever exposed.
    public static func openInPlace(
        _ buffer: UnsafeMutableRawBufferPointer, associatedDataLength: Int, nonce: UnsafeRawBufferPointer,
        key: SecureBytes
    ) throws(SodiumError) {
        let result = try inPlace(buffer, associatedDataLength, nonce, key) { ad, message, length, tag, nonce, key in
            crypto_aead_chacha20poly1305_ietf_decrypt_detached(
                message, nil, message, length, tag, ad, UInt64(associatedDataLength), nonce, key)
        }
        guard result == 0 else { throw .authenticationFailed }
    }

    /// Checks lengths and splits `buffer` into associated data, message and tag for `operation`
    /// (associated data, message, message length, tag, nonce, key).
    private static func inPlace(
        _ buffer: UnsafeMutableRawBufferPointer, _ associatedDataLength: Int, _ nonce: UnsafeRawBufferPointer,
        _ key: SecureBytes,
        operation: (
            UnsafeMutablePointer<UInt8>, UnsafeMutablePointer<UInt8>, UInt64, UnsafeMutablePointer<UInt8>,
            UnsafePointer<UInt8>, UnsafePointer<UInt8>
        ) -> Int32
    ) throws(SodiumError) -> Int32 {
        Sodium.ensureInitialized()
        guard key.count == keyLength else {
            throw .wrongLength("ChaCha20-Poly1305 key", expected: keyLength, got: key.count)
        }
        guard nonce.count == nonceLength else {
            throw .wrongLength("ChaCha20-Poly1305 nonce", expected: nonceLength, got: nonce.count)
        }
        guard associatedDataLength >= 0, buffer.count >= associatedDataLength + tagLength,
            let base = buffer.baseAddress?.assumingMemoryBound(to: UInt8.self)
        else {
            throw SodiumError("ChaCha20-Poly1305 in-place buffer too short for its associated data and tag")
        }
        let messageLength = buffer.count - associatedDataLength - tagLength
        return key.withUnsafeBytes { keyBytes in
            operation(
                base, base + associatedDataLength, UInt64(messageLength), base + associatedDataLength + messageLength,
                nonce.bindMemory(to: UInt8.self).baseAddress!, keyBytes.bindMemory(to: UInt8.self).baseAddress!)
        }
    }
}
