import ParleyCore
import ParleyTestSupport
import Synchronization
import Testing

@testable import ParleyProtocol
@testable import Sodium

@Suite("Pairwise handshake and transport (§7, §8)")
struct PeerSessionTests {
    @Test func handshakeEstablishesAndCarriesPayloadsBothWays() throws {
        var pair = try SessionPair.sameRoom()
        #expect(pair.a.isPreferredInitiator && !pair.b.isPreferredInitiator)
        pair.start()
        // Initiation → response → keepalive confirming the keys to the responder.
        #expect(pair.sent[.a]?.map(\.count) == [HandshakePacket.initiationLength, 32 + 1])
        #expect(pair.sent[.b]?.map(\.count) == [HandshakePacket.responseLength])
        #expect(pair.events[.a] == [.established])
        #expect(pair.events[.b] == [.established])
        #expect(pair.a.isEstablished && pair.b.isEstablished)
        pair.send(Array("hello bob".utf8), from: .a)
        pair.send(Array("hello alice".utf8), from: .b, type: .sessionControl)
        pair.run()
        #expect(pair.payloads[.b]?.map { Array($0.body) } == [Array("hello bob".utf8)])
        #expect(pair.payloads[.a]?.first?.type == .sessionControl)
        #expect(pair.payloads[.a]?.map { Array($0.body) } == [Array("hello alice".utf8)])
        #expect(pair.drops[.a] == [] && pair.drops[.b] == [])
    }

    @Test func theResponderWaitsForConfirmationBeforeSending() throws {
        var pair = try SessionPair.sameRoom()
        // Lose the initiator's confirming keepalive.
        pair.filter = { to, datagram in !(to == .b && datagram[0] == PacketType.transportData.rawValue) }
        pair.start()
        #expect(pair.a.isEstablished)
        #expect(!pair.b.isEstablished)
        let sealed1 = pair.send([1], from: .b)
        #expect(!sealed1)
        pair.filter = { _, _ in true }
        pair.send([2], from: .a)
        pair.run()
        #expect(pair.b.isEstablished)
        #expect(pair.events[.b] == [.established])
        let sealed2 = pair.send([3], from: .b)
        #expect(sealed2)
    }

    @Test func wrongRoomSecretCannotCompleteAHandshake() throws {
        var pair = SessionPair(
            keysA: try RoomKeys(roomSecret: .random(count: 32)), keysB: try RoomKeys(roomSecret: .random(count: 32)))
        pair.start()
        pair.advance(by: .seconds(6))
        #expect(!pair.a.isEstablished && !pair.b.isEstablished)
        #expect(pair.drops[.b]?.allSatisfy { $0 == .handshake(.badMAC) } == true)
        #expect(pair.drops[.b]?.isEmpty == false)
    }

    /// Even a member who knows the MAC key but not the PSK (or the reverse) gets no session.
    @Test func theRightMACKeyWithTheWrongPSKStillFails() throws {
        let real = try RoomKeys(roomSecret: .random(count: 32))
        let wrongPSK = RoomKeys(
            roomKey: real.roomKey, signalingKey: real.signalingKey, noisePSK: .random(count: 32), macKey: real.macKey)
        var pair = SessionPair(keysA: real, keysB: wrongPSK)
        pair.start()
        #expect(!pair.a.isEstablished && !pair.b.isEstablished)
        // The responder could not tell (the PSK is mixed in its own message); the initiator can.
        #expect(pair.drops[.a] == [.handshake(.noiseFailed)])
    }

    @Test func aTamperedByteAnywhereIsRejected() throws {
        var pair = try SessionPair.sameRoom()
        pair.filter = { _, _ in false }  // capture, do not deliver
        pair.start()
        let initiation = pair.sent[.a]![0]
        pair.expectEveryFlipRejected(initiation, to: .b, flipping: 0x80)
        pair.deliver(initiation, to: .b)
        let response = pair.sent[.b]![0]
        pair.expectEveryFlipRejected(response, to: .a, flipping: 0x80)
        pair.deliver(response, to: .a)
        #expect(pair.a.isEstablished)
        pair.deliver(pair.sent[.a]!.last!, to: .b)
        #expect(pair.b.isEstablished)
        pair.send(Array(repeating: 7, count: 100), from: .a)
        let packet = pair.inFlight.removeLast().datagram
        pair.expectEveryFlipRejected(packet, to: .b, flipping: 0x01)
        pair.deliver(packet, to: .b)
        #expect(pair.payloads[.b]?.count == 1)
    }

    @Test func replaysAreRejected() throws {
        var pair = try SessionPair.sameRoom()
        pair.start()
        let initiation = pair.sent[.a]![0]
        let response = pair.sent[.b]![0]
        pair.send([1, 2, 3], from: .a)
        let packet = pair.inFlight.last!.datagram
        pair.run()
        #expect(pair.payloads[.b]?.count == 1)
        pair.clearRecords()

        pair.deliver(packet, to: .b)
        #expect(pair.drops[.b] == [.replayed])
        #expect(pair.payloads[.b] == [])
        pair.deliver(initiation, to: .b)
        #expect(pair.drops[.b]?.last == .repeatedInitiation)
        #expect(pair.sent[.b] == [], "no response to a replayed initiation")
        pair.deliver(response, to: .a)
        #expect(pair.drops[.a] == [.handshake(.unknownIndex)])
        #expect(pair.b.statistics.replaysRejected == 1)
    }

    /// Packets that arrive out of order within the window are accepted once each.
    @Test func reorderingWithinTheWindowIsAccepted() throws {
        var pair = try SessionPair.sameRoom()
        pair.start()
        for index in 0..<50 { pair.send([UInt8(index)], from: .a) }
        let packets = pair.inFlight.map(\.datagram)
        pair.inFlight.removeAll()
        var order = Array(packets.indices)
        order.reverse()
        for index in order { pair.deliver(packets[index], to: .b) }
        for index in order { pair.deliver(packets[index], to: .b) }
        #expect(pair.payloads[.b]?.count == 50)
        #expect(Set(pair.payloads[.b]!.map { $0.body.first! }).count == 50)
        #expect(pair.drops[.b]?.count == 50)
    }

    /// Audio at 50 packets/s each way for ten minutes: rekeys every ~120 s, no packet lost or
    /// rejected across them, and keys never expire.
    @Test func rekeyingNeverInterruptsTraffic() throws {
        var pair = try SessionPair.sameRoom()
        pair.start()
        var sentCount = 0
        for step in 1...(600 * 50) {
            pair.now += .milliseconds(20)
            pair.wall.advance(by: .milliseconds(20))
            let sealed3 = pair.send([UInt8(step & 0xFF)], from: .a)
            #expect(sealed3)
            let sealed4 = pair.send([UInt8(step & 0xFF)], from: .b)
            #expect(sealed4)
            sentCount += 1
            if step % 50 == 0 {
                pair.absorb(pair.a.tick(now: pair.now), from: .a)
                pair.absorb(pair.b.tick(now: pair.now), from: .b)
            }
            pair.run()
        }
        #expect(pair.payloads[.a]?.count == sentCount)
        #expect(pair.payloads[.b]?.count == sentCount)
        #expect(pair.drops[.a] == [] && pair.drops[.b] == [])
        let rekeysA = pair.events[.a]!.filter { $0 == .rekeyed }.count
        #expect(rekeysA == 5, "rekeys at 120, 240, 360, 480 and 600 s")
        #expect(!pair.events[.a]!.contains(.expired) && !pair.events[.b]!.contains(.expired))
        #expect(pair.a.statistics.handshakesCompleted == 6)
    }

    /// In flight during a rekey: packets sealed with the old keys still open after the new keys
    /// took over (the previous slot), until those keys expire.
    @Test func previousKeysStillReceiveUntilTheyExpire() throws {
        var pair = try SessionPair.sameRoom()
        pair.start()
        pair.send([1], from: .b)
        pair.send([2], from: .b)
        let oldPackets = pair.inFlight.map(\.datagram)
        pair.inFlight.removeAll()
        pair.advance(by: .seconds(121))
        #expect(pair.events[.a]?.contains(.rekeyed) == true)
        pair.deliver(oldPackets[0], to: .a)
        #expect(pair.payloads[.a]?.count == 1)
        #expect(pair.drops[.a] == [])
        pair.advance(by: .seconds(60))
        #expect(pair.a.isEstablished, "the new keys are still current")
        pair.deliver(oldPackets[1], to: .a)
        #expect(pair.drops[.a]?.last == .unknownIndex, "previous keys are gone after 180 s")
    }

    @Test func keysExpireWithoutARekeyAndAreZeroedWhenDropped() throws {
        var pair = try SessionPair.sameRoom()
        pair.start()
        // From now on every handshake message is lost.
        pair.filter = { _, datagram in datagram[0] == PacketType.transportData.rawValue }
        let freed = Mutex<[[UInt8]]>([])
        let hook: @Sendable (UnsafeMutableRawBufferPointer) -> Void = { buffer in
            freed.withLock { $0.append(Array(buffer)) }
        }
        // Swap in keys that report their zeroing, keeping the session's indices and counter.
        do {
            let current = pair.a.current!
            var send = SecureBytes(zeroedCount: 32, onFree: hook)
            var receive = SecureBytes(zeroedCount: 32, onFree: hook)
            current.sendKey.withUnsafeBytes { bytes in send.withUnsafeMutableBytes { $0.copyMemory(from: bytes) } }
            current.receiveKey.withUnsafeBytes { bytes in receive.withUnsafeMutableBytes { $0.copyMemory(from: bytes) }
            }
            var swapped = TransportKeypair(
                localIndex: current.localIndex, remoteIndex: current.remoteIndex,
                keys: TransportKeys(send: send, receive: receive), isInitiator: true, createdAt: current.createdAt)
            swapped.sendCounter = current.sendCounter
            pair.a.current = swapped
        }
        let sealed5 = pair.send([1], from: .a)
        #expect(sealed5)
        pair.run()
        #expect(pair.payloads[.b]?.count == 1, "the swapped-in keys are the session's keys")

        pair.advance(by: .seconds(179))
        #expect(pair.a.isEstablished)
        #expect(freed.withLock { $0.isEmpty })
        pair.advance(by: .seconds(1))
        #expect(pair.events[.a]?.contains(.expired) == true)
        #expect(pair.events[.b]?.contains(.expired) == true)
        let sealed6 = pair.send([2], from: .a)
        #expect(!sealed6)
        let sealed7 = pair.send([2], from: .b)
        #expect(!sealed7)
        let zeroed = freed.withLock { $0 }
        #expect(zeroed.count == 2)
        #expect(zeroed.allSatisfy { $0.count == 32 && $0.allSatisfy { $0 == 0 } })
    }

    @Test func initiationsAreRetriedThenGivenUp() throws {
        var pair = try SessionPair.sameRoom()
        pair.filter = { _, _ in false }
        pair.start()
        #expect(pair.sent[.a]?.count == 1)
        pair.advance(by: .seconds(5))
        #expect(pair.sent[.a]?.count == 2)
        let first = pair.sent[.a]![0]
        let second = pair.sent[.a]![1]
        #expect(first[4..<8] != second[4..<8], "a retry uses a new index")
        #expect(first[8..<40] != second[8..<40], "a retry uses a new ephemeral")
        for _ in 0..<20 { pair.advance(by: .seconds(5)) }
        #expect(pair.events[.a]?.contains(.handshakeTimedOut) == true)
        let attempts = pair.sent[.a]!.count
        pair.advance(by: .seconds(30))
        #expect(pair.sent[.a]!.count == attempts, "no more attempts after giving up")
        // A new path (ICE restart) starts over, and this time the messages get through.
        pair.filter = { _, _ in true }
        pair.absorb(pair.a.start(now: pair.now), from: .a)
        pair.run()
        #expect(pair.a.isEstablished && pair.b.isEstablished)
    }

    /// Both sides initiate at once (the preferred initiator's first attempt was lost, so the other
    /// side initiated too): exactly one session results.
    @Test func glareResolvesToExactlyOneSession() throws {
        var pair = try SessionPair.sameRoom()
        pair.filter = { _, _ in false }
        pair.start()
        #expect(pair.sent[.b]?.isEmpty == true, "the other side waits for the preferred initiator first")
        pair.advance(by: .seconds(5))
        let fromA = pair.sent[.a]!.last!
        let fromB = pair.sent[.b]!.last!
        #expect(
            fromA[0] == PacketType.handshakeInitiation.rawValue && fromB[0] == PacketType.handshakeInitiation.rawValue)
        pair.filter = { _, _ in true }
        pair.inFlight.removeAll()
        pair.clearRecords()
        // The two initiations cross.
        pair.deliver(fromB, to: .a)
        pair.deliver(fromA, to: .b)
        pair.run()
        #expect(pair.drops[.a] == [.glareLostByPeer])
        #expect(pair.events[.a] == [.established] && pair.events[.b] == [.established])
        #expect(pair.a.current?.localIndex == pair.b.current?.remoteIndex)
        #expect(pair.b.current?.localIndex == pair.a.current?.remoteIndex)
        #expect(pair.a.next == nil && pair.b.next == nil)
        pair.send([9], from: .b)
        pair.send([8], from: .a)
        pair.run()
        #expect(pair.payloads[.a]?.count == 1 && pair.payloads[.b]?.count == 1)
        pair.advance(by: .seconds(10))
        #expect(pair.events[.a] == [.established] && pair.events[.b] == [.established], "and it stays one session")
    }

    /// The receiver index is in clear: anyone who can spoof the peer's address can send packets
    /// that name it. However many fail to authenticate, they are only counted (§8.7): the keys,
    /// the replay window and the traffic stay as they were (issue 15, finding 5).
    @Test func forgedPacketsNeverTearASessionDown() throws {
        var pair = try SessionPair.sameRoom()
        pair.start()
        pair.send([1], from: .a)
        var forged = pair.inFlight.removeLast().datagram
        forged[forged.count - 1] ^= 1
        pair.clearRecords()
        let keys = (pair.b.current?.localIndex, pair.b.previous?.localIndex, pair.b.next?.localIndex)
        for attempt in 1...1000 {
            var packet = forged
            // Fresh counters, so the replay check does not stop them before decryption.
            packet[14] = UInt8(attempt >> 8)
            packet[15] = UInt8(attempt & 0xff)
            pair.deliver(packet, to: .b)
        }
        #expect(pair.events[.b] == [])
        #expect(pair.drops[.b] == Array(repeating: .authenticationFailed, count: 1000))
        #expect(pair.b.statistics.authenticationFailures == 1000)
        #expect(pair.b.isEstablished)
        #expect((pair.b.current?.localIndex, pair.b.previous?.localIndex, pair.b.next?.localIndex) == keys)
        #expect(pair.sent[.b] == [], "no handshake, nothing sent")
        // The forged counters were never recorded: the genuine packets still arrive.
        pair.send([2], from: .a)
        pair.run()
        #expect(pair.payloads[.b]?.map { Array($0.body) } == [[2]])
    }

    /// A captured initiation keeps a valid mac1, so replaying it used to cost the responder two
    /// Diffie-Hellman operations each time (issue 15, finding 6). A copy of one it processed is
    /// now dropped after a hash; other stale initiations draw on a budget (a burst of 5, then 1
    /// per second) before any Diffie-Hellman, and the peer's genuine next one still gets through.
    @Test func replayedAndFloodedInitiationsCostNoDiffieHellman() throws {
        var pair = try SessionPair.sameRoom()
        pair.filter = { _, _ in false }  // a's initiations are captured, not delivered
        var captured: [[UInt8]] = []
        for _ in 0..<12 {
            pair.close(.a)
            pair.absorb(pair.a.start(now: pair.now), from: .a)
            captured.append(pair.inFlight.removeLast().datagram)
            pair.wall.advance(by: .milliseconds(1))
        }
        pair.filter = { _, _ in true }
        pair.clearRecords()
        pair.deliver(captured.last!, to: .b)  // the newest: accepted, answered
        #expect(pair.sent[.b]?.count == 1)

        for initiation in captured.dropLast() { pair.deliver(initiation, to: .b) }
        // Four tokens were left: four old ones cost a handshake's Diffie-Hellman and were found
        // stale by their timestamp; the other seven never reached it.
        #expect(
            pair.drops[.b] == Array(repeating: .handshake(.replayedTimestamp), count: 4)
                + Array(repeating: .initiationFlood, count: 7))
        pair.clearRecords()
        for initiation in captured { pair.deliver(initiation, to: .b) }
        #expect(
            pair.drops[.b] == Array(repeating: .repeatedInitiation, count: 4)
                + Array(repeating: .initiationFlood, count: 7) + [.repeatedInitiation])
        #expect(pair.sent[.b] == [], "no response to any of them")

        // A second later there is one token again; a's next genuine initiation takes it.
        pair.now += .seconds(1)
        pair.wall.advance(by: .seconds(1))
        pair.clearRecords()
        pair.close(.a)
        pair.absorb(pair.a.start(now: pair.now), from: .a)
        pair.run()
        #expect(pair.drops[.b] == [])
        #expect(pair.a.isEstablished)
    }

    @Test func innerTypesAndKeepalives() throws {
        var pair = try SessionPair.sameRoom()
        pair.start()
        pair.clearRecords()
        pair.send([], from: .a, type: .keepalive)
        pair.send([1], from: .a, type: .keepalive)
        pair.send([1], from: .a, type: InnerPacketType(rawValue: 0x42))
        pair.send([1], from: .a, type: .relay)  // version 2 and later only; these are version 1
        pair.run()
        #expect(pair.payloads[.b] == [])
        #expect(pair.drops[.b] == [.malformed, .unknownInnerType(0x42), .unknownInnerType(0x03)])
        // Passive keepalive: b received media and sent nothing for 10 s, so it sends one.
        pair.send([5], from: .a)
        pair.run()
        pair.advance(by: .seconds(9))
        #expect(pair.sent[.b] == [])
        pair.advance(by: .seconds(1))
        #expect(pair.sent[.b]?.count == 1)
        pair.advance(by: .seconds(10))
        #expect(pair.sent[.b]?.count == 1, "one keepalive per silence")
    }

    @Test func malformedDatagramsAreDroppedQuietly() throws {
        var pair = try SessionPair.sameRoom()
        pair.start()
        pair.clearRecords()
        for datagram: [UInt8] in [
            [], [0x00], [0x04, 0, 0, 0], [0x01], [0x02, 0, 0, 0, 1], [0x03] + [UInt8](repeating: 0, count: 20),
        ] {
            pair.deliver(datagram, to: .b)
        }
        #expect(
            pair.drops[.b] == [
                .malformed, .unknownPacketType, .unknownPacketType, .handshake(.malformed), .handshake(.unknownIndex),
                .malformed,
            ])
        #expect(pair.sent[.b] == [])
    }

    @Test func aSecondStartKeepsAnEstablishedSession() throws {
        var pair = try SessionPair.sameRoom()
        pair.start()
        pair.clearRecords()
        pair.absorb(pair.a.start(now: pair.now), from: .a)
        pair.absorb(pair.b.start(now: pair.now), from: .b)
        pair.run()
        #expect(pair.sent[.a] == [] && pair.sent[.b] == [])
        #expect(pair.a.nextDeadline != nil)
    }

    @Test func initiationFloodsAreDropped() throws {
        var pair = try SessionPair.sameRoom()
        pair.filter = { to, _ in to == .b }
        pair.start()
        pair.now += .milliseconds(5)
        pair.wall.advance(by: .milliseconds(5))
        pair.close(.a)
        pair.absorb(pair.a.start(now: pair.now), from: .a)
        pair.run()
        #expect(pair.drops[.b] == [.initiationFlood])
    }
}

extension SessionPair {
    /// Delivers `datagram` with each byte in turn flipped, each to a copy of this pair: every
    /// variant must be dropped without a reply, a payload or a change of state.
    func expectEveryFlipRejected(_ datagram: [UInt8], to side: Side, flipping mask: UInt8) {
        for index in datagram.indices {
            var copy = self
            var tampered = datagram
            tampered[index] ^= mask
            copy.deliver(tampered, to: side)
            #expect(copy.drops[side]?.count == (drops[side]?.count ?? 0) + 1, "byte \(index)")
            #expect(copy.sent[side]?.count == sent[side]?.count, "byte \(index): no reply")
            #expect(copy.payloads[side]?.count == payloads[side]?.count, "byte \(index): no payload")
            #expect(copy.a.isEstablished == a.isEstablished && copy.b.isEstablished == b.isEstablished)
        }
    }

    mutating func close(_ side: Side) {
        if side == .a { a.close() } else { b.close() }
    }
}
