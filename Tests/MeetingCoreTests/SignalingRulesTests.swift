import MeetingCore
import Testing

@Suite("Signaling rules (PROTOCOL §6.6)")
struct SignalingRulesTests {
    typealias Known = SignalingRules.KnownPeer

    @Test(arguments: [
        // (what we know, HELLO epoch, broadcast, expected link decision, expected answer)
        (Known?.none, UInt64(7), true, SignalingRules.HelloDecision.Link.start, true),
        (Known?.none, 7, false, .start, false),
        (Known(epoch: 7, hasLink: true), 7, true, .keep, true),  // a re-announce after an outage
        (Known(epoch: 7, hasLink: true), 7, false, .keep, false),  // an answer to ours
        (Known(epoch: 7, hasLink: true), 8, true, .replace, true),  // the peer restarted
        (Known(epoch: 7, hasLink: true), 8, false, .replace, false),
        (Known(epoch: 7, hasLink: false), 7, true, .start, true),  // link was removed; peer is back
        (Known(epoch: 7, hasLink: false), 8, false, .start, false),
    ])
    func hello(known: Known?, epoch: UInt64, broadcast: Bool, link: SignalingRules.HelloDecision.Link, answer: Bool) {
        let decision = SignalingRules.hello(from: known, epoch: epoch, isBroadcast: broadcast, commonVersion: 1)
        #expect(decision == SignalingRules.HelloDecision(link: link, answer: answer))
    }

    @Test func noCommonVersionMeansNoLinkButStillAnAnswer() {
        let decision = SignalingRules.hello(from: nil, epoch: 1, isBroadcast: true, commonVersion: nil)
        #expect(decision == SignalingRules.HelloDecision(link: .incompatible, answer: true))
    }

    /// The two HELLOs of a pair never lead to a third (each pair exchanges exactly two).
    @Test func answersDoNotLoop() {
        var messages = 1  // A's broadcast
        let atB = SignalingRules.hello(from: nil, epoch: 1, isBroadcast: true, commonVersion: 1)
        if atB.answer { messages += 1 }
        let atA = SignalingRules.hello(from: nil, epoch: 2, isBroadcast: false, commonVersion: 1)
        if atA.answer { messages += 1 }
        #expect(messages == 2)
        #expect(atB.link == .start && atA.link == .start)
    }

    @Test(arguments: [
        // (received generation, current, decision for ICE_CREDENTIALS / ICE_RESTART, for candidates)
        (UInt32(0), UInt32(0), SignalingRules.GenerationDecision.apply, SignalingRules.GenerationDecision.apply),
        (1, 0, .restart(to: 1), .ignore),
        (5, 2, .restart(to: 5), .ignore),
        (1, 2, .ignore, .ignore),
        (2, 2, .apply, .apply),
    ])
    func generations(
        received: UInt32, current: UInt32, restarting: SignalingRules.GenerationDecision,
        candidate: SignalingRules.GenerationDecision
    ) {
        #expect(SignalingRules.restartingMessage(generation: received, current: current) == restarting)
        #expect(SignalingRules.candidateMessage(generation: received, current: current) == candidate)
    }
}
