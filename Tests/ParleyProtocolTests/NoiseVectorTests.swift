import Foundation
import ParleyTestSupport
import Sodium
import Testing

@testable import ParleyProtocol

/// The cacophony test vectors for `Noise_*_25519_ChaChaPoly_{BLAKE2b,SHA256,SHA512}` (the public
/// Noise test vectors, kept in Tests/Fixtures): every pattern shares the HandshakeState code that
/// Parley's IKpsk2 handshake runs.
@Suite("Noise test vectors (cacophony)")
struct NoiseVectorTests {
    struct Vector: Decodable, CustomTestStringConvertible, Sendable {
        struct Message: Decodable, Sendable {
            let payload: String
            let ciphertext: String
        }
        let protocol_name: String
        let init_prologue: String
        let init_psks: [String]?
        let init_static: String?
        let init_ephemeral: String
        let init_remote_static: String?
        let resp_prologue: String
        let resp_psks: [String]?
        let resp_static: String?
        let resp_ephemeral: String?
        let resp_remote_static: String?
        let handshake_hash: String
        let messages: [Message]

        var testDescription: String { protocol_name }
    }

    struct File: Decodable {
        let vectors: [Vector]
    }

    static let vectors: [Vector] = {
        let data = try! Fixtures.read("noise-cacophony-25519-chachapoly.json")
        return try! JSONDecoder().decode(File.self, from: Data(data)).vectors
    }()

    @Test func coversEveryIKpsk2VectorAndAllThreeHashes() {
        let names = Set(Self.vectors.map(\.protocol_name))
        #expect(names.contains("Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b"))
        #expect(Self.vectors.filter { $0.protocol_name.hasPrefix("Noise_IKpsk2_") }.count == 3)
        #expect(Self.vectors.filter { $0.protocol_name.hasSuffix("_BLAKE2b") }.count == 59)
    }

    @Test(arguments: vectors)
    func handshakeAndTransportMatch(vector: Vector) throws {
        func keyPair(_ hexString: String?) throws -> X25519.KeyPair? {
            try hexString.map { try X25519.KeyPair(secretKey: SecureBytes(copying: hex($0))) }
        }
        var initiator = try NoiseHandshakeState(
            protocolName: vector.protocol_name, isInitiator: true, prologue: hex(vector.init_prologue),
            localStatic: keyPair(vector.init_static), remoteStatic: vector.init_remote_static.map(hex),
            psks: (vector.init_psks ?? []).map { SecureBytes(copying: hex($0)) },
            presetEphemerals: [try keyPair(vector.init_ephemeral)!])
        var responder = try NoiseHandshakeState(
            protocolName: vector.protocol_name, isInitiator: false, prologue: hex(vector.resp_prologue),
            localStatic: keyPair(vector.resp_static), remoteStatic: vector.resp_remote_static.map(hex),
            psks: (vector.resp_psks ?? []).map { SecureBytes(copying: hex($0)) },
            presetEphemerals: try vector.resp_ephemeral.map { [try keyPair($0)!] } ?? [])
        let oneWay = initiator.pattern.messages.count == 1
        var transport:
            (initiator: (NoiseCipherState, NoiseCipherState), responder: (NoiseCipherState, NoiseCipherState))?
        for (index, message) in vector.messages.enumerated() {
            let payload = hex(message.payload)
            let initiatorSends = oneWay || index % 2 == 0
            if var ciphers = transport {
                let ciphertext: [UInt8]
                let opened: [UInt8]
                if initiatorSends {
                    ciphertext = try ciphers.initiator.0.encrypt(payload, associatedData: [UInt8]())
                    opened = try ciphers.responder.1.decrypt(ciphertext, associatedData: [UInt8]())
                } else {
                    ciphertext = try ciphers.responder.0.encrypt(payload, associatedData: [UInt8]())
                    opened = try ciphers.initiator.1.decrypt(ciphertext, associatedData: [UInt8]())
                }
                transport = ciphers
                #expect(ciphertext == hex(message.ciphertext), "transport message \(index)")
                #expect(opened == payload, "transport message \(index)")
                continue
            }
            let ciphertext: [UInt8]
            let received: [UInt8]
            if initiatorSends {
                ciphertext = try initiator.writeMessage(payload: payload)
                received = try responder.readMessage(ciphertext)
            } else {
                ciphertext = try responder.writeMessage(payload: payload)
                received = try initiator.readMessage(ciphertext)
            }
            #expect(ciphertext == hex(message.ciphertext), "handshake message \(index)")
            #expect(received == payload, "handshake message \(index)")
            if let initiatorCiphers = initiator.transportCiphers, let responderCiphers = responder.transportCiphers {
                #expect(initiator.handshakeHash == hex(vector.handshake_hash))
                #expect(responder.handshakeHash == hex(vector.handshake_hash))
                transport = (initiatorCiphers, responderCiphers)
            }
        }
        #expect(transport != nil, "the handshake completed")
    }

    /// A responder with a different PSK rejects the IKpsk2 response's payload (the psk token is in
    /// message 2, so the initiator is the one that notices), and a flipped byte anywhere in either
    /// message fails.
    @Test func ikpsk2RejectsWrongPSKAndTampering() throws {
        let initiatorStatic = X25519.KeyPair.generate()
        let responderStatic = X25519.KeyPair.generate()
        let psk = SecureBytes.random(count: 32)
        let name = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b"
        func pair(responderPSK: SecureBytes) throws -> (NoiseHandshakeState, NoiseHandshakeState) {
            (
                try NoiseHandshakeState(
                    protocolName: name, isInitiator: true, prologue: [UInt8](), localStatic: initiatorStatic,
                    remoteStatic: responderStatic.publicKey, psks: [psk]),
                try NoiseHandshakeState(
                    protocolName: name, isInitiator: false, prologue: [UInt8](), localStatic: responderStatic,
                    remoteStatic: nil, psks: [responderPSK])
            )
        }
        var (initiator, responder) = try pair(responderPSK: .random(count: 32))
        let first = try initiator.writeMessage(payload: [UInt8]())
        _ = try responder.readMessage(first)
        let second = try responder.writeMessage(payload: [UInt8]())
        #expect(throws: NoiseError.decryptFailed) { try initiator.readMessage(second) }

        (initiator, responder) = try pair(responderPSK: psk)
        let message1 = try initiator.writeMessage(payload: [1, 2, 3])
        for index in message1.indices {
            var tampered = message1
            tampered[index] ^= 0x01
            var fresh = try pair(responderPSK: psk).1
            #expect(throws: NoiseError.self) { try fresh.readMessage(tampered) }
        }
        _ = try responder.readMessage(message1)
        let message2 = try responder.writeMessage(payload: [UInt8]())
        for index in message2.indices {
            var tampered = message2
            tampered[index] ^= 0x01
            var copy = initiator
            #expect(throws: NoiseError.self) { try copy.readMessage(tampered) }
        }
        _ = try initiator.readMessage(message2)
        #expect(initiator.isComplete && responder.isComplete)
        #expect(initiator.handshakeHash == responder.handshakeHash)
    }

    @Test func rejectsUnsupportedProtocols() {
        for name in [
            "Noise_IKpsk2_448_ChaChaPoly_BLAKE2b", "Noise_IKpsk2_25519_AESGCM_BLAKE2b",
            "Noise_ZZ_25519_ChaChaPoly_BLAKE2b",
            "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s", "Noise_IKpsk9_25519_ChaChaPoly_BLAKE2b", "IKpsk2",
        ] {
            #expect(throws: NoiseError.self, "\(name)") {
                try NoiseHandshakeState(
                    protocolName: name, isInitiator: true, prologue: [UInt8](), localStatic: .generate(),
                    remoteStatic: X25519.KeyPair.generate().publicKey, psks: [.random(count: 32)])
            }
        }
    }

    /// HMAC built from the multi-part hash agrees with libsodium's own HMAC-SHA-512-256 inputs:
    /// here checked against RFC 4231 test case 2 for HMAC-SHA-256 and HMAC-SHA-512.
    @Test func hmacMatchesRFC4231() {
        let key = SecureBytes(copying: Array("Jefe".utf8))
        let data = Array("what do ya want for nothing?".utf8)
        #expect(
            NoiseHash.sha256.hmac(key: key, [data])
                == SecureBytes(copying: hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")))
        #expect(
            NoiseHash.sha512.hmac(key: key, [data])
                == SecureBytes(
                    copying: hex(
                        "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
                            + "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737")))
    }
}
