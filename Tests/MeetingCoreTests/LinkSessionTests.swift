import MeetingCore
import ParleyCore
import ParleyProtocol
import Testing

/// What a link's session tells the meeting about packets that arrive: liveness without a fact per
/// packet (docs/PROTOCOL.md §10.3).
@Suite("Link session facts")
struct LinkSessionTests {
    static let start = RelaySecurityTests.start
    static let relay = [UInt8](repeating: 2, count: 32)

    static func at(_ milliseconds: Int) -> Instant { start + .milliseconds(milliseconds) }

    static func sealed(_ type: InnerPacketType, _ body: [UInt8], from sender: inout LinkSession) -> [UInt8] {
        var packet: [UInt8] = []
        #expect(sender.seal(type, body: body, now: start, into: &packet))
        return packet
    }

    static func report(from sender: inout LinkSession, nowMs: UInt32 = 5, muted: Bool = false) -> [UInt8] {
        let reception = LinkSession.Reception(expected: 0, jitterMicroseconds: 0, lossPermille: 0)
        let report = sender.report(nowMs: nowMs, reception: reception, muted: muted, recording: false)
        return sealed(.sessionControl, SessionControl.report(report).encoded(), from: &sender)
    }

    static func kinds(_ facts: [SessionFact]) -> [String] {
        facts.map {
            switch $0 {
            case .authenticated(let via): via == nil ? "authenticated" : "authenticated via relay"
            case .stillAuthenticated(_, let spacing): "still authenticated after \(spacing)"
            case .report: "report"
            case .firstMedia: "firstMedia"
            default: "other"
            }
        }
    }

    /// In a DTX pause REPORTs are all a peer sends: each is one fact (the REPORT), not two, once
    /// the meeting knows the route; media says `stillAuthenticated` at most every interval, with
    /// how long after the packet before it; a change of route, or a packet after a silence of
    /// more than two intervals, is said at once as `authenticated`, REPORT or not.
    @Test func eachPacketWakesTheMeetingAtMostOnce() {
        var (alice, carol) = RelaySecurityTests.establishedPair(factInterval: .milliseconds(250))
        var facts: [(Int, [String])] = []
        func receive(_ packet: [UInt8], at ms: Int, via: [UInt8]? = nil) {
            facts.append((ms, Self.kinds(carol.receive(packet, now: Self.at(ms), nowMs: UInt32(ms), via: via).facts)))
        }
        receive(Self.report(from: &alice), at: 0)
        receive(Self.report(from: &alice), at: 250)
        receive(Self.report(from: &alice), at: 500)
        receive(Self.sealed(.media, [1, 2, 3], from: &alice), at: 600)
        receive(Self.sealed(.media, [1, 2, 3], from: &alice), at: 620)
        receive(Self.sealed(.media, [1, 2, 3], from: &alice), at: 760)
        receive(Self.report(from: &alice), at: 770, via: Self.relay)
        receive(Self.report(from: &alice), at: 1100, via: Self.relay)
        receive(Self.sealed(.media, [1, 2, 3], from: &alice), at: 1400, via: Self.relay)
        receive(Self.sealed(.media, [1, 2, 3], from: &alice), at: 2000, via: Self.relay)
        #expect(
            facts.map(\.1) == [
                ["authenticated", "report"],
                ["report"],
                ["report"],
                ["firstMedia"],  // a REPORT 100 ms ago said the link is alive
                [],
                ["still authenticated after 0.26 seconds"],  // after the REPORT at 500 ms
                ["authenticated via relay", "report"],
                ["report"],
                ["still authenticated after 0.3 seconds"],
                ["authenticated via relay"],  // after 600 ms of silence: news, said at once
            ], "\(facts)")
    }

    /// In a DTX pause a peer's REPORTs come every 250 ms and each repeats the one before (§10.1).
    /// Once we have sent the peer media, a repeat is an authenticated packet like any other (a
    /// driver holds that fact: no wake-up of the meeting), not a REPORT, until a REPORT interval
    /// (1 s) after the last one said; a REPORT that says anything new is said at once. Before we
    /// sent media every REPORT is said (the test above).
    @Test func aRepeatedReportOnlySaysTheLinkIsAlive() {
        var (alice, carol) = RelaySecurityTests.establishedPair(factInterval: .milliseconds(250))
        _ = Self.sealed(.media, [1, 2, 3], from: &carol)
        var facts: [[String]] = []
        func receive(at ms: Int, muted: Bool = false) {
            let packet = Self.report(from: &alice, nowMs: UInt32(ms + 5), muted: muted)
            facts.append(Self.kinds(carol.receive(packet, now: Self.at(ms), nowMs: UInt32(ms), via: nil).facts))
        }
        receive(at: 0)
        receive(at: 260)
        receive(at: 520)
        receive(at: 780, muted: true)
        receive(at: 1040, muted: true)
        receive(at: 1300, muted: true)
        receive(at: 1560, muted: true)
        receive(at: 1800, muted: true)
        let still = "still authenticated after 0.26 seconds"
        #expect(
            facts == [
                ["authenticated", "report"],
                [still],
                [still],
                ["report"],  // muted now: news
                [still],
                [still],
                [still],
                ["report"],  // a second after the last one said
            ], "\(facts)")
    }
}
