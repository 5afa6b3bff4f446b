import ParleyTestSupport
import Synchronization
import Testing

@testable import Sodium

@Suite("libsodium wrapper")
struct SodiumTests {
    @Test func initialisesOnceAndReportsVersion() {
        Sodium.ensureInitialized()
        Sodium.ensureInitialized()
        #expect(Sodium.versionString.hasPrefix("1."))
    }

    @Test(arguments: [0, 1, 100, 1200])
    func chachaSealOpenRoundTrip(length: Int) throws {
        let key = SecureBytes.random(count: ChaCha20Poly1305.keyLength)
        let nonce = RandomBytes.bytes(count: ChaCha20Poly1305.nonceLength)
        let plaintext = RandomBytes.bytes(count: length)
        let ad: [UInt8] = [1, 2, 3, 4]
        let sealed = try ChaCha20Poly1305.seal(plaintext, associatedData: ad, nonce: nonce, key: key)
        #expect(sealed.count == length + ChaCha20Poly1305.tagLength)
        if length > 0 { #expect(Array(sealed.prefix(length)) != plaintext) }
        let opened = try ChaCha20Poly1305.open(sealed, associatedData: ad, nonce: nonce, key: key)
        #expect(opened == plaintext)
    }

    /// RFC 8439 §2.8.2 test vector: proves we call the IETF construction, not a look-alike.
    @Test func chachaMatchesRFC8439Vector() throws {
        let key = SecureBytes(copying: hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"))
        let nonce = hex("070000004041424344454647")
        let ad = hex("50515253c0c1c2c3c4c5c6c7")
        let plaintext = Array(
            "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it."
                .utf8)
        let sealed = try ChaCha20Poly1305.seal(plaintext, associatedData: ad, nonce: nonce, key: key)
        #expect(Array(sealed.suffix(16)) == hex("1ae10b594f09e26a7e902ecbd0600691"))
        #expect(Array(sealed.prefix(16)) == hex("d31a8d34648e60db7b86afbc53ef7ec2"))
    }

    @Test func everyTamperedByteIsRejected() throws {
        let key = SecureBytes.random(count: XChaCha20Poly1305.keyLength)
        let nonce = RandomBytes.bytes(count: XChaCha20Poly1305.nonceLength)
        let ad: [UInt8] = Array("header".utf8)
        let sealed = try XChaCha20Poly1305.seal(Array("hello parley".utf8), associatedData: ad, nonce: nonce, key: key)
        for index in sealed.indices {
            var tampered = sealed
            tampered[index] ^= 0x01
            #expect(throws: SodiumError.authenticationFailed) {
                try XChaCha20Poly1305.open(tampered, associatedData: ad, nonce: nonce, key: key)
            }
        }
        var badAD = ad
        badAD[0] ^= 0x80
        #expect(throws: SodiumError.authenticationFailed) {
            try XChaCha20Poly1305.open(sealed, associatedData: badAD, nonce: nonce, key: key)
        }
        let otherKey = SecureBytes.random(count: XChaCha20Poly1305.keyLength)
        #expect(throws: SodiumError.authenticationFailed) {
            try XChaCha20Poly1305.open(sealed, associatedData: ad, nonce: nonce, key: otherKey)
        }
        #expect(throws: SodiumError.authenticationFailed) {
            try XChaCha20Poly1305.open(Array(sealed.prefix(10)), associatedData: ad, nonce: nonce, key: key)
        }
    }

    @Test func wrongKeyAndNonceLengthsAreClearErrors() {
        let shortKey = SecureBytes.random(count: 16)
        #expect(throws: SodiumError.self) {
            try ChaCha20Poly1305.seal(
                [1], associatedData: [UInt8](), nonce: [UInt8](repeating: 0, count: 12), key: shortKey)
        }
        let key = SecureBytes.random(count: 32)
        do {
            _ = try ChaCha20Poly1305.seal(
                [1], associatedData: [UInt8](), nonce: [UInt8](repeating: 0, count: 24), key: key)
            Issue.record("a 24-byte nonce was accepted for the IETF construction")
        } catch {
            #expect(error.description.contains("nonce must be 12 bytes"))
        }
    }

    @Test func randomBytesAreRandom() {
        let a = RandomBytes.bytes(count: 32)
        let b = RandomBytes.bytes(count: 32)
        #expect(a.count == 32)
        #expect(a != b)
        #expect(a != [UInt8](repeating: 0, count: 32))
        // 10,000 draws from 0..<10 all land in range and hit every value.
        var seen = Set<UInt32>()
        for _ in 0..<10_000 {
            let value = RandomBytes.uniform(10)
            #expect(value < 10)
            seen.insert(value)
        }
        #expect(seen.count == 10)
    }

    @Test func secureBytesAreZeroedWhenTheLastCopyIsFreed() {
        let observed = Mutex<[UInt8]?>(nil)
        do {
            var secret = SecureBytes(
                zeroedCount: 32,
                onFree: { buffer in
                    observed.withLock { $0 = Array(buffer) }
                })
            secret.withUnsafeMutableBytes { RandomBytes.fill($0) }
            let copy = secret  // shares storage: freeing `secret` alone must not free it
            #expect(copy == secret)
            #expect(observed.withLock { $0 } == nil)
        }
        let bytes = observed.withLock { $0 }
        #expect(bytes?.count == 32)
        #expect(bytes?.allSatisfy { $0 == 0 } == true)
    }

    @Test func secureBytesCopyOnWriteAndExplicitZeroize() {
        var a = SecureBytes.random(count: 32)
        var b = a
        b.zeroize()
        #expect(b.withUnsafeBytes { Array($0) } == [UInt8](repeating: 0, count: 32))
        #expect(a.withUnsafeBytes { Array($0) } != [UInt8](repeating: 0, count: 32))
        a.zeroize()
        #expect(a == b)
    }

    @Test func secureBytesNeverPrintTheirContents() {
        let secret = SecureBytes(copying: [UInt8](repeating: 0xAB, count: 4))
        #expect(String(describing: secret) == "SecureBytes(4 bytes, redacted)")
        #expect(!"\(secret)".lowercased().contains("ab"))
    }

    @Test func constantTimeEqualityHandlesLengths() {
        #expect(Sodium.constantTimeEqual([1, 2, 3] as [UInt8], [1, 2, 3] as [UInt8]))
        #expect(!Sodium.constantTimeEqual([1, 2, 3] as [UInt8], [1, 2, 4] as [UInt8]))
        #expect(!Sodium.constantTimeEqual([1, 2] as [UInt8], [1, 2, 3] as [UInt8]))
        #expect(Sodium.constantTimeEqual([] as [UInt8], [] as [UInt8]))
    }
}

@Suite("Ed25519")
struct Ed25519Tests {
    /// RFC 8032 §7.1, TEST 2 (one-byte message).
    @Test func matchesRFC8032Vector() throws {
        let seed = SecureBytes(copying: hex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"))
        let keyPair = try Ed25519.KeyPair(seed: seed)
        #expect(keyPair.publicKey == hex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c"))
        let signature = keyPair.sign([0x72] as [UInt8])
        #expect(
            signature
                == hex(
                    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
                        + "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"))
        #expect(Ed25519.isValidSignature(signature, of: [0x72] as [UInt8], publicKey: keyPair.publicKey))
        #expect(keyPair.seed == seed)
    }

    @Test func rejectsWrongMessageKeyOrMalformedInput() {
        let keyPair = Ed25519.KeyPair.generate()
        let other = Ed25519.KeyPair.generate()
        let message: [UInt8] = Array("join".utf8)
        let signature = keyPair.sign(message)
        #expect(Ed25519.isValidSignature(signature, of: message, publicKey: keyPair.publicKey))
        #expect(!Ed25519.isValidSignature(signature, of: Array("joim".utf8), publicKey: keyPair.publicKey))
        #expect(!Ed25519.isValidSignature(signature, of: message, publicKey: other.publicKey))
        var tampered = signature
        tampered[10] ^= 1
        #expect(!Ed25519.isValidSignature(tampered, of: message, publicKey: keyPair.publicKey))
        #expect(!Ed25519.isValidSignature(Array(signature.prefix(63)), of: message, publicKey: keyPair.publicKey))
        #expect(!Ed25519.isValidSignature(signature, of: message, publicKey: Array(keyPair.publicKey.prefix(31))))
    }

    @Test func wrongSeedLengthIsAClearError() {
        #expect(throws: SodiumError.wrongLength("Ed25519 seed", expected: 32, got: 16)) {
            try Ed25519.KeyPair(seed: .random(count: 16))
        }
    }
}
