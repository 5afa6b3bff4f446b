import ParleyAudio
import ParleyCore
import ParleyTestSupport
import Testing

/// Drives a jitter buffer with an injected clock: a sender emits a 20 ms frame per period (its
/// own clock may drift), a network decides when each arrives, and a player asks for a frame every
/// 20 ms of the receiver's clock.
struct JitterSimulation {
    static let frame = 960
    static let frameNanoseconds: UInt64 = 20_000_000

    var buffer: JitterBuffer
    var actions: [JitterBuffer.Action] = []
    /// Sequence numbers in the order their frames were played (from `.play`).
    var played: [Int64] = []
    var delays: [Int] = []

    init(configuration: JitterBuffer.Configuration = .init()) {
        buffer = JitterBuffer(configuration: configuration)
    }

    /// - Parameters:
    ///   - sendPeriod: nanoseconds between frames on the receiver's clock (20 ms; less when the
    ///     sender's clock runs fast).
    ///   - arrivals: for packet `index` sent at `time`, the times it arrives (empty: lost).
    mutating func run(
        frames: Int, firstSequence: UInt16 = 1000, sendPeriod: UInt64 = frameNanoseconds,
        playerPhase: UInt64 = 7_000_000,
        arrivals: (_ index: Int, _ sentAt: UInt64) -> [UInt64] = { [$1 + 5_000_000] }
    ) {
        var deliveries: [(time: UInt64, index: Int)] = []
        for index in 0..<frames {
            let sent = 1_000_000_000 + UInt64(index) * sendPeriod
            for time in arrivals(index, sent) { deliveries.append((time, index)) }
        }
        deliveries.sort { $0.time < $1.time || ($0.time == $1.time && $0.index < $1.index) }
        var next = 0
        let end = 1_000_000_000 + UInt64(frames) * sendPeriod + 500_000_000
        var tick = 1_000_000_000 + playerPhase
        while tick < end {
            while next < deliveries.count && deliveries[next].time <= tick {
                insert(index: deliveries[next].index, firstSequence: firstSequence, arrival: deliveries[next].time)
                next += 1
            }
            let action = buffer.next(now: tick)
            actions.append(action)
            if case .play(let frame) = action {
                played.append(frame.sequence)
                // The payload is the frame's index: check the right bytes come back.
                let bytes = Array(buffer.payload(of: frame))
                #expect(bytes == Self.payload(for: Int(frame.sequence - Int64(firstSequence))))
            }
            delays.append(buffer.statistics.currentDelay)
            tick += Self.frameNanoseconds
        }
    }

    mutating func insert(index: Int, firstSequence: UInt16, arrival: UInt64, isCopy: Bool = false) {
        Self.payload(for: index).withUnsafeBytes { bytes in
            _ = buffer.insert(
                sequence: firstSequence &+ UInt16(truncatingIfNeeded: index),
                timestamp: UInt32(5_000_000) &+ UInt32(index * Self.frame), duration: Self.frame, payload: bytes,
                arrival: arrival, isCopy: isCopy)
        }
    }

    static func payload(for index: Int) -> [UInt8] {
        [UInt8(truncatingIfNeeded: index >> 8), UInt8(truncatingIfNeeded: index)]
    }

    var stats: JitterBuffer.Statistics { buffer.statistics }

    func count(where predicate: (JitterBuffer.Action) -> Bool) -> Int { actions.count(where: predicate) }
}

extension JitterBuffer.Action {
    var isConceal: Bool { if case .conceal = self { true } else { false } }
    var isRecover: Bool { if case .recover = self { true } else { false } }
}

@Suite("Jitter buffer (injected clock)")
struct JitterBufferTests {
    static func isIncreasing(_ values: [Int64]) -> Bool { zip(values, values.dropFirst()).allSatisfy { $0 < $1 } }

    @Test func calmNetworkPlaysEveryFrameInOrderWithLowDelay() {
        var simulation = JitterSimulation()
        simulation.run(frames: 500)
        #expect(simulation.played == (0..<500).map { Int64(1000 + $0) })
        #expect(simulation.stats.lost == 0)
        // Nothing concealed while the stream ran (the end of the stream is concealed, then idle).
        let concealedEarly = simulation.actions.prefix(495).contains(where: \.isConceal)
        #expect(!concealedEarly)
        #expect(simulation.stats.received == 500)
        // Constant transit: no jitter, no extra target, and each frame waits less than a frame.
        #expect(simulation.stats.jitter == 0)
        #expect(simulation.stats.targetDelay == 0)
        #expect(simulation.delays.dropFirst(5).prefix(490).allSatisfy { $0 < JitterSimulation.frame })
    }

    @Test(arguments: [UInt16(65_500), 65_535, 0])
    func sequenceAndTimestampWrapAround(firstSequence: UInt16) {
        var simulation = JitterSimulation()
        simulation.run(frames: 100, firstSequence: firstSequence)
        #expect(simulation.played.count == 100)
        #expect(Self.isIncreasing(simulation.played))
        #expect(simulation.stats.lost == 0)
    }

    @Test func reorderedPacketsArePlayedInOrder() {
        // Every third packet is held back 30 ms, arriving after its successor.
        var simulation = JitterSimulation()
        simulation.run(frames: 600) { index, sent in [sent + 5_000_000 + (index % 3 == 1 ? 30_000_000 : 0)] }
        #expect(Self.isIncreasing(simulation.played))
        // The buffer learns the reordering within its first packets; after that nothing is lost.
        #expect(simulation.stats.lost <= 2)
        #expect(simulation.played.count >= 597)
        #expect(simulation.stats.targetDelay >= 30 * 48)
    }

    @Test func duplicatesAreDroppedAndCounted() {
        var simulation = JitterSimulation()
        simulation.run(frames: 300) { _, sent in [sent + 5_000_000, sent + 9_000_000] }
        #expect(simulation.played == (0..<300).map { Int64(1000 + $0) })
        #expect(simulation.stats.duplicates == 300)
        #expect(simulation.stats.received == 300)
    }

    @Test(arguments: [1, 3, 8])
    func aBurstOfLossIsConcealedAndTheLastFrameRecoveredByFEC(burst: Int) {
        // One frame of minimum delay (what a receive channel keeps on a lossy link), so the packet
        // after a loss is here in time for its FEC.
        var configuration = JitterBuffer.Configuration()
        configuration.minimumDelay = .milliseconds(20)
        var simulation = JitterSimulation(configuration: configuration)
        let lostRange = 100..<(100 + burst)
        simulation.run(frames: 300) { index, sent in lostRange.contains(index) ? [] : [sent + 5_000_000] }
        #expect(simulation.stats.lost == burst)
        // The frame just before the next packet comes back through that packet's in-band FEC.
        #expect(simulation.stats.recoveredByFEC == 1)
        #expect(simulation.count(where: \.isRecover) == 1)
        #expect(simulation.played.count == 300 - burst)
        #expect(simulation.stats.dropped == 0)
        #expect(Self.isIncreasing(simulation.played))
        #expect(!simulation.played.contains(where: { lostRange.contains(Int($0) - 1000) }))
    }

    @Test func aRedundantCopyRestoresALostFrame() {
        var simulation = JitterSimulation()
        // Frame 50 is lost; frame 51's payload carries a copy of it, arriving with 51.
        simulation.run(frames: 120) { index, sent in index == 50 ? [] : [sent + 5_000_000] }
        #expect(simulation.stats.lost == 1)  // without the copy

        var withCopy = JitterSimulation()
        withCopy.buffer.setMinimumDelay(.milliseconds(20))  // room for the copy to arrive
        var deliveries: [(UInt64, Int, Bool)] = []
        for index in 0..<120 where index != 50 {
            let arrival = 1_000_000_000 + UInt64(index) * 20_000_000 + 5_000_000
            deliveries.append((arrival, index, false))
            if index == 51 { deliveries.append((arrival, 50, true)) }
        }
        var tick: UInt64 = 1_007_000_000
        var next = 0
        while tick < 1_000_000_000 + 121 * 20_000_000 + 100_000_000 {
            while next < deliveries.count && deliveries[next].0 <= tick {
                withCopy.insert(
                    index: deliveries[next].1, firstSequence: 1000, arrival: deliveries[next].0,
                    isCopy: deliveries[next].2)
                next += 1
            }
            if case .play(let frame) = withCopy.buffer.next(now: tick) { withCopy.played.append(frame.sequence) }
            tick += 20_000_000
        }
        #expect(withCopy.stats.lost == 0)
        #expect(withCopy.stats.recoveredByRedundancy == 1)
        #expect(withCopy.played == (0..<120).map { Int64(1000 + $0) })
    }

    @Test func aLatePacketIsDroppedAndCounted() {
        var simulation = JitterSimulation()
        // Packet 60 arrives 300 ms late: long after its turn, which was concealed.
        simulation.run(frames: 200) { index, sent in [sent + 5_000_000 + (index == 60 ? 300_000_000 : 0)] }
        #expect(simulation.stats.late == 1)
        #expect(simulation.stats.lost == 1)
        #expect(!simulation.played.contains(1060))
    }

    @Test(arguments: [0.99, 1.01])
    func clockDriftKeepsTheDelayBounded(rateRatio: Double) {
        // The sender's clock runs 1 % fast (frames every 19.8 ms) or slow (20.2 ms) for 60 s: the
        // buffer must skip or stretch frames rather than grow without bound or run dry.
        var simulation = JitterSimulation()
        let period = UInt64(Double(JitterSimulation.frameNanoseconds) * rateRatio)
        simulation.run(frames: 3000, sendPeriod: period)
        let delays = simulation.delays.dropFirst(50).dropLast(30)
        #expect(delays.max()! <= 3 * JitterSimulation.frame)
        #expect(Self.isIncreasing(simulation.played))
        #expect(simulation.stats.lost == 0)
        if rateRatio < 1 {
            // 3000 frames × 1 % = 30 frames too many: skipped.
            #expect(simulation.stats.dropped >= 20)
            #expect(simulation.played.count >= 2950)
        } else {
            // 30 frames too few: stretched with concealment.
            #expect(simulation.stats.concealed >= 20)
            #expect(simulation.played.count == 3000)
        }
    }

    /// A sender whose sample clock runs 0.2 % slow or fast against ours talks in spurts (200 ms
    /// of frames a second; DTX sends nothing in between) over a clean path: its packets' transit
    /// creeps by 2 ms a second, which is drift, not jitter. The target holds at most the drift
    /// across the 2.5 s the base delay is measured over (5 ms), and so does a frame's wait beyond
    /// the player's phase. With the base over the last 128 packets (13 s of such talk) the target
    /// grew to the 24 ms of drift across them, and when the sender's clock is fast (the newest
    /// packets the fastest) every frame waited it.
    @Test(arguments: [20_040_000, 19_960_000] as [UInt64])
    func clockDriftAcrossPausesIsNotJitter(framePeriod: UInt64) {
        let buffer = JitterBuffer()
        var tick: UInt64 = 1_007_000_000
        var sequence = 0
        var arrivals: [Int64: UInt64] = [:]
        var waits: [Int64] = []
        var targets: [Int] = []
        func play() {
            if case .play(let frame) = buffer.next(now: tick), let arrival = arrivals[frame.sequence] {
                waits.append(Int64(tick) - Int64(arrival))
            }
            tick += 20_000_000
        }
        for second in 0..<60 {
            for frame in 0..<10 {
                let place = second * 50 + frame  // in the sender's timeline, in 20 ms frames
                let arrival = 1_000_000_000 + UInt64(place) * framePeriod + 5_000_000
                while tick < arrival { play() }
                arrivals[Int64(sequence)] = arrival
                [UInt8(truncatingIfNeeded: sequence)].withUnsafeBytes { bytes in
                    _ = buffer.insert(
                        sequence: UInt16(truncatingIfNeeded: sequence), timestamp: UInt32(place * 960), duration: 960,
                        payload: bytes, arrival: arrival)
                }
                sequence += 1
            }
            targets.append(buffer.statistics.targetDelay)
        }
        #expect(buffer.statistics.lost == 0)
        #expect(targets.dropFirst(3).allSatisfy { $0 <= 5 * 48 }, "targets (samples): \(targets)")
        // A frame waits for the next tick (up to 20 ms) on top of the target.
        let longest = waits.dropFirst(30).max() ?? .max
        #expect(longest <= 25_000_000, "longest wait \(Double(longest) / 1e6) ms")
    }

    /// Talk in spurts over a path that holds every tenth packet 15 ms: 1 s of frames, then 5 s of
    /// DTX pause, ten times. The jitter of the last words is waited for at the next ones: after
    /// the first spurt taught it, no frame is concealed. (With the jitter measured over the last
    /// 2.5 s only, the target fell to nothing in each pause and each later spurt's first held
    /// packet was concealed: 9 frames.)
    @Test func jitterIsRememberedAcrossPauses() {
        let buffer = JitterBuffer()
        var tick: UInt64 = 1_007_000_000
        var sequence = 0
        var concealedAfterFirst: Int?
        var concealedAtEnd = 0
        for spurt in 0...10 {
            for frame in 0..<(spurt < 10 ? 50 : 1) {
                let place = spurt * 300 + frame  // in 20 ms frames of the sender's timeline
                let sent = 1_000_000_000 + UInt64(place) * 20_000_000
                let arrival = sent + 5_000_000 + (frame % 10 == 5 ? 15_000_000 : 0)
                while tick < arrival {
                    _ = buffer.next(now: tick)
                    tick += 20_000_000
                }
                [UInt8(truncatingIfNeeded: sequence)].withUnsafeBytes { bytes in
                    _ = buffer.insert(
                        sequence: UInt16(truncatingIfNeeded: sequence), timestamp: UInt32(place * 960), duration: 960,
                        payload: bytes, arrival: arrival)
                }
                sequence += 1
                // Read once the pause before is known to be one (its concealment counts as silence).
                if frame == 0 && spurt == 1 { concealedAfterFirst = buffer.statistics.concealed }
                if frame == 0 && spurt == 10 { concealedAtEnd = buffer.statistics.concealed }
            }
        }
        #expect(buffer.statistics.lost == 0 && buffer.statistics.late == 0)
        #expect(
            concealedAtEnd == concealedAfterFirst,
            "concealed after the first spurt \(String(describing: concealedAfterFirst)), at the end \(concealedAtEnd)")
    }

    @Test func aJitterSpikeGrowsTheDelayAtOnceWhichShrinksSlowlyAfterwards() {
        // Packets 200–209 are held up to 150 ms (a spike), then the network is calm again.
        var simulation = JitterSimulation()
        simulation.run(frames: 1500) { index, sent in
            let spike: UInt64 = (200..<210).contains(index) ? UInt64(210 - index) * 15_000_000 : 0
            return [sent + 5_000_000 + spike]
        }
        let targets = simulation.stats.targetDelay
        #expect(simulation.stats.jitter > 0)
        // The spiked frames still play (the buffer waited for them), in order.
        #expect(Self.isIncreasing(simulation.played))
        #expect(simulation.stats.lost == 0)
        #expect(simulation.played.count == 1500 - simulation.stats.dropped)
        // After the spike the buffer held more delay than before it; 25 s later it is back down.
        // (The figure averages about 16 played frames, so it shows most of the spike, not all.)
        let before = simulation.delays[150...190].max()!
        let after = simulation.delays[215...235].max()!
        let end = simulation.delays[1450...1490].max()!
        #expect(after > before + 80 * 48)
        #expect(end <= before + JitterSimulation.frame)
        #expect(targets <= 5 * 48)
    }

    /// A sender's overfilled uplink holds its packets up to 300 ms for a second, then the path is
    /// clean again: once the spike has left the history, the target sheds a quarter of its excess
    /// a second, so 8 s later the buffer holds little (releasing 20 ms a second, as before, it
    /// still held over 130 ms).
    @Test func aLargeExcessIsReleasedInSeconds() {
        var simulation = JitterSimulation()
        simulation.run(frames: 800) { index, sent in
            let spike: UInt64 = (100..<150).contains(index) ? UInt64(index - 99) * 6_000_000 : 0
            return [sent + 5_000_000 + spike]
        }
        // The spike's packets leave the 128-packet history at frame ~278; 8 s after that:
        let held = simulation.delays[700...720].max()!
        #expect(held < 60 * 48, "\(Double(held) / 48) ms held")
    }

    /// Talk with pauses, where the first words went through a sender's overfilled uplink: packets
    /// 50–99 of the first spurt are held up to 300 ms (a queue that filled and drained), the rest
    /// of it is clean, then the sender pauses (`pause` frames of DTX: no packets), then speaks
    /// again over the clean path. Returns the frames skipped to shrink while the second spurt
    /// played and the longest any of its frames waited here from its arrival (nanoseconds).
    static func secondSpurtAfterADrainedQueue(pause: Int) -> (skipped: Int, longestHold: UInt64) {
        let buffer = JitterBuffer()
        var tick: UInt64 = 1_007_000_000
        var skippedBefore = 0
        var longestHold: UInt64 = 0
        let first = 300
        let second = 250
        var arrivals: [UInt64] = []
        for index in 0..<(first + second) {
            let place = index < first ? index : index + pause  // in 20 ms frames of the sender's timeline
            let sent = 1_000_000_000 + UInt64(place) * 20_000_000
            let queued: UInt64 = (50..<100).contains(index) ? UInt64(index - 49) * 6_000_000 : 0
            arrivals.append(sent + 5_000_000 + queued)
            while tick < arrivals[index] {
                if case .play(let frame) = buffer.next(now: tick), frame.sequence >= first {
                    longestHold = max(longestHold, tick - arrivals[Int(frame.sequence)])
                }
                tick += 20_000_000
            }
            if index == first { skippedBefore = buffer.statistics.dropped }
            [UInt8(truncatingIfNeeded: index)].withUnsafeBytes { bytes in
                _ = buffer.insert(
                    sequence: UInt16(index), timestamp: UInt32(place * 960), duration: 960, payload: bytes,
                    arrival: arrivals[index])
            }
        }
        #expect(buffer.statistics.lost == 0 && buffer.statistics.late == 0)
        return (buffer.statistics.dropped - skippedBefore, longestHold)
    }

    /// A pause long enough for the stream to go idle (3 s): the second spurt starts with the delay
    /// the clean path needs. (Before, the target shed its excess only a quarter a second even in
    /// the pause: the second spurt's frames waited up to 62 ms and 2 of them were skipped.)
    @Test func aDrainedQueueIsShedInTheNextPauseNotInTheNextWords() {
        let (skipped, longestHold) = Self.secondSpurtAfterADrainedQueue(pause: 150)
        #expect(skipped == 0, "\(skipped) frames of the second spurt skipped")
        #expect(longestHold <= JitterSimulation.frameNanoseconds, "held \(Double(longestHold) / 1e6) ms")
    }

    /// The same with a DTX gap (300 ms) shorter than the idle time: the playout skips the
    /// excess in the gap instead of in the words after it. (Before: up to 162 ms, 6 skipped.)
    @Test func aDrainedQueueIsShedInADTXGap() {
        let (skipped, longestHold) = Self.secondSpurtAfterADrainedQueue(pause: 15)
        #expect(skipped == 0, "\(skipped) frames of the second spurt skipped")
        #expect(longestHold <= JitterSimulation.frameNanoseconds, "held \(Double(longestHold) / 1e6) ms")
    }

    /// The receive channel kept a frame of minimum delay for copies and FEC while the first words
    /// lost packets, and lowers it some seconds into the next words, once the loss is forgotten.
    /// The frame is shed in the next pause (a 300 ms DTX gap), not skipped in the words: packets
    /// arrive 5 ms after they were sent, the player asks 7 ms after each send. (Before, the
    /// target followed the minimum down while the words played, and a frame of them was skipped.)
    @Test func aLowerMinimumDelayWaitsForThePause() {
        let buffer = JitterBuffer()
        buffer.setMinimumDelay(.milliseconds(20))
        var tick: UInt64 = 1_007_000_000
        var holds: [Int64: UInt64] = [:]
        var arrivals: [UInt64] = []
        let first = 250
        for index in 0..<(first + 100) {
            let place = index < first ? index : index + 15  // in 20 ms frames of the sender's timeline
            arrivals.append(1_000_000_000 + UInt64(place) * 20_000_000 + 5_000_000)
            while tick < arrivals[index] {
                if case .play(let frame) = buffer.next(now: tick) {
                    holds[frame.sequence] = tick - arrivals[Int(frame.sequence)]
                }
                tick += 20_000_000
            }
            if index == 150 { buffer.setMinimumDelay(.zero) }  // 2 s before the pause
            [UInt8(truncatingIfNeeded: index)].withUnsafeBytes { bytes in
                _ = buffer.insert(
                    sequence: UInt16(index), timestamp: UInt32(place * 960), duration: 960, payload: bytes,
                    arrival: arrivals[index])
            }
        }
        #expect(buffer.statistics.dropped == 0, "\(buffer.statistics.dropped) frames of speech skipped")
        #expect(holds[100] == 22_000_000, "a frame and the phase while the minimum holds")
        #expect(
            holds[Int64(first + 50)] == 2_000_000,
            "only the phase after the pause: \(String(describing: holds[Int64(first + 50)]))")
        #expect(buffer.statistics.lost == 0 && buffer.statistics.late == 0)
    }

    @Test func aLastingStepInTheNetworkDelayIsWaitedForOnce() {
        // From packet 200 on every packet takes 200 ms longer (a route through a relay, or a
        // sender whose capture fell behind) and stays so: the buffer must stretch by those 200 ms
        // once, not again when the faster packets leave its history and its base delay moves up.
        var simulation = JitterSimulation()
        simulation.run(frames: 1000) { index, sent in [sent + 5_000_000 + (index >= 200 ? 200_000_000 : 0)] }
        let stretchedFrames = simulation.actions.dropFirst(190).prefix(790).count(where: \.isConceal)
        #expect(stretchedFrames >= 9, "the 200 ms step is waited for")
        #expect(stretchedFrames <= 11, "and only once: \(stretchedFrames) frames concealed")
        #expect(Self.isIncreasing(simulation.played))
        #expect(simulation.played.count == 1000 - simulation.stats.dropped)
        // Once the step has left the history, the buffer holds no more than before it.
        #expect(simulation.delays[900...980].max()! <= simulation.delays[150...190].max()! + JitterSimulation.frame)
    }

    @Test func randomImpairmentNeverBreaksOrderOrBounds() {
        // Loss, bursts, duplicates, jitter and reordering together, from a seeded generator.
        var impairment = Impairment(
            .init(
                loss: 0.05, burstProbability: 0.01, burstLength: 4, duplicate: 0.05, delay: .milliseconds(10),
                jitter: .milliseconds(40), reorder: 0.05, reorderDelay: .milliseconds(60)),
            seed: 7)
        var simulation = JitterSimulation()
        simulation.run(frames: 3000) { _, sent in
            impairment.deliveries(sentAt: .nanoseconds(Int64(sent))).times.map { $0.nanoseconds }
        }
        #expect(Self.isIncreasing(simulation.played))
        #expect(simulation.stats.targetDelay <= 400 * 48)
        #expect(simulation.buffer.bufferedCount <= 64)
        // Everything sent is accounted for: played, dropped to shrink, or lost.
        let sent = 3000 - impairment.dropped
        #expect(simulation.played.count + simulation.stats.dropped + simulation.stats.lost >= 3000 - 5)
        // A duplicate of a packet that came too late cannot be told from the original (it was never
        // stored), so it may count as received once more.
        #expect(simulation.stats.received >= sent)
        #expect(simulation.stats.received - simulation.stats.late <= sent)
    }

    @Test func aStoppedPeerGoesIdleAndRestartsWithItsNextPacket() {
        var simulation = JitterSimulation()
        // 100 frames, silence for 2 s, then 100 more (e.g. the peer's app was suspended).
        simulation.run(frames: 300) { index, sent in (100..<200).contains(index) ? [] : [sent + 5_000_000] }
        #expect(simulation.actions.contains(.idle))
        #expect(simulation.played.count == 200)
        #expect(Self.isIncreasing(simulation.played))
    }

    /// A sender that adds RFC 2198 copies sends a new receiver, in its first payload, a copy of a
    /// frame from before the receiver was listening: that frame was never sent to it, not lost.
    @Test func aCopyOfAFrameFromBeforeTheFirstPayloadIsNotCountedAsLost() {
        let buffer = JitterBuffer()
        for index in 10..<20 {
            let arrival = 1_000_000_000 + UInt64(index) * 20_000_000
            [UInt8(index - 1)].withUnsafeBytes { copy in
                _ = buffer.insert(
                    sequence: UInt16(index - 1), timestamp: UInt32((index - 1) * 960), duration: 960, payload: copy,
                    arrival: arrival, isCopy: true)
            }
            [UInt8(index)].withUnsafeBytes { primary in
                _ = buffer.insert(
                    sequence: UInt16(index), timestamp: UInt32(index * 960), duration: 960, payload: primary,
                    arrival: arrival)
            }
        }
        #expect(buffer.statistics.received == 10)
        #expect(buffer.statistics.expected == 10, "\(buffer.statistics)")
    }

    @Test func theHoldFollowsTheTargetDownWhenTheCopiesStop() {
        // Frames arrive 5 ms after they were sent, the player asks 7 ms after each send (2 ms of
        // phase). The first 100 frames carry a copy, so the buffer keeps a frame for it; then
        // the copies stop and the minimum goes back to zero.
        let buffer = JitterBuffer()
        buffer.setMinimumDelay(.milliseconds(20))
        var holds: [Int: Int] = [:]
        for index in 0..<500 {
            if index == 100 { buffer.setMinimumDelay(.zero) }
            let sent = 1_000_000_000 + UInt64(index) * 20_000_000
            [UInt8(index % 256)].withUnsafeBytes { bytes in
                _ = buffer.insert(
                    sequence: UInt16(index), timestamp: UInt32(index * 960), duration: 960, payload: bytes,
                    arrival: sent + 5_000_000)
            }
            if case .play = buffer.next(now: sent + 7_000_000) { holds[index] = buffer.statistics.currentDelay }
        }
        #expect(holds[90] == 48 * 22, "a frame and the phase while copies come")
        // With no pause, the lowered minimum takes effect after `minimumReleaseWait` (4 s) and its
        // 20 ms of target is released within about a second more; the old buffer kept it (22 ms).
        #expect(holds[299] == 48 * 22, "no pause came yet: the minimum holds")
        #expect(holds[499] == 48 * 2, "only the player's phase: \(String(describing: holds[499]))")
        #expect(buffer.statistics.dropped == 1 && buffer.statistics.lost == 0)
    }

    @Test func theDelayShownIsThePlayedFramesNotThePausesLength() {
        // 50 frames arrive 5 ms after they were sent; the player asks 7 ms after each send, so
        // each frame waits 2 ms beyond its transit. Then the sender pauses for a second.
        var harness = JitterSimulation()
        harness.run(frames: 50)
        let played = harness.delays[harness.actions.lastIndex { if case .play = $0 { true } else { false } } ?? 0]
        #expect(played == 96, "2 ms at 48 kHz")
        for _ in 0..<50 { harness.actions.append(harness.buffer.next(now: 2_500_000_000)) }
        // On the old code the figure grew with every frame of the pause.
        #expect(harness.stats.currentDelay == played)
    }

    @Test func aDTXPauseIsSilenceNotLossAndAddsNoDelay() {
        // Frames 0–49, then the sender's DTX skips 10 frames of time (200 ms) without skipping a
        // sequence number, then frames 50–99. Each arrives 5 ms after it was sent; the player asks
        // every 20 ms and the buffer gets each packet only when it arrives, so during the pause it
        // cannot know yet that the gap is DTX.
        let buffer = JitterBuffer()
        var playedAt: [Int64: UInt64] = [:]
        var afterPause: JitterBuffer.Statistics?
        var tick: UInt64 = 1_007_000_000
        func play() {
            if case .play(let frame) = buffer.next(now: tick) {
                playedAt[frame.sequence] = tick
                if frame.sequence == 50 { afterPause = buffer.statistics }
            }
            tick += 20_000_000
        }
        func arrival(_ index: Int) -> UInt64 {
            1_000_000_000 + UInt64(index < 50 ? index : index + 10) * 20_000_000 + 5_000_000
        }
        for index in 0..<100 {
            while tick < arrival(index) { play() }
            [UInt8(index)].withUnsafeBytes { bytes in
                _ = buffer.insert(
                    sequence: UInt16(index), timestamp: UInt32((index < 50 ? index : index + 10) * 960), duration: 960,
                    payload: bytes, arrival: arrival(index))
            }
        }
        for _ in 0..<5 { play() }
        #expect(buffer.statistics.lost == 0)
        #expect(playedAt.count == 100)
        // What played in the pause counts as silence, not concealment.
        #expect(afterPause.map { $0.silent >= 9 && $0.concealed == 0 } == true, "\(String(describing: afterPause))")
        // The pause does not become delay: frame 50 plays as soon after its arrival as frame 49 did.
        let before = Int64(playedAt[49] ?? 0) - Int64(arrival(49))
        let after = Int64(playedAt[50] ?? .max / 2) - Int64(arrival(50))
        #expect(after <= before + 20_000_000, "frame 49 played \(before) ns after it arrived, frame 50 \(after) ns")
    }
}

/// The queueing delay a receiver reports (PROTOCOL §10.1 `queue_delay_ms`), measured one way on
/// the primaries' transit to their frame's end.
@Suite("Jitter buffer: queueing delay")
struct QueueDelayTests {
    /// Inserts `count` packets of `frames` 20 ms frames, the first with sequence `sequence` and
    /// starting at frame `frame` of a sender whose first sample was at 1 s and had `firstTimestamp`;
    /// each arrives 5 ms plus `extra(packet)` ns after its last sample. Returns the estimate in ms.
    static func estimate(
        _ buffer: JitterBuffer, sequence: Int, frame: Int, count: Int, frames: Int = 1, firstTimestamp: UInt32 = 0,
        extra: (Int) -> UInt64 = { _ in 0 }
    ) -> Double {
        let payload = [UInt8](repeating: 0xF8, count: 3)
        for packet in 0..<count {
            let first = frame + packet * frames
            let end = 1_000_000_000 + UInt64(first + frames) * 20_000_000
            payload.withUnsafeBytes {
                _ = buffer.insert(
                    sequence: UInt16(truncatingIfNeeded: sequence + packet),
                    timestamp: firstTimestamp &+ UInt32(truncatingIfNeeded: first * 960),
                    duration: frames * 960, payload: $0, arrival: end + 5_000_000 + extra(packet))
            }
        }
        return buffer.statistics.queueDelay / 48
    }

    @Test func aSteadyPathHasNoQueue() {
        let buffer = JitterBuffer()
        #expect(Self.estimate(buffer, sequence: 0, frame: 0, count: 200) < 0.01)
    }

    /// A queue that grows by 100 ms over a second (an uplink sending more than it takes) is seen
    /// within that second, well past the sender's 40 ms threshold, and fades once it drains.
    @Test func aGrowingQueueIsSeenBeforeAnyLoss() {
        let buffer = JitterBuffer()
        _ = Self.estimate(buffer, sequence: 0, frame: 0, count: 100)
        let queued = Self.estimate(buffer, sequence: 100, frame: 100, count: 50) { UInt64($0 + 1) * 2_000_000 }
        #expect(queued > 60 && queued <= 100, "\(queued) ms")
        let drained = Self.estimate(buffer, sequence: 150, frame: 150, count: 100)
        #expect(drained < 1, "\(drained) ms")
    }

    /// The frame whose estimate reaches the sender's back-off level (40 ms) flags it, so that the
    /// receive channel asks for a REPORT at once (§10.1); a steady path never does.
    @Test func aQueueReachingTheBackOffLevelIsFlagged() {
        let buffer = JitterBuffer()
        _ = Self.estimate(buffer, sequence: 0, frame: 0, count: 100)
        #expect(!buffer.queueReachedBackOff)
        _ = Self.estimate(buffer, sequence: 100, frame: 100, count: 50) { UInt64($0 + 1) * 2_000_000 }
        #expect(buffer.queueReachedBackOff)
    }

    /// A sender that lengthens its packets from 20 to 60 ms sends each one 40 ms later after its
    /// first sample: counted to the frame's end, that is no queue.
    @Test func longerPacketsAreNotAQueue() {
        let buffer = JitterBuffer()
        _ = Self.estimate(buffer, sequence: 0, frame: 0, count: 100)
        #expect(Self.estimate(buffer, sequence: 100, frame: 100, count: 50, frames: 3) < 0.5)
    }

    /// A sender that started its timestamps anew (10 s away) is no queue either.
    @Test func aSenderThatRestartsItsTimestampsIsNoQueue() {
        let buffer = JitterBuffer()
        _ = Self.estimate(buffer, sequence: 0, frame: 0, count: 100)
        let restarted = Self.estimate(
            buffer, sequence: 100, frame: 100, count: 50, firstTimestamp: UInt32(truncatingIfNeeded: -480_000))
        #expect(restarted < 1, "\(restarted) ms")
    }
}
