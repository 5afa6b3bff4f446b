import ParleyCore
import Testing

@testable import ParleyProtocol

/// `PeerSession.nextDeadline` is when the node's single timer wakes the session. Every deadline
/// must be a moment when `tick` acts: one it does not move would wake the node over and over (a
/// keepalive deadline that stayed put after the node had sent something did, once the meeting's
/// driver started to use the deadline).
@Suite("Session deadlines")
struct SessionDeadlineTests {
    /// Random traffic, silences, losses and time jumps; after each step, ticking both sides at
    /// their deadline must leave a later deadline or none.
    @Test(arguments: 1...12)
    func aTickAtTheDeadlineAlwaysMovesIt(seed: UInt64) throws {
        var random = SeededGenerator(seed: seed)
        var pair = try SessionPair.sameRoom()
        pair.start()
        for _ in 0..<400 {
            switch random.next() % 6 {
            case 0: pair.send([1, 2, 3], from: .a)
            case 1: pair.send([4, 5], from: .b)
            case 2: pair.run()
            case 3: pair.inFlight.removeAll()  // loss
            default: break
            }
            for side in [SessionPair.Side.a, .b] {
                let session = side == .a ? pair.a : pair.b
                guard let deadline = session.nextDeadline else { continue }
                if deadline > pair.now {
                    // Jump there now and then, as a sleeping driver would.
                    if random.next() % 3 == 0 { pair.now = deadline } else { continue }
                }
                let output = side == .a ? pair.a.tick(now: pair.now) : pair.b.tick(now: pair.now)
                pair.absorb(output, from: side)
                let after = side == .a ? pair.a.nextDeadline : pair.b.nextDeadline
                #expect(after.map { $0 > pair.now } ?? true, "seed \(seed): \(side)'s deadline stayed at or before now")
            }
            pair.now += .milliseconds(Int64(random.next() % 4000))
            pair.wall.advance(by: .milliseconds(1))
        }
    }

    /// The first initiation over a path that just came up can arrive before the peer's end of it
    /// carries packets: it is resent after 0.5 s, not 5 (the link would stay silent that long);
    /// later retries keep WireGuard's 5 s.
    @Test func theFirstInitiationOverANewPathIsResentAfterHalfASecond() throws {
        var pair = try SessionPair.sameRoom()
        let started = pair.now
        pair.filter = { _, _ in false }  // the peer's end is not ready yet
        pair.start()
        #expect(pair.sent[.a]?.count == 1)
        #expect(pair.a.nextDeadline == started + .milliseconds(500))
        pair.advance(by: .milliseconds(500))
        #expect(pair.sent[.a]?.count == 2)
        #expect(pair.a.nextDeadline == started + .milliseconds(5500))
        pair.filter = { _, _ in true }
        pair.advance(by: .seconds(5))
        #expect(pair.a.isEstablished && pair.b.isEstablished)
    }
}
