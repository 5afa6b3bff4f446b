import ParleyTestSupport
import Testing

@testable import Sodium

/// Known-answer tests for the primitives Parley's protocol adds to the wrapper. Vectors come from
/// the RFCs, or were produced by an independent implementation (Python's `hashlib.blake2b` and
/// PyNaCl), as noted on each.
@Suite("X25519, BLAKE2b, SHA-2, KDF, sealed boxes")
struct PrimitiveVectorTests {
    /// RFC 7748 §6.1.
    @Test func x25519MatchesRFC7748() throws {
        let alice = try X25519.KeyPair(
            secretKey: SecureBytes(copying: hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")))
        let bob = try X25519.KeyPair(
            secretKey: SecureBytes(copying: hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")))
        #expect(alice.publicKey == hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"))
        #expect(bob.publicKey == hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"))
        let shared = hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
        #expect(try alice.sharedSecret(with: bob.publicKey) == SecureBytes(copying: shared))
        #expect(try bob.sharedSecret(with: alice.publicKey) == SecureBytes(copying: shared))
    }

    @Test func x25519RejectsLowOrderPointsAndWrongLengths() {
        let keyPair = X25519.KeyPair.generate()
        #expect(throws: SodiumError.self) { try keyPair.sharedSecret(with: [UInt8](repeating: 0, count: 32)) }
        #expect(throws: SodiumError.wrongLength("X25519 public key", expected: 32, got: 31)) {
            try keyPair.sharedSecret(with: [UInt8](repeating: 9, count: 31))
        }
        #expect(throws: SodiumError.self) { try X25519.KeyPair(secretKey: .random(count: 16)) }
    }

    /// RFC 7693 Appendix A (BLAKE2b-512 of "abc"), and the first keyed vector of the reference
    /// BLAKE2 known-answer tests (key 00..3f, empty input), confirmed with Python's hashlib.
    @Test func blake2bMatchesReferenceVectors() throws {
        #expect(
            try BLAKE2b.hash(Array("abc".utf8), outputLength: 64)
                == hex(
                    "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1"
                        + "7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923"))
        let key = SecureBytes(copying: (0..<64).map { UInt8($0) })
        #expect(
            try BLAKE2b.hash([UInt8](), outputLength: 64, key: key)
                == hex(
                    "10ebb67700b1868efb4417987acf4690ae9d972fb7a590c2f02871799aaa4786"
                        + "b5e996e8f0f4eb981fc214b005f42d2ff4233499391653df7aefcbc13fc51568"))
    }

    @Test(arguments: [0, 1, 127, 128, 129, 1000])
    func multipartHashingEqualsOneShot(split: Int) throws {
        let input = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let hasher = try BLAKE2b.hasher(outputLength: 64)
        hasher.update(input[..<split])
        hasher.update(input[split...])
        #expect(hasher.finalize() == (try BLAKE2b.hash(input, outputLength: 64)))
        let sha = SHA512.hasher()
        sha.update(input[..<split])
        sha.update(input[split...])
        #expect(sha.finalizeSecret() == SecureBytes(copying: SHA512.hash(input)))
    }

    @Test func blake2bRejectsBadLengths() {
        #expect(throws: SodiumError.self) { try BLAKE2b.hash([1] as [UInt8], outputLength: 15) }
        #expect(throws: SodiumError.self) { try BLAKE2b.hash([1] as [UInt8], outputLength: 65) }
        #expect(throws: SodiumError.self) { try BLAKE2b.hash([1] as [UInt8], key: .random(count: 65)) }
    }

    /// FIPS 180-2 Appendix B/C ("abc").
    @Test func sha2MatchesFIPSVectors() {
        #expect(
            SHA256.hash(Array("abc".utf8)) == hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"))
        #expect(
            SHA512.hash(Array("abc".utf8))
                == hex(
                    "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
                        + "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"))
    }

    /// Expected subkeys computed independently with Python's
    /// `hashlib.blake2b(b"", key=master, digest_size=n, salt=LE64(id) + 8 zero bytes,
    /// person=context + 8 zero bytes)`: the construction docs/PROTOCOL.md §3 tells a second
    /// implementation to use.
    @Test(arguments: [
        ("Examples", UInt64(1), 32, "db4b973a1a3ff12de3d88891c60acf8438ed707a73b3d16dd62048c3a6e372e9"),
        ("parl-psk", UInt64(1), 32, "ffdc263fa8f6f9b38943b10e30a11ea1f93bd1a194ea300a40887b5a7bf673b0"),
        (
            "ctxctxct", UInt64(0x0123_4567_89ab_cdef), 64,
            "1861247a1cdbf45a0f0bb6f180f1ddfdec9388cb2b7b17cf0eac1c6e1f073568"
                + "fa12230939bcfc0482fb2b7cea4fb0f34e5cac0bdd16d285a6cd67937a639b4d"
        ),
        ("KDFtest_", UInt64(7), 16, "c565a28dc0df949e8f259a22a6112a3e"),
    ])
    func kdfMatchesBLAKE2bConstruction(context: String, id: UInt64, length: Int, expected: String) throws {
        let master = SecureBytes(copying: (0..<32).map { UInt8($0) })
        let subkey = try KDF.deriveKey(length: length, id: id, context: context, masterKey: master)
        #expect(subkey == SecureBytes(copying: hex(expected)))
    }

    @Test func kdfRejectsBadContextsAndKeys() {
        let master = SecureBytes.random(count: 32)
        #expect(throws: SodiumError.self) { try KDF.deriveKey(length: 32, id: 1, context: "short", masterKey: master) }
        #expect(throws: SodiumError.self) {
            try KDF.deriveKey(length: 32, id: 1, context: "parl-psk", masterKey: .random(count: 16))
        }
        #expect(throws: SodiumError.self) {
            try KDF.deriveKey(length: 8, id: 1, context: "parl-psk", masterKey: master)
        }
    }

    /// A box sealed by PyNaCl (`SealedBox(PrivateKey(bytes([7] * 32)).public_key)`) opens here.
    @Test func sealedBoxOpensABoxSealedByPyNaCl() throws {
        let recipient = try X25519.KeyPair(secretKey: SecureBytes(copying: [UInt8](repeating: 7, count: 32)))
        #expect(recipient.publicKey == hex("13be4feaeaf204c7fd3358fc9c00721881d174278128227ec674f37f7fe97b6d"))
        let sealed = hex(
            "832c695427f255cffc7833ed78b3025406469b746777753c6c34bfae344b5a53"
                + "74fc850792147bf1e84fcd40172ac4da3d1644326c9ac07e182ba468236ea383")
        #expect(try SealedBox.open(sealed, with: recipient) == Array("sealed by pynacl".utf8))
    }

    @Test func sealedBoxOnlyOpensForItsRecipientAndUnaltered() throws {
        let recipient = X25519.KeyPair.generate()
        let other = X25519.KeyPair.generate()
        let sealed = try SealedBox.seal(Array("candidate".utf8), to: recipient.publicKey)
        #expect(sealed.count == 9 + SealedBox.overhead)
        #expect(try SealedBox.open(sealed, with: recipient) == Array("candidate".utf8))
        #expect(throws: SodiumError.authenticationFailed) { try SealedBox.open(sealed, with: other) }
        for index in sealed.indices {
            var tampered = sealed
            tampered[index] ^= 0x20
            #expect(throws: SodiumError.authenticationFailed) { try SealedBox.open(tampered, with: recipient) }
        }
        #expect(throws: SodiumError.authenticationFailed) { try SealedBox.open(sealed.prefix(47), with: recipient) }
        #expect(throws: SodiumError.self) { try SealedBox.seal([1] as [UInt8], to: [UInt8](repeating: 1, count: 31)) }
    }

    /// The in-place form produces exactly the bytes of the allocating form (RFC 8439 construction),
    /// and opens back in place; a flipped bit fails without revealing any plaintext.
    @Test(arguments: [0, 1, 100, 1200])
    func inPlaceSealingMatchesTheAllocatingForm(length: Int) throws {
        let key = SecureBytes.random(count: 32)
        let nonce = RandomBytes.bytes(count: 12)
        let header = RandomBytes.bytes(count: 16)
        let plaintext = RandomBytes.bytes(count: length)
        let expected = try ChaCha20Poly1305.seal(plaintext, associatedData: header, nonce: nonce, key: key)
        var buffer = header + plaintext + [UInt8](repeating: 0, count: 16)
        try buffer.withUnsafeMutableBytes { buffer in
            try nonce.withUnsafeBytes { nonce in
                try ChaCha20Poly1305.sealInPlace(buffer, associatedDataLength: 16, nonce: nonce, key: key)
            }
        }
        #expect(Array(buffer[16...]) == expected)
        var tampered = buffer
        tampered[tampered.count - 1] ^= 1
        #expect(throws: SodiumError.authenticationFailed) {
            try tampered.withUnsafeMutableBytes { buffer in
                try nonce.withUnsafeBytes { nonce in
                    try ChaCha20Poly1305.openInPlace(buffer, associatedDataLength: 16, nonce: nonce, key: key)
                }
            }
        }
        #expect(tampered[16..<(16 + length)].allSatisfy { $0 == 0 }, "no unauthenticated plaintext is exposed")
        try buffer.withUnsafeMutableBytes { buffer in
            try nonce.withUnsafeBytes { nonce in
                try ChaCha20Poly1305.openInPlace(buffer, associatedDataLength: 16, nonce: nonce, key: key)
            }
        }
        #expect(Array(buffer[16..<(16 + length)]) == plaintext)
    }
}
