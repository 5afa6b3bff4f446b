import MeetingCore
import ParleyProtocol
import Testing

/// What a link's session tells the meeting about packets that arrive: liveness without a fact per
/// packet (docs/PROTOCOL.md §10.3).
@Suite("Link session facts")
struct LinkSessionTests {
    static let start = RelaySecurityTests.start
    static let relay = [UInt8](repeating: 2, count: 32)

    static func at(_ milliseconds: Int) -> ContinuousClock.Instant { start + .milliseconds(milliseconds) }

    static func sealed(_ type: InnerPacketType, _ body: [UInt8], from sender: inout LinkSession) -> [UInt8] {
        var packet: [UInt8] = []
        #expect(sender.seal(type, body: body, now: start, into: &packet))
        return packet
    }

    static func report(from sender: inout LinkSession) -> [UInt8] {
        let reception = LinkSession.Reception(expected: 0, jitterMicroseconds: 0, lossPermille: 0)
        let report = sender.report(nowMs: 5, reception: reception, muted: false, recording: false)
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
}
