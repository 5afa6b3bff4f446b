import MeetingCore
import ParleyCore
import ParleyProtocol
import Sodium
import Testing

/// One copy up (docs/PROTOCOL.md §15): what the member that passes a sender's frames on can and
/// cannot do, and what it passes on for whom. Alice (identity 1) sends, Carol (3) receives, and
/// the member in between holds the frames: anything it changes, makes up or repeats is dropped.
@Suite("One copy up: signed frames and who passes them on")
struct FanOutTests {
    typealias Pair = RelaySecurityTests
    static let start = Pair.start
    static let alicesEpoch: UInt64 = 1

    static func signer(
        _ identity: NodeIdentity = Pair.identity(1), epoch: UInt64 = alicesEpoch, room: [UInt8]? = nil
    )
        -> FanOutSigner
    {
        FanOutSigner(identity: identity, roomID: room ?? Pair.keys.roomID, epoch: epoch)
    }

    static func frame(_ media: [UInt8], _ signer: inout FanOutSigner) -> [UInt8] {
        var frame: [UInt8] = []
        media.withUnsafeBytes { signer.sign($0, into: &frame) }
        return frame
    }

    /// A media payload (§9.1) with sequence number `sequence`.
    static func media(_ sequence: UInt16 = 0x1234) -> [UInt8] {
        [1, 0, UInt8(sequence >> 8), UInt8(sequence & 0xFF), 1, 2, 3, 4, 3, 0xC0, 0xF8, 0x50, 0x51]
    }

    static let media = media()

    /// Carol's session with Alice plays Alice's frame that a member passed on, once: it counts as
    /// Alice's media (her REPORTs say so), and says that Alice's media comes another way.
    @Test func aPassedOnFrameIsPlayedOnceAsTheSendersMedia() {
        var (_, carol) = Pair.establishedPair(version: 4)
        var alice = Self.signer()
        let first = Self.frame(Self.media, &alice)
        let output = carol.receiveFanned(first[...], now: Self.start)
        #expect(output.media.map(Array.init) == Self.media)
        #expect(output.facts == [.firstMedia, .mediaPassedOn])
        #expect(carol.mediaReceived == 1)
        // The same frame again (the member repeats it): nothing.
        #expect(carol.receiveFanned(first[...], now: Self.start).media == nil)
        // The next one plays; that media comes this way is said once a REPORT interval.
        let second = Self.frame(Self.media(0x1235), &alice)
        let next = carol.receiveFanned(second[...], now: Self.start + .milliseconds(20))
        #expect(next.media != nil && next.facts.isEmpty)
        let later = carol.receiveFanned(Self.frame(Self.media(0x1236), &alice)[...], now: Self.start + .seconds(1))
        #expect(later.facts == [.mediaPassedOn])
        #expect(carol.fanOutFailures == 0)
        // A frame Carol also got directly (the routes changing) plays and counts once.
        var packet: [UInt8] = []
        var (direct, carolAgain) = Pair.establishedPair(version: 4)
        #expect(direct.seal(.media, body: Self.media(0x1237), now: Self.start, into: &packet))
        #expect(carolAgain.receive(packet, now: Self.start, nowMs: 2).media != nil)
        #expect(carolAgain.receiveFanned(Self.frame(Self.media(0x1237), &alice)[...], now: Self.start).media == nil)
        #expect(carolAgain.mediaReceived == 1)
    }

    /// Every byte the member changes — counter, signature, media — makes the frame worthless, and
    /// is counted.
    @Test(arguments: [0, 7, 8, 40, 71, 72, 80])
    func whatTheMemberChangesIsDropped(position: Int) {
        var (_, carol) = Pair.establishedPair(version: 4)
        var alice = Self.signer()
        var frame = Self.frame(Self.media, &alice)
        frame[position] ^= 0x01
        let output = carol.receiveFanned(frame[...], now: Self.start)
        #expect(output.media == nil && output.facts.isEmpty)
        #expect(carol.fanOutFailures == 1 && carol.mediaReceived == 0)
    }

    /// A frame the member signs itself, or one Alice signed for another room or another run of
    /// hers, is not Alice's voice in this meeting.
    @Test(arguments: ["another member", "another room", "another run"])
    func aFrameThatIsNotAlicesHereIsDropped(forger: String) {
        var (_, carol) = Pair.establishedPair(version: 4)
        var signer =
            switch forger {
            case "another member": Self.signer(Pair.identity(2))
            case "another room": Self.signer(room: [UInt8](repeating: 7, count: 32))
            default: Self.signer(epoch: 2)
            }
        let output = carol.receiveFanned(Self.frame(Self.media, &signer)[...], now: Self.start)
        #expect(output.media == nil)
        #expect(carol.fanOutFailures == 1)
    }

    /// A new link with the same run of Alice (her link was removed and came back, §6.6) starts
    /// from what the old one took: the member cannot replay her old frames into it.
    @Test func aNewLinkWithTheSameRunTakesNoOldFrame() {
        var (_, carol) = Pair.establishedPair(version: 4)
        var alice = Self.signer()
        let frame = Self.frame(Self.media, &alice)
        #expect(carol.receiveFanned(frame[...], now: Self.start).media != nil)
        let timing = Pair.timing(factInterval: .zero)
        var next = LinkSession(session: carol.session, timing: timing, fanOutVerifier: carol.fanOutVerifier)
        #expect(next.receiveFanned(frame[...], now: Self.start).media == nil)
        // (A window started afresh would have taken it.)
        var fresh = LinkSession(session: carol.session, timing: timing, peerEpoch: Self.alicesEpoch)
        #expect(fresh.receiveFanned(frame[...], now: Self.start).media != nil)
    }

    /// A made-up frame with a counter far ahead does not move the window: Alice's real frames,
    /// with lower counters, still play.
    @Test func aForgedFrameDoesNotBlockTheRealOnes() {
        var (_, carol) = Pair.establishedPair(version: 4)
        var forged = [UInt8](repeating: 0, count: 8) + [UInt8](repeating: 9, count: 64) + Self.media
        forged[6] = 0x27  // counter 10 000
        forged[7] = 0x10
        #expect(carol.receiveFanned(forged[...], now: Self.start).media == nil)
        var alice = Self.signer()
        #expect(carol.receiveFanned(Self.frame(Self.media, &alice)[...], now: Self.start).media != nil)
        // Too short or too long to be a signed frame: dropped before any check.
        #expect(carol.receiveFanned([UInt8](repeating: 0, count: 81)[...], now: Self.start).media == nil)
        #expect(carol.receiveFanned([UInt8](repeating: 0, count: 1273)[...], now: Self.start).media == nil)
    }

    /// The member's side: a FAN_OUT (inner type 0x04) from Alice is her media for it to play, and
    /// the frame for it to pass on; below version 4 it is an unknown inner type, and a FAN_DELIVER
    /// an unknown relay kind.
    @Test(arguments: [UInt8(4), 3])
    func fanOutIsSpokenFromVersionFour(version: UInt8) {
        var (alice, member) = Pair.establishedPair(version: version)
        var signer = Self.signer()
        let frame = Self.frame(Self.media, &signer)
        var packet: [UInt8] = []
        #expect(alice.seal(.fanOut, body: frame, now: Self.start, into: &packet))
        let output = member.receive(packet, now: Self.start, nowMs: 2)
        #expect(output.media.map(Array.init) == (version >= 4 ? Self.media : nil))
        #expect(output.fanOut.map(Array.init) == (version >= 4 ? frame : nil))
        #expect(member.mediaReceived == (version >= 4 ? 1 : 0))
        let deliver = RelayPacket(kind: .fanDeliver, peer: Pair.identity(2).publicKey, payload: frame)
        #expect(alice.seal(deliver, now: Self.start, into: &packet))
        #expect((member.receive(packet, now: Self.start, nowMs: 2).relay != nil) == (version >= 4))
        // And on an older link a frame passed on for its peer is not taken either.
        let another = Self.frame(Self.media(0x1235), &signer)
        #expect((member.receiveFanned(another[...], now: Self.start).media != nil) == (version >= 4))
    }

    @Test func aFanDeliverIsASignedFrameFromSomeone() {
        let frame = [UInt8](repeating: 1, count: FanOutFrame.minimumLength)
        let peer = Pair.identity(1).publicKey
        #expect((try? RelayPacket(parsing: [5] + peer + frame)) != nil)
        #expect((try? RelayPacket(parsing: [5] + RelayPacket.everyone + frame)) == nil)
        #expect((try? RelayPacket(parsing: [5] + peer + frame.dropLast())) == nil)
        #expect((try? RelayPacket(parsing: [5] + peer + frame + [UInt8](repeating: 0, count: 1191))) == nil)
    }

    // MARK: The member's rules (§15.3)

    static let members = (1...6).map { [UInt8](repeating: UInt8($0), count: 32) }

    static func table(maximumPairs: Int = 4, version4: ArraySlice<[UInt8]> = members[...]) -> RelayTable {
        RelayTable(
            policy: RelayPolicy(linked: Set(members), maximumPairs: maximumPairs, fanOutTargets: Set(version4)))
    }

    /// Frames go to every version-4 member the node is linked with but the sender; from a
    /// stranger, or from a node that does not relay, to no one (and the sender is told, once a
    /// second).
    @Test func framesGoToTheLinkedVersionFourMembersButTheSender() {
        var table = Self.table(version4: Self.members[0..<4])
        #expect(table.decideFanOut(from: Self.members[0], at: Self.start) == .forward(Array(Self.members[1..<4])))
        let stranger = [UInt8](repeating: 0xE, count: 32)
        #expect(table.decideFanOut(from: stranger, at: Self.start) == .refuse(.notLinked, tell: true))
        var declines = Self.table(maximumPairs: 0)
        #expect(declines.decideFanOut(from: Self.members[0], at: Self.start) == .refuse(.declines, tell: true))
        #expect(
            declines.decideFanOut(from: Self.members[0], at: Self.start + .milliseconds(500))
                == .refuse(.declines, tell: false))
        #expect(
            declines.decideFanOut(from: Self.members[0], at: Self.start + .seconds(1)) == .refuse(.declines, tell: true)
        )
    }

    /// Two senders at a time; a third is busy until one of them has been quiet for 10 s — and a
    /// sender that was quiet that long needs a free place again to come back.
    @Test func twoSendersAtATime() {
        var table = Self.table()
        for sender in Self.members[0..<2] {
            guard case .forward = table.decideFanOut(from: sender, at: Self.start) else {
                Issue.record("refused")
                return
            }
        }
        #expect(table.decideFanOut(from: Self.members[2], at: Self.start) == .refuse(.busy, tell: true))
        var time = Self.start
        while time < Self.start + .seconds(11) {
            time += .milliseconds(20)
            _ = table.decideFanOut(from: Self.members[0], at: time)
        }
        guard case .forward = table.decideFanOut(from: Self.members[2], at: time) else {
            Issue.record("the quiet sender's place was not freed")
            return
        }
        #expect(table.decideFanOut(from: Self.members[1], at: time) == .refuse(.busy, tell: true))
    }

    /// At most 110 frames a second per sender, after a burst of 20.
    @Test func aSenderIsPassedOnAtAFrameRate() {
        var table = Self.table()
        var passed = 0
        for index in 0..<400 {  // 400 frames in one second: 2.5 ms apart
            let decision = table.decideFanOut(from: Self.members[0], at: Self.start + .microseconds(index * 2500))
            if case .forward(let targets) = decision, !targets.isEmpty { passed += 1 }
            // Frames over the rate are not passed on, and not refused (the sender keeps its place).
            if case .refuse = decision { Issue.record("refused at frame \(index)") }
        }
        #expect((120...131).contains(passed), "\(passed)")
    }

    /// A member that floods this node with frames to check (an Ed25519 verification each) gets
    /// 250 a second checked, after a burst of 50 — also one whose link is not up in our view yet.
    @Test func aMemberCannotMakeUsVerifyWithoutEnd() {
        var table = Self.table()
        var checked = 0
        for index in 0..<2000 {  // 2000 in one second
            if table.acceptFanDelivery(from: Self.members[1], at: Self.start + .microseconds(index * 500)) {
                checked += 1
            }
        }
        #expect((295...301).contains(checked), "\(checked)")
        let newcomer = table.acceptFanDelivery(from: [UInt8](repeating: 0xE, count: 32), at: Self.start)
        #expect(newcomer)
    }

    /// Each frame's copies start one peer further on, and every peer gets one copy a frame, also
    /// when the list shrinks between frames.
    @Test func eachFrameStartsOnePeerFurtherOn() {
        var order = CopyOrder()
        var frames: [[Int]] = []
        for copies in [[1, 2, 3], [1, 2, 3], [1, 2, 3], [1, 2, 3], [1, 2], [1, 2], []] {
            var frame: [Int] = []
            order.forEach(copies) { frame.append($0) }
            frames.append(frame)
        }
        #expect(frames == [[1, 2, 3], [2, 3, 1], [3, 1, 2], [1, 2, 3], [2, 1], [1, 2], []])
    }

    // MARK: The receiver's view of the sender's link

    /// While the peer's media comes through a member, its link hears only REPORTs (a second apart)
    /// and is judged by the 2-s rule, however densely the last direct packets came — else every
    /// link would be lost a second after its media moved.
    @Test func aLinkWhoseMediaMovedIsJudgedByItsReports() {
        var steps = PeerLinkTests.connect
        var time = 0.5
        for _ in 0..<8 {
            time += 0.02
            steps.append((time, .packetReceived))
        }
        let lastMedia = time
        steps += [(lastMedia + 0.1, .mediaElsewhere), (lastMedia + 1.05, .tick), (lastMedia + 1.1, .packetReceived)]
        steps += [(lastMedia + 2.0, .mediaElsewhere), (lastMedia + 3.09, .tick), (lastMedia + 3.11, .tick)]
        let result = PeerLinkTests.run(initiator: true, steps)
        #expect(Array(result.states.suffix(6)) == [.up, .up, .up, .up, .up, .lost])
    }
}
