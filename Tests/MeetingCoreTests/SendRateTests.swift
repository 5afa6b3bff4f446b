import MeetingCore
import ParleyCore
import Testing

/// The send-side bandwidth estimate (`SendRate`), REPORT by REPORT on a virtual clock.
@Suite("Send rate: the bandwidth estimate")
struct SendRateTests {
    static let start = Instant.now
    static let alice = [UInt8](repeating: 0xA, count: 32)
    static let bob = [UInt8](repeating: 0xB, count: 32)
    static let carol = [UInt8](repeating: 0xC, count: 32)
    static func at(_ milliseconds: Int) -> Instant { start + .milliseconds(milliseconds) }

    /// Clear reports once a second from `time` (ms) until the estimate is back at the top: each
    /// second's relative step, and the time it got there.
    static func climb(_ rate: inout SendRate, from time: Int) -> (steps: [Double], time: Int) {
        var time = time
        var steps: [Double] = []
        while rate.limited {
            let before = Double(rate.estimate)
            time += 1000
            _ = rate.report(from: alice, queueDelayMs: 1, loss: 0, mediaFlowed: true, at: at(time))
            steps.append(Double(rate.estimate) / before - 1)
        }
        return (steps, time)
    }

    /// 60.4 kb/s: 32 kb/s of Opus in 20 ms packets; 15.5 kb/s: 6 kb/s in 60 ms packets.
    static func rate() -> SendRate { SendRate(maximum: 60_400, minimum: 15_467) }

    @Test(
        arguments: [
            // queue (ms), loss → the estimate after one report, from the maximum
            (UInt16?(5), 0.0, 60_400),  // clear: stays at the top
            (UInt16?(39), 0.0, 60_400),  // below the threshold: no change
            (UInt16?(40), 0.0, 51_340),  // queueing: × 0.85
            (UInt16?(120), 0.40, 30_804),  // queueing and loss: × 0.85 × (1 − loss)
            (UInt16?(80), 0.0, 46_206),  // a deeper queue: a tenth more per 40 ms past 40, × 0.85 × 0.9
            (UInt16?(160), 0.0, 35_938),  // × 0.85 × 0.7
            (UInt16?(400), 0.0, 25_670),  // at most half: × 0.85 × 0.5
            (UInt16?(120), 0.10, 41_072),  // the queue says more than the loss: × 0.85 × 0.8
            (UInt16?(25), 0.12, 45_179),  // heavy loss with some queueing
            (nil, 0.12, 45_179),  // heavy loss from a peer that sends no queue estimate
            (UInt16?(3), 0.12, 60_400),  // heavy loss on a path that does not queue is chance: copies
            (nil, 0.05, 60_400),  // moderate loss alone: copies, not a lower rate
            (UInt16?(200), 0.90, 25_670),  // the loss counted is at most half
        ] as [(UInt16?, Double, Int)])
    func aReportMovesTheEstimate(queue: UInt16?, loss: Double, estimate: Int) {
        var rate = Self.rate()
        _ = rate.report(from: Self.alice, queueDelayMs: queue, loss: loss, mediaFlowed: true, at: Self.at(0))
        #expect(rate.estimate == estimate)
    }

    /// An overfull uplink drops what it sends last: one peer loses 40 %, another nothing, and what
    /// got through is the mean of the links that queue (the worst would cut twice as deep). A
    /// peer whose path does not queue loses by chance, and its loss does not count.
    @Test func whatGotThroughIsTheMeanOfTheCongestedLinks() {
        var rate = Self.rate()
        _ = rate.report(from: Self.carol, queueDelayMs: 2, loss: 0.3, mediaFlowed: true, at: Self.at(0))
        _ = rate.report(from: Self.alice, queueDelayMs: 45, loss: 0.4, mediaFlowed: true, at: Self.at(100))
        #expect(rate.estimate == 30_804, "alice alone: × 0.85 × (1 − 0.4)")
        _ = rate.report(from: Self.bob, queueDelayMs: 45, loss: 0, mediaFlowed: true, at: Self.at(500))
        _ = rate.report(from: Self.alice, queueDelayMs: 50, loss: 0.4, mediaFlowed: true, at: Self.at(1100))
        #expect(rate.estimate == 20_946, "alice and bob: × 0.85 × (1 − 0.2), carol's chance loss left out")
    }

    /// After a decrease the next second of reports describes the old rate: one decrease per
    /// second, however many peers report it.
    @Test func oneDecreaseASecond() {
        var rate = Self.rate()
        let changed1 = rate.report(from: Self.alice, queueDelayMs: 80, loss: 0, mediaFlowed: true, at: Self.at(0))
        #expect(changed1)
        let changed2 = rate.report(from: Self.bob, queueDelayMs: 80, loss: 0, mediaFlowed: true, at: Self.at(400))
        #expect(!changed2)
        #expect(rate.estimate == 46_206)
        let changed3 = rate.report(from: Self.alice, queueDelayMs: 120, loss: 0, mediaFlowed: true, at: Self.at(1000))
        #expect(changed3)
        #expect(rate.estimate == 31_420)
        #expect(rate.congested(at: Self.at(1000)) == [Self.alice, Self.bob])
        #expect(rate.congested(at: Self.at(2500)) == [Self.alice])
    }

    /// The first REPORT of a queue comes early, at its onset (40 ms): the reports of the next second,
    /// which still describe the rate before the decrease, deepen it when they show more, never
    /// repeat it. For 3 s after it, a queue no deeper than the deepest of that second is what came
    /// before the decrease draining, not a reason to cut again; one that grows past it is.
    @Test func aDecreaseIsDeepenedNotRepeated() {
        var rate = Self.rate()
        _ = rate.report(from: Self.alice, queueDelayMs: 40, loss: 0, mediaFlowed: true, at: Self.at(0))
        #expect(rate.estimate == 51_340)  // × 0.85
        _ = rate.report(from: Self.bob, queueDelayMs: 160, loss: 0, mediaFlowed: true, at: Self.at(300))
        #expect(rate.estimate == 35_938)  // from 60 400: × 0.85 × 0.7
        let changed1 = rate.report(from: Self.alice, queueDelayMs: 150, loss: 0, mediaFlowed: true, at: Self.at(1200))
        #expect(!changed1)  // draining
        let changed2 = rate.report(from: Self.bob, queueDelayMs: 170, loss: 0, mediaFlowed: true, at: Self.at(2200))
        #expect(changed2)  // grown past 160: × 0.85 × (1 − 0.325)
        #expect(rate.estimate == 20_619)
        let changed3 = rate.report(from: Self.bob, queueDelayMs: 50, loss: 0, mediaFlowed: true, at: Self.at(5300))
        #expect(changed3)  // 3 s on, a queue of 40 ms or more is news again
        #expect(rate.estimate == 17_087)
    }

    /// Clear reports raise it 8 % a second, whoever sends them, up to the maximum; not while a link
    /// said "over" in the last 2 s, and not while we send nothing (a DTX pause says nothing).
    @Test func clearReportsRaiseItAgain() {
        var rate = Self.rate()
        _ = rate.report(from: Self.alice, queueDelayMs: 100, loss: 0.5, mediaFlowed: true, at: Self.at(0))
        #expect(rate.estimate == 25_670)
        // Within 2 s of alice's "over", bob's clear report does not raise it.
        let changed4 = rate.report(from: Self.bob, queueDelayMs: 2, loss: 0, mediaFlowed: true, at: Self.at(1500))
        #expect(!changed4)
        let changed5 = rate.report(from: Self.alice, queueDelayMs: 2, loss: 0, mediaFlowed: false, at: Self.at(2500))
        #expect(!changed5)
        let changed6 = rate.report(from: Self.alice, queueDelayMs: 2, loss: 0, mediaFlowed: true, at: Self.at(3000))
        #expect(changed6)
        #expect(rate.estimate == 27_724)  // a whole second's 8 %
        let changed7 = rate.report(from: Self.bob, queueDelayMs: 2, loss: 0, mediaFlowed: true, at: Self.at(3500))
        #expect(changed7)
        #expect(rate.estimate == 28_833)  // half a second's
        // An older peer that sends no queue estimate is judged by its loss.
        let changed8 = rate.report(from: Self.bob, queueDelayMs: nil, loss: 0, mediaFlowed: true, at: Self.at(4500))
        #expect(changed8)
        // 8 % a second up to 90 % of the rate that overfilled the path (60 400), then 2 % a second.
        let steps = Self.climb(&rate, from: 4500).steps
        #expect(rate.estimate == 60_400)
        #expect(steps.prefix(while: { $0 > 0.05 }).count == 8)
        #expect(steps.dropFirst(8).dropLast().allSatisfy { abs($0 - 0.02) < 0.001 }, "\(steps)")
    }

    /// After a cap goes away the estimate probes at 2 % a second up to half again the rate that
    /// last overfilled the path, then climbs at full speed: back at the top within 35 s. (An
    /// uplink that just overfilled seldom frees up at once; climbing at 8 % a second past it, the
    /// estimate overshot into a 150 ms queue in the NAT lab before the peers' REPORTs said so.)
    @Test func pastTheOldLimitItClimbsAtFullSpeed() {
        var rate = Self.rate()
        for round in 0..<6 {  // the path takes about a third of the top rate; each queue news
            _ = rate.report(from: Self.alice, queueDelayMs: 40, loss: 0, mediaFlowed: true, at: Self.at(round * 3100))
        }
        #expect(rate.estimate == 22_779)
        let (steps, time) = Self.climb(&rate, from: 17_500)
        // One step at 8 % to 90 % of the rate that overfilled (26 799), 2 % steps to half again
        // past it (40 198), then 8 % again to the top.
        let probing = steps.dropFirst().prefix { abs($0 - 0.02) < 0.001 }.count
        #expect(abs(steps[0] - 0.08) < 0.001, "\(steps)")
        #expect(probing == 25, "\(steps)")
        #expect(steps.dropFirst(1 + probing).dropLast().allSatisfy { abs($0 - 0.08) < 0.001 }, "\(steps)")
        #expect(time - 17_500 <= 35_000, "\(time - 17_500) ms to the top")
    }

    /// A peer that saw no new media from us (a DTX pause) repeats its last loss (§10.1): a burst
    /// long over must not lower the rate again and again while we are silent.
    @Test func aReportWithoutNewMediaMovesNothing() {
        var rate = Self.rate()
        for second in 0..<5 {
            let changed = rate.report(
                from: Self.alice, queueDelayMs: nil, loss: 0.47, mediaFlowed: false, at: Self.at(second * 1000))
            #expect(!changed)
        }
        #expect(rate.estimate == 60_400 && rate.congested(at: Self.at(4000)).isEmpty)
    }

    @Test func neverBelowTheMinimum() {
        var rate = Self.rate()
        for second in 0..<20 {
            _ = rate.report(
                from: Self.alice, queueDelayMs: 300, loss: 0.5, mediaFlowed: true, at: Self.at(second * 1000))
        }
        #expect(rate.estimate == 15_467)
        rate.forget(Self.alice)
        #expect(rate.congested(at: Self.at(19_000)).isEmpty)
    }

    /// Going up once (PROTOCOL §15): seven copies become one, the rate per stream ×7 (at most the
    /// top). The REPORTs of the next 3 s describe the seven copies' full queue and their loss and
    /// move nothing; a queue reported after that is the one stream's, and counts.
    @Test func afterTheStreamsChangeTheOldQueueMovesNothing() {
        var rate = Self.rate()
        _ = rate.report(from: Self.alice, queueDelayMs: 160, loss: 0.3, mediaFlowed: true, at: Self.at(0))
        #expect(rate.estimate < 40_000)
        rate.rescale(by: 7, at: Self.at(1500))
        #expect(rate.estimate == 60_400)
        // The member's link reports the queue; the others' media moved, and the core passes no
        // queue of theirs for a while (their path is new), only their loss.
        for (index, peer) in [Self.alice, Self.bob, Self.carol].enumerated() {
            _ = rate.report(
                from: peer, queueDelayMs: peer == Self.alice ? 360 : nil, loss: 0.57, mediaFlowed: true,
                at: Self.at(2000 + 800 * index))
        }
        #expect(rate.estimate == 60_400)
        // Their loss is the old streams' congestion, not chance to answer with copies.
        #expect(rate.congested(at: Self.at(3600)) == [Self.alice, Self.bob, Self.carol])
        _ = rate.report(from: Self.alice, queueDelayMs: 60, loss: 0, mediaFlowed: true, at: Self.at(4600))
        #expect(rate.estimate < 60_400)
    }
}
