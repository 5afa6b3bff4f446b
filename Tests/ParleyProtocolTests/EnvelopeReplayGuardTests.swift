import Testing

@testable import ParleyProtocol

/// The envelope replay guard (§6.4 steps 6–7) against floods of fresh identities (issue 15,
/// finding 2).
@Suite("Envelope replay guard")
struct EnvelopeReplayGuardTests {
    static func sender(_ index: Int) -> [UInt8] {
        [UInt8(truncatingIfNeeded: index), UInt8(truncatingIfNeeded: index >> 8)] + Array(repeating: 9, count: 30)
    }

    @Test func aMembersWindowOutlivesAFloodOfOtherSenders() {
        var replayGuard = EnvelopeReplayGuard()
        let member = Self.sender(60_000)
        do {
            let accepted = replayGuard.accept(sender: member, sequence: 1_000)
            #expect(accepted)
        }
        replayGuard.keep(member)
        for index in 0..<(EnvelopeReplayGuard.maximumSenders + 50) {
            do {
                let accepted = replayGuard.accept(sender: Self.sender(index), sequence: 1)
                #expect(accepted)
            }
        }
        do {
            let accepted = replayGuard.accept(sender: member, sequence: 1_000)
            #expect(!accepted)  // still remembered: a replay
        }
        do {
            let accepted = replayGuard.accept(sender: member, sequence: 900)
            #expect(!accepted)  // and far behind
        }
        do {
            let accepted = replayGuard.accept(sender: member, sequence: 1_001)
            #expect(accepted)
        }
    }

    @Test func anOrdinarySenderIsForgottenAfterAFlood() {
        var replayGuard = EnvelopeReplayGuard()
        let stranger = Self.sender(60_000)
        do {
            let accepted = replayGuard.accept(sender: stranger, sequence: 1_000)
            #expect(accepted)
        }
        for index in 0..<EnvelopeReplayGuard.maximumSenders {
            _ = replayGuard.accept(sender: Self.sender(index), sequence: 1)
        }
        #expect(!replayGuard.hasWindow(for: stranger))
        // Released members become ordinary again.
        let member = Self.sender(60_001)
        replayGuard.keep(member)
        replayGuard.release(member)
        for index in 0..<EnvelopeReplayGuard.maximumSenders {
            _ = replayGuard.accept(sender: Self.sender(index + 300), sequence: 1)
        }
        #expect(!replayGuard.hasWindow(for: member))
    }

    @Test func unknownTypesCreateNoWindowButAreRecordedForKnownSenders() throws {
        let room = try SignalingRoom()
        var replayGuard = EnvelopeReplayGuard()
        let unknown = try sealRaw(
            kind: 0x7F, body: [1], from: room.alice, to: Envelope.broadcastRecipient, sequence: 7, keys: room.keys)
        #expect(throws: EnvelopeError.unknownType(0x7F)) {
            try Envelope.open(unknown, as: room.bob, keys: room.keys, replayGuard: &replayGuard)
        }
        #expect(!replayGuard.hasWindow(for: room.alice.publicKey))
        let hello = try Envelope.seal(
            try room.hello(room.alice, name: "Alice"), to: .everyone, from: room.alice, sequence: 6, keys: room.keys)
        _ = try Envelope.open(hello, as: room.bob, keys: room.keys, replayGuard: &replayGuard)
        #expect(throws: EnvelopeError.unknownType(0x7F)) {
            try Envelope.open(unknown, as: room.bob, keys: room.keys, replayGuard: &replayGuard)
        }
        #expect(throws: EnvelopeError.replayed) {
            try Envelope.open(unknown, as: room.bob, keys: room.keys, replayGuard: &replayGuard)
        }
    }
}
