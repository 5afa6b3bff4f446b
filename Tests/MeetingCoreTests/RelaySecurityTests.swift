import MeetingCore
import ParleyCore
import ParleyProtocol
import Sodium
import Testing

/// A member that relays for two others (docs/PROTOCOL.md §13) sees only their sealed packets:
/// it can drop or delay them, never read, forge, replay or inject; and nobody can make it relay
/// for someone who is not in the meeting with it.
@Suite("Relaying: what a relaying member cannot do")
struct RelaySecurityTests {
    static let start = Instant.now
    static let keys = try! RoomKeys(roomSecret: SecureBytes(copying: [UInt8](repeating: 9, count: 32)))

    static func identity(_ byte: UInt8) -> NodeIdentity {
        try! NodeIdentity(
            identitySeed: SecureBytes(copying: [UInt8](repeating: byte, count: 32)),
            staticSecret: SecureBytes(copying: [UInt8](repeating: byte &+ 50, count: 32)))
    }

    /// The meeting's default timing with authenticated packets said every `factInterval`.
    static func timing(factInterval: Duration) -> MeetingTiming {
        var timing = MeetingTiming()
        timing.authenticatedFactInterval = factInterval
        return timing
    }

    /// Alice's and Carol's sessions, established by passing their handshake through `carry`
    /// (the relay's hands), with `version` (2 unless said); each knows the other's session epoch
    /// as 1.
    static func establishedPair(
        factInterval: Duration = .zero, version: UInt8 = 2
    ) -> (
        alice: LinkSession, carol: LinkSession
    ) {
        let alice = identity(1)
        let carol = identity(3)
        var a = LinkSession(
            session: PeerSession(local: alice, peer: carol.peerIdentity, keys: keys, protocolVersion: version),
            timing: timing(factInterval: factInterval), peerEpoch: 1)
        var c = LinkSession(
            session: PeerSession(local: carol, peer: alice.peerIdentity, keys: keys, protocolVersion: version),
            timing: timing(factInterval: factInterval), peerEpoch: 1)
        var toCarol = a.start(now: start, rehandshake: false).datagrams
        var toAlice = c.start(now: start, rehandshake: false).datagrams
        for _ in 0..<4 {
            let forAlice = toAlice
            let forCarol = toCarol
            toAlice = forCarol.flatMap {
                c.receive($0, now: start, nowMs: 1, via: [UInt8](repeating: 2, count: 32)).datagrams
            }
            toCarol = forAlice.flatMap {
                a.receive($0, now: start, nowMs: 1, via: [UInt8](repeating: 2, count: 32)).datagrams
            }
        }
        #expect(a.session.isEstablished && c.session.isEstablished)
        return (a, c)
    }

    static func media(from sender: inout LinkSession, _ body: [UInt8]) -> [UInt8] {
        var packet: [UInt8] = []
        #expect(sender.seal(.media, body: body, now: start, into: &packet))
        return packet
    }

    @Test func aRelayedPacketArrivesAsItWasSent() {
        var (alice, carol) = Self.establishedPair()
        let packet = Self.media(from: &alice, [1, 2, 3, 4, 5])
        let relay = [UInt8](repeating: 2, count: 32)
        let received = carol.receive(packet, now: Self.start, nowMs: 2, via: relay)
        #expect(received.media.map(Array.init) == [1, 2, 3, 4, 5])
        // It counts for the link's liveness, over the route its session came up on (through the relay).
        #expect(received.facts.contains(.stillAuthenticated(at: Self.start, spacing: .zero)))
    }

    /// The relay cannot read the media: the payload is nowhere in what it carries.
    @Test func theRelaySeesOnlyCiphertext() {
        var (alice, _) = Self.establishedPair()
        let secret: [UInt8] = Array("the words alice said".utf8)
        let packet = Self.media(from: &alice, secret)
        let found = (0...(packet.count - secret.count)).contains { Array(packet[$0..<($0 + secret.count)]) == secret }
        #expect(!found)
    }

    /// Every bit the relay changes makes the packet worthless: no media, no fact.
    @Test(arguments: [16, 20, 30, 40])
    func aTamperedPacketIsDropped(position: Int) {
        var (alice, carol) = Self.establishedPair()
        var packet = Self.media(from: &alice, Array(repeating: 7, count: 40))
        packet[position] ^= 0x01
        let received = carol.receive(packet, now: Self.start, nowMs: 2, via: [UInt8](repeating: 2, count: 32))
        #expect(received.media == nil)
        #expect(received.facts.isEmpty)
    }

    /// Replaying or reordering what it carried gains nothing: each packet is accepted once.
    @Test func replayedPacketsAreDropped() {
        var (alice, carol) = Self.establishedPair()
        let first = Self.media(from: &alice, [1])
        let second = Self.media(from: &alice, [2])
        let relay = [UInt8](repeating: 2, count: 32)
        #expect(carol.receive(second, now: Self.start, nowMs: 2, via: relay).media != nil)
        #expect(carol.receive(first, now: Self.start, nowMs: 2, via: relay).media != nil)  // reordered: once
        #expect(carol.receive(second, now: Self.start, nowMs: 2, via: relay).media == nil)
        #expect(carol.receive(first, now: Self.start, nowMs: 2, via: relay).media == nil)
    }

    /// A packet the relay makes up itself, claiming to carry it for Alice, authenticates under
    /// nothing: Carol drops it. (Handshake messages alike: mac1 and the Noise keys bind them.)
    @Test func aForgedPacketIsDropped() {
        var (_, carol) = Self.establishedPair()
        let eve = Self.identity(5)
        var forger = LinkSession(
            session: PeerSession(local: eve, peer: Self.identity(3).peerIdentity, keys: Self.keys, protocolVersion: 2),
            timing: Self.timing(factInterval: .zero), peerEpoch: 1)
        let initiation = forger.start(now: Self.start, rehandshake: false).datagrams
        for datagram in initiation {
            let received = carol.receive(datagram, now: Self.start, nowMs: 2, via: [UInt8](repeating: 2, count: 32))
            #expect(received.datagrams.isEmpty && received.facts.isEmpty)
        }
        var fake: [UInt8] = [3, 0, 0, 0] + [UInt8](repeating: 0xAB, count: 60)
        fake[4] = 0x12
        #expect(carol.receive(fake, now: Self.start, nowMs: 2).facts.isEmpty)
    }

    // MARK: Who a member relays for

    static let a = [UInt8](repeating: 0xA, count: 32)
    static let b = [UInt8](repeating: 0xB, count: 32)
    static let c = [UInt8](repeating: 0xC, count: 32)
    static let stranger = [UInt8](repeating: 0xE, count: 32)

    @Test func onlyPairsOfLinkedMembersAreCarried() {
        var table = RelayTable(policy: RelayPolicy(linked: [Self.a, Self.c], maximumPairs: 4))
        let decision1 = table.decide(from: Self.a, to: Self.c, at: Self.start)
        #expect(decision1 == .forward)
        let decision2 = table.decide(from: Self.a, to: Self.stranger, at: Self.start)
        #expect(decision2 == .refuse(.notLinked, tell: true))
        let decision3 = table.decide(from: Self.stranger, to: Self.c, at: Self.start)
        #expect(decision3 == .refuse(.notLinked, tell: true))
        let decision4 = table.decide(from: Self.a, to: Self.a, at: Self.start)
        #expect(decision4 == .refuse(.notLinked, tell: true))
        // A refusal is said at most once a second per asker and destination.
        let decision5 = table.decide(from: Self.a, to: Self.stranger, at: Self.start + .milliseconds(500))
        #expect(decision5 == .refuse(.notLinked, tell: false))
        let decision6 = table.decide(from: Self.a, to: Self.stranger, at: Self.start + .seconds(1))
        #expect(decision6 == .refuse(.notLinked, tell: true))
    }

    @Test func aRelayCarriesAtMostItsLimitOfPairs() {
        let members = (1...6).map { [UInt8](repeating: UInt8($0), count: 32) }
        var table = RelayTable(policy: RelayPolicy(linked: Set(members), maximumPairs: 2))
        let decision7 = table.decide(from: members[0], to: members[1], at: Self.start)
        #expect(decision7 == .forward)
        let decision8 = table.decide(from: members[2], to: members[3], at: Self.start)
        #expect(decision8 == .forward)
        let decision9 = table.decide(from: members[4], to: members[5], at: Self.start)
        #expect(decision9 == .refuse(.busy, tell: true))
        // The pair's other end asks in the same second, and hears its own refusal.
        let decision9b = table.decide(from: members[5], to: members[4], at: Self.start + .milliseconds(100))
        #expect(decision9b == .refuse(.busy, tell: true))
        let decision9c = table.decide(from: members[5], to: members[4], at: Self.start + .milliseconds(200))
        #expect(decision9c == .refuse(.busy, tell: false))
        let decision10 = table.decide(from: members[1], to: members[0], at: Self.start)
        #expect(decision10 == .forward)  // the same pair
        #expect(table.activePairs(at: Self.start).count == 2)
        // Pairs that went quiet free their place.
        let decision11 = table.decide(from: members[4], to: members[5], at: Self.start + .seconds(11))
        #expect(decision11 == .forward)
    }

    @Test func refusalsTowardMadeUpKeysAreForgotten() {
        var table = RelayTable(policy: RelayPolicy(linked: [Self.a, Self.c], maximumPairs: 4))
        for index in 0..<5000 {
            let madeUp = [UInt8](repeating: 0, count: 28) + withUnsafeBytes(of: UInt32(index).bigEndian, Array.init)
            _ = table.decide(from: Self.a, to: madeUp, at: Self.start + .milliseconds(index))
        }
        #expect(table.refusalsRemembered <= RelayTable.refusalMemoryLimit)
        // A refusal told within the last second is still remembered.
        let recent = [UInt8](repeating: 0, count: 28) + withUnsafeBytes(of: UInt32(4999).bigEndian, Array.init)
        let decision = table.decide(from: Self.a, to: recent, at: Self.start + .milliseconds(5000))
        #expect(decision == .refuse(.notLinked, tell: false))
    }

    @Test func aNodeThatDoesNotRelayRefusesEverything() {
        var table = RelayTable(policy: RelayPolicy(linked: [Self.a, Self.c], maximumPairs: 0))
        let decision12 = table.decide(from: Self.a, to: Self.c, at: Self.start)
        #expect(decision12 == .refuse(.declines, tell: true))
    }

    /// A member cannot flood the mesh with envelopes through a relay.
    @Test func envelopesOverTheMeshAreRateLimitedPerSender() {
        var table = RelayTable(policy: RelayPolicy(linked: [Self.a, Self.c], maximumPairs: 4))
        let accepted = (0..<100).filter { _ in table.acceptEnvelope(from: Self.a, at: Self.start) }.count
        #expect(accepted == Int(RelayTable.envelopeBurst))
        let accepted13 = table.acceptEnvelope(from: Self.stranger, at: Self.start)
        #expect(!accepted13)
        let accepted14 = table.acceptEnvelope(from: Self.a, at: Self.start + .seconds(1))
        #expect(accepted14)
    }
}
