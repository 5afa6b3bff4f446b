import ParleyCore
import ParleyTestSupport
import Sodium
import Testing

@testable import ParleyProtocol

/// A room with three members for signaling tests.
struct SignalingRoom {
    let keys: RoomKeys
    let alice = NodeIdentity.generate()
    let bob = NodeIdentity.generate()
    let mallory = NodeIdentity.generate()

    init() throws {
        keys = try RoomKeys(roomSecret: .random(count: 32))
    }

    func hello(_ node: NodeIdentity, name: String) throws -> SignalingMessage {
        .hello(try Hello(identity: node.peerIdentity, sessionEpoch: 0x1234_5678_9ABC_DEF0, displayName: name))
    }

    static let credentials = try! ICECredentials(
        generation: 3, usernameFragment: "Abc+", password: "0123456789abcdefghij+/")
    static let candidate = "candidate:1 1 UDP 2130706431 192.0.2.10 54321 typ host"
}

@Suite("Signaling envelopes (§6)")
struct EnvelopeTests {
    @Test func everyMessageTypeRoundTrips() throws {
        let room = try SignalingRoom()
        let messages: [(SignalingMessage, Bool)] = [
            (try room.hello(room.alice, name: "Alice 🎧"), true),
            (try room.hello(room.alice, name: "Alice"), false),
            (.iceCredentials(SignalingRoom.credentials), false),
            (.iceCandidate(generation: 3, candidate: SignalingRoom.candidate), false),
            (.iceCandidatesDone(generation: 3), false),
            (.iceRestart(generation: 4), false),
            (.bye, true),
        ]
        var guardOfBob = EnvelopeReplayGuard()
        for (sequence, (message, broadcast)) in messages.enumerated() {
            let envelope = try Envelope.seal(
                message, to: broadcast ? .everyone : .peer(room.bob.peerIdentity), from: room.alice,
                sequence: UInt64(100 + sequence), keys: room.keys)
            #expect(envelope.count == 1 + 24 + 512 + 16, "every version-1 message fits the first bucket")
            let received = try Envelope.open(envelope, as: room.bob, keys: room.keys, replayGuard: &guardOfBob)
            #expect(received.message == message)
            #expect(received.sender == room.alice.publicKey)
            #expect(received.isBroadcast == broadcast)
            #expect(received.sequence == UInt64(100 + sequence))
        }
    }

    @Test func paddingBucketsGrowWithTheBody() throws {
        let room = try SignalingRoom()
        let long = "candidate:" + String(repeating: "x", count: 500)
        let envelope = try Envelope.seal(
            .iceCandidate(generation: 0, candidate: long), to: .peer(room.bob.peerIdentity), from: room.alice,
            sequence: 1, keys: room.keys)
        #expect(envelope.count == 1 + 24 + 1024 + 16)
        var replayGuard = EnvelopeReplayGuard()
        #expect(
            try Envelope.open(envelope, as: room.bob, keys: room.keys, replayGuard: &replayGuard).message
                == .iceCandidate(generation: 0, candidate: long))
    }

    @Test func wrongRoomSecretCannotDecryptOrForge() throws {
        let room = try SignalingRoom()
        let outsider = try RoomKeys(roomSecret: .random(count: 32))
        let envelope = try Envelope.seal(
            try room.hello(room.alice, name: "Alice"), to: .everyone, from: room.alice, sequence: 1, keys: room.keys)
        var replayGuard = EnvelopeReplayGuard()
        #expect(throws: EnvelopeError.authenticationFailed) {
            try Envelope.open(envelope, as: room.bob, keys: outsider, replayGuard: &replayGuard)
        }
        // An outsider's envelope, even signed by a real identity, does not open in the room.
        let forged = try Envelope.seal(
            try room.hello(room.mallory, name: "Mallory"), to: .everyone, from: room.mallory, sequence: 1,
            keys: outsider)
        #expect(throws: EnvelopeError.authenticationFailed) {
            try Envelope.open(forged, as: room.bob, keys: room.keys, replayGuard: &replayGuard)
        }
    }

    @Test func aTamperedByteAnywhereIsRejected() throws {
        let room = try SignalingRoom()
        let envelope = try Envelope.seal(
            .iceCandidate(generation: 1, candidate: SignalingRoom.candidate), to: .peer(room.bob.peerIdentity),
            from: room.alice, sequence: 9, keys: room.keys)
        for index in envelope.indices {
            var tampered = envelope
            tampered[index] ^= 0x04
            var replayGuard = EnvelopeReplayGuard()
            #expect(throws: EnvelopeError.self, "byte \(index)") {
                try Envelope.open(tampered, as: room.bob, keys: room.keys, replayGuard: &replayGuard)
            }
        }
        var replayGuard = EnvelopeReplayGuard()
        for cut in [0, 1, 25, envelope.count - 1] {
            #expect(throws: EnvelopeError.self) {
                try Envelope.open(Array(envelope.prefix(cut)), as: room.bob, keys: room.keys, replayGuard: &replayGuard)
            }
        }
        #expect(throws: EnvelopeError.self) {
            try Envelope.open(envelope + [0], as: room.bob, keys: room.keys, replayGuard: &replayGuard)
        }
    }

    @Test func replaysAreRejectedAndReorderingIsTolerated() throws {
        let room = try SignalingRoom()
        var sequencer = EnvelopeSequencer(start: 1_000)
        let envelopes = try (0..<5).map { _ in
            try Envelope.seal(
                .iceCandidatesDone(generation: 1), to: .peer(room.bob.peerIdentity), from: room.alice,
                sequence: sequencer.nextSequence(), keys: room.keys)
        }
        var replayGuard = EnvelopeReplayGuard()
        for index in [0, 2, 1, 4, 3] {
            _ = try Envelope.open(envelopes[index], as: room.bob, keys: room.keys, replayGuard: &replayGuard)
        }
        for envelope in envelopes {
            #expect(throws: EnvelopeError.replayed) {
                try Envelope.open(envelope, as: room.bob, keys: room.keys, replayGuard: &replayGuard)
            }
        }
        // The guard is per sender: Mallory's sequence numbers do not collide with Alice's.
        let fromMallory = try Envelope.seal(.bye, to: .everyone, from: room.mallory, sequence: 1_000, keys: room.keys)
        _ = try Envelope.open(fromMallory, as: room.bob, keys: room.keys, replayGuard: &replayGuard)
    }

    /// Mallory is a member (she knows the signaling key) and tries to pass as Alice.
    @Test func aMemberCannotImpersonateAnother() throws {
        let room = try SignalingRoom()
        var replayGuard = EnvelopeReplayGuard()

        // 1. Claiming Alice's identity in the header, signing with her own key.
        let plaintext = try Envelope.decrypt(
            try Envelope.seal(.bye, to: .everyone, from: room.mallory, sequence: 5, keys: room.keys), keys: room.keys)
        var spoofed = plaintext
        spoofed.replaceSubrange(1..<33, with: room.alice.publicKey)
        #expect(throws: EnvelopeError.badSignature) {
            try Envelope.open(
                try reseal(spoofed, keys: room.keys), as: room.bob, keys: room.keys, replayGuard: &replayGuard)
        }

        // 2. A HELLO naming Alice with Mallory's static key (to receive Alice's sealed messages).
        let aliceHello = try Envelope.decrypt(
            try Envelope.seal(
                try room.hello(room.alice, name: "Alice"), to: .everyone, from: room.alice, sequence: 6,
                keys: room.keys), keys: room.keys)
        var swapped = aliceHello
        let bodyStart = Envelope.headerLength
        swapped.replaceSubrange(bodyStart..<(bodyStart + 32), with: room.mallory.peerIdentity.staticKey)
        #expect(throws: EnvelopeError.badSignature) {
            try Envelope.open(
                try reseal(swapped, keys: room.keys), as: room.bob, keys: room.keys, replayGuard: &replayGuard)
        }

        // 3. Redirecting Alice's unicast to Bob (the recipient is signed).
        let toMallory = try Envelope.decrypt(
            try Envelope.seal(
                .iceRestart(generation: 2), to: .peer(room.mallory.peerIdentity), from: room.alice,
                sequence: 7, keys: room.keys), keys: room.keys)
        var redirected = toMallory
        redirected.replaceSubrange(33..<65, with: room.bob.publicKey)
        #expect(throws: EnvelopeError.badSignature) {
            try Envelope.open(
                try reseal(redirected, keys: room.keys), as: room.bob, keys: room.keys, replayGuard: &replayGuard)
        }

        // 4. Wrapping Alice's sealed candidate for Bob in an envelope of her own: the sealed box
        //    names Alice inside, so Bob refuses it as Mallory's.
        let aliceToBob = try Envelope.decrypt(
            try Envelope.seal(
                .iceCandidate(generation: 1, candidate: SignalingRoom.candidate),
                to: .peer(room.bob.peerIdentity), from: room.alice, sequence: 8, keys: room.keys), keys: room.keys)
        let sealedBody = try Envelope.Plaintext(parsing: aliceToBob).body
        let rewrapped = try sealRaw(
            kind: 0x03, body: Array(sealedBody), from: room.mallory, to: room.bob.publicKey, sequence: 9,
            keys: room.keys)
        #expect(throws: EnvelopeError.malformed("the sealed body names another sender")) {
            try Envelope.open(rewrapped, as: room.bob, keys: room.keys, replayGuard: &replayGuard)
        }
    }

    /// Other members can decrypt the envelope layer (they share the signaling key) but not the
    /// candidates and credentials sealed to someone else.
    @Test func sealedBodiesStayBetweenTheTwoPeers() throws {
        let room = try SignalingRoom()
        let envelope = try Envelope.seal(
            .iceCredentials(SignalingRoom.credentials), to: .peer(room.bob.peerIdentity), from: room.alice, sequence: 1,
            keys: room.keys)
        var replayGuard = EnvelopeReplayGuard()
        #expect(throws: EnvelopeError.notForUs) {
            try Envelope.open(envelope, as: room.mallory, keys: room.keys, replayGuard: &replayGuard)
        }
        let plaintext = try Envelope.decrypt(envelope, keys: room.keys)
        #expect(!contains(plaintext, Array(SignalingRoom.credentials.password.utf8)))
        let body = Array(try Envelope.Plaintext(parsing: plaintext).body)
        #expect(throws: SodiumError.authenticationFailed) { try SealedBox.open(body, with: room.mallory.staticKey) }
    }

    /// What the rendezvous relays contains no identity key, static key, name, candidate or
    /// credential in the clear, and every v1 message has the same size.
    @Test func theRendezvousSeesNothingUseful() throws {
        let room = try SignalingRoom()
        let secrets: [[UInt8]] = [
            room.alice.publicKey, room.bob.publicKey, room.alice.peerIdentity.staticKey, Array("Alice".utf8),
            Array("192.0.2.10".utf8), Array(SignalingRoom.credentials.password.utf8), room.keys.roomID,
        ]
        let envelopes = try [
            Envelope.seal(
                try room.hello(room.alice, name: "Alice"), to: .everyone, from: room.alice, sequence: 1, keys: room.keys
            ),
            Envelope.seal(
                .iceCandidate(generation: 0, candidate: SignalingRoom.candidate), to: .peer(room.bob.peerIdentity),
                from: room.alice, sequence: 2, keys: room.keys),
            Envelope.seal(
                .iceCredentials(SignalingRoom.credentials), to: .peer(room.bob.peerIdentity), from: room.alice,
                sequence: 3, keys: room.keys),
        ]
        for envelope in envelopes {
            for secret in secrets {
                #expect(!contains(envelope, Array(secret.prefix(8))))
            }
        }
        #expect(Set(envelopes.map(\.count)).count == 1)
    }

    @Test func addressingRules() throws {
        let room = try SignalingRoom()
        var replayGuard = EnvelopeReplayGuard()
        #expect(throws: EnvelopeError.self) {
            try Envelope.seal(
                .iceCandidatesDone(generation: 1), to: .everyone, from: room.alice, sequence: 1, keys: room.keys)
        }
        #expect(throws: EnvelopeError.self) {
            try Envelope.seal(
                try room.hello(room.bob, name: "Bob"), to: .everyone, from: room.alice, sequence: 1, keys: room.keys)
        }
        let own = try Envelope.seal(.bye, to: .everyone, from: room.alice, sequence: 1, keys: room.keys)
        #expect(throws: EnvelopeError.fromOurselves) {
            try Envelope.open(own, as: room.alice, keys: room.keys, replayGuard: &replayGuard)
        }
        // A unicast-only type broadcast by a (buggy or hostile) member is refused after it verified.
        let broadcastRestart = try sealRaw(
            kind: 0x05, body: [0, 0, 0, 1], from: room.alice, to: Envelope.broadcastRecipient, sequence: 2,
            keys: room.keys)
        #expect(throws: EnvelopeError.malformed("a iceRestart message was broadcast")) {
            try Envelope.open(broadcastRestart, as: room.bob, keys: room.keys, replayGuard: &replayGuard)
        }
        let unknown = try sealRaw(
            kind: 0x7F, body: [1], from: room.alice, to: Envelope.broadcastRecipient, sequence: 3, keys: room.keys)
        #expect(throws: EnvelopeError.unknownType(0x7F)) {
            try Envelope.open(unknown, as: room.bob, keys: room.keys, replayGuard: &replayGuard)
        }
        var badVersion = own
        badVersion[0] = 2
        #expect(throws: EnvelopeError.unsupportedVersion(2)) {
            try Envelope.open(badVersion, as: room.bob, keys: room.keys, replayGuard: &replayGuard)
        }
    }

    @Test(arguments: [
        "", " Alice", "Alice ", "Al\nice", "Al\u{0007}ice", "\u{202E}ecilA", "a\u{2028}b",
        String(repeating: "é", count: 33),
    ])
    func refusesBadDisplayNames(name: String) {
        #expect(throws: EnvelopeError.self) { try Hello.validateDisplayName(name) }
    }

    @Test func acceptsReasonableDisplayNames() throws {
        for name in ["Alice", "Zoë", "李小龍", "Ana María", "🎧 DJ", "👩‍💻", String(repeating: "a", count: 64)] {
            try Hello.validateDisplayName(name)
        }
    }

    @Test func replayGuardForgetsTheStalestSenderBeyondItsLimit() {
        var replayGuard = EnvelopeReplayGuard()
        let first = [UInt8](repeating: 1, count: 32)
        var accepted = [replayGuard.accept(sender: first, sequence: 10)]
        for index in 0..<EnvelopeReplayGuard.maximumSenders {
            let sender = [UInt8](repeating: 2, count: 30) + [UInt8(index >> 8), UInt8(index & 0xFF)]
            accepted.append(replayGuard.accept(sender: sender, sequence: 1))
        }
        #expect(accepted.allSatisfy { $0 })
        // The first sender was forgotten to make room: its window starts over.
        let again = replayGuard.accept(sender: first, sequence: 10)
        let twice = replayGuard.accept(sender: first, sequence: 10)
        #expect(again && !twice)
    }

    @Test func helloNegotiatesTheHighestCommonVersion() throws {
        let room = try SignalingRoom()
        let hello = try Hello(
            identity: room.alice.peerIdentity, sessionEpoch: 1, protocolVersions: [1, 2, 5], displayName: "A")
        #expect(hello.commonVersion(with: [1, 2]) == 2)
        #expect(hello.commonVersion(with: [3]) == nil)
        #expect(throws: EnvelopeError.self) {
            try Hello(identity: room.alice.peerIdentity, sessionEpoch: 1, protocolVersions: [2, 1], displayName: "A")
        }
        #expect(throws: EnvelopeError.self) {
            try Hello(identity: room.alice.peerIdentity, sessionEpoch: 0, displayName: "A")
        }
    }
}

/// Re-encrypts a modified plaintext under the room's signaling key, as a member could.
func reseal(_ plaintext: [UInt8], keys: RoomKeys) throws -> [UInt8] {
    Envelope.encrypt(plaintext, keys: keys, nonce: RandomBytes.bytes(count: 24))
}

/// A correctly signed envelope with an arbitrary type and body, as a member could make.
func sealRaw(
    kind: UInt8, body: [UInt8], from sender: NodeIdentity, to recipient: [UInt8], sequence: UInt64, keys: RoomKeys
)
    throws -> [UInt8]
{
    let signature = sender.sign(
        Envelope.signedBytes(
            roomID: keys.roomID, kind: kind, sender: sender.publicKey, recipient: recipient, sequence: sequence,
            body: body))
    let plaintext = Envelope.Plaintext.encode(
        type: kind, sender: sender.publicKey, recipient: recipient, sequence: sequence, signature: signature, body: body
    )
    return try reseal(plaintext, keys: keys)
}

func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
    guard !needle.isEmpty, haystack.count >= needle.count else { return false }
    return (0...(haystack.count - needle.count)).contains { haystack[$0..<($0 + needle.count)].elementsEqual(needle) }
}
