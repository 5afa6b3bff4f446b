import Foundation
import ParleyAudio
import ParleyCore
import ParleyProtocol
import ParleyTestSupport
import Testing

@Suite("Frame history (RFC 2198 copies)")
struct FrameHistoryTests {
    @Test(arguments: [0, 1, 2, 3, 4])
    func payloadsCarryTheRequestedCopiesOfPreviousFrames(copies: Int) throws {
        let history = FrameHistory()
        var output = [UInt8](repeating: 0, count: MediaPayload.maximumSize)
        var last: [UInt8] = []
        for index in 0..<6 {
            let opus = [UInt8](repeating: UInt8(index), count: 20 + index)
            let length = opus.withUnsafeBytes { bytes in
                let frame = MediaPayload.Frame(timestamp: UInt32(index * 960), duration: 960, opus: bytes)
                let length = output.withUnsafeMutableBytes { out in
                    history.writePayload(sequence: UInt16(index), primary: frame, copies: copies, into: out)
                }
                history.append(frame)
                return length
            }
            last = Array(output.prefix(length))
        }
        try last.withUnsafeBytes { raw in
            let payload = try MediaPayload(parsing: raw)
            #expect(payload.redundantCount == copies)
            for index in 0..<copies {
                let block = payload.redundantBlock(index, in: raw)
                let age = copies - index
                #expect(block.sequence == UInt16(5 - age))
                #expect(Array(raw[block.range]) == [UInt8](repeating: UInt8(5 - age), count: 20 + 5 - age))
            }
        }
    }

    @Test func copiesThatDoNotFitAreLeftOut() throws {
        let history = FrameHistory()
        let big = [UInt8](repeating: 7, count: 500)
        var output = [UInt8](repeating: 0, count: MediaPayload.maximumSize)
        try big.withUnsafeBytes { bytes in
            for index in 0..<3 {
                history.append(MediaPayload.Frame(timestamp: UInt32(index * 960), duration: 960, opus: bytes))
            }
            let frame = MediaPayload.Frame(timestamp: 3 * 960, duration: 960, opus: bytes)
            let length = output.withUnsafeMutableBytes { out in
                history.writePayload(sequence: 3, primary: frame, copies: 3, into: out)
            }
            #expect(length <= MediaPayload.maximumSize)
            let payload = try output.prefix(length).withUnsafeBytes { try MediaPayload(parsing: $0) }
            #expect(payload.redundantCount == 1)  // 10 + 500 + 6 + 500 fits; a second copy would not
        }
    }
}

@Suite("Redundancy policy, impairment, mixer, rings")
struct MediaHelpersTests {
    @Test(arguments: [(0.0, 0, 0), (0.005, 0, 1), (0.02, 1, 1), (0.10, 2, 1), (0.20, 3, 1), (1.0, 3, 100)])
    func protectionGrowsWithLoss(loss: Double, copies: Int, percent: Int) {
        let decision = RedundancyPolicy().decision(forLoss: loss)
        #expect(decision.copies == copies)
        #expect(decision.encoderLossPercent == percent)
        // Plain in-band FEC gets the whole measured loss.
        #expect(RedundancyPolicy.fecOnly.decision(forLoss: loss).encoderLossPercent == Int((loss * 100).rounded(.up)))
    }

    @Test func impairmentIsDeterministicAndHitsItsRates() {
        let configuration = Impairment.Configuration(
            loss: 0.1, duplicate: 0.05, delay: .milliseconds(20), jitter: .milliseconds(10))
        var first = Impairment(configuration, seed: 42)
        var second = Impairment(configuration, seed: 42)
        var delivered = 0
        var duplicated = 0
        for index in 0..<20_000 {
            let sent = Duration.milliseconds(20 * index)
            let a = first.deliveries(sentAt: sent)
            #expect(a == second.deliveries(sentAt: sent))
            delivered += a.count > 0 ? 1 : 0
            duplicated += a.count == 2 ? 1 : 0
            for time in a.times {
                #expect(time >= sent + .milliseconds(20) && time <= sent + .milliseconds(35))
            }
        }
        #expect(abs(Double(20_000 - delivered) / 20_000 - 0.1) < 0.01)
        #expect(abs(Double(duplicated) / Double(delivered) - 0.05) < 0.01)
        var seeded42 = Impairment(configuration, seed: 42)
        var seeded43 = Impairment(configuration, seed: 43)
        let differs = (0..<100).contains { index in
            seeded42.deliveries(sentAt: .milliseconds(20 * index))
                != seeded43.deliveries(sentAt: .milliseconds(20 * index))
        }
        #expect(differs)
    }

    @Test func burstsDropConsecutivePackets() {
        var impairment = Impairment(.init(burstProbability: 0.02, burstLength: 5), seed: 1)
        var run = 0
        var runs: [Int] = []
        for index in 0..<10_000 {
            if impairment.deliveries(sentAt: .milliseconds(20 * index)).count == 0 {
                run += 1
            } else if run > 0 {
                runs.append(run)
                run = 0
            }
        }
        #expect(!runs.isEmpty)
        #expect(runs.allSatisfy { $0 % 5 == 0 })
    }

    @Test(arguments: [(0.5, 0.5), (0.75, 0.75), (1.0, 0.944), (2.0, 0.999), (-3.0, -1.0)] as [(Float, Float)])
    func softClipIsLinearBelowTheKneeAndBoundedAbove(input: Float, approximately expected: Float) {
        let output = SoftClipMixer.softClip(input)
        #expect(abs(output) <= 1)
        #expect(abs(output - expected) < 0.02)
    }

    @Test func softClipIsMonotonic() {
        var previous: Float = -2
        for step in 0...4000 {
            let value = SoftClipMixer.softClip(Float(step) / 1000 - 2)
            #expect(value >= previous)
            previous = value
        }
    }

    /// The render rounds by hand (half away from zero) to stay vectorizable: it must give what
    /// `rounded()` gives, over the whole range a mix reaches and beyond the knee.
    @Test func renderRoundsAsRoundedDoes() {
        let sums = (0...600_000).map { Float($0) / 200_000 - 1.5 }
        var output = [Int16](repeating: 0, count: sums.count)
        sums.withUnsafeBufferPointer { sum in
            output.withUnsafeMutableBufferPointer { SoftClipMixer.render(sum, into: $0) }
        }
        let mismatches = zip(sums, output).filter { sum, rendered in
            rendered != Int16((SoftClipMixer.softClip(sum) * 32767).rounded())
        }
        #expect(mismatches.isEmpty, "\(mismatches.prefix(5))")
    }

    /// The level is summed as integers: it must be the level a Double sum gives.
    @Test func aFramesLevelIsItsRMSInDBFS() {
        var generator = SystemRandomNumberGenerator()
        for amplitude in [1, 100, 3000, 32767] {
            let frame = (0..<480).map { _ in Int16(Int.random(in: -amplitude...amplitude, using: &generator)) }
            let reference = 10 * log10(frame.map { Double($0) * Double($0) / (32768 * 32768) }.reduce(0, +) / 480)
            let level = frame.withUnsafeBufferPointer { LevelMeter.rmsLevel(of: $0) }
            #expect(abs(level - max(LevelMeter.floor, reference)) < 1e-9)
        }
        let square = [Int16](repeating: -32768, count: 480)
        #expect(square.withUnsafeBufferPointer { LevelMeter.rmsLevel(of: $0) } == 0)
        #expect(
            [Int16](repeating: 0, count: 480).withUnsafeBufferPointer { LevelMeter.rmsLevel(of: $0) }
                == LevelMeter.floor)
    }

    @Test func ringsPassDataInOrderAndRefuseWhenFull() {
        let samples = SampleRing(capacity: 8)
        let input: [Int16] = [1, 2, 3, 4, 5, 6]
        #expect(input.withUnsafeBufferPointer { samples.write($0) } == 6)
        #expect(input.withUnsafeBufferPointer { samples.write($0) } == 2)  // only 2 free
        var output = [Int16](repeating: 0, count: 5)
        #expect(output.withUnsafeMutableBufferPointer { samples.read(into: $0) } == 5)
        #expect(output == [1, 2, 3, 4, 5])
        #expect(samples.available == 3)

        let packets = PacketRing(slotCount: 2, slotSize: 4)
        #expect(([1, 2, 3] as [UInt8]).withUnsafeBytes { packets.push($0, arrival: 10) })
        #expect(!([1, 2, 3, 4, 5] as [UInt8]).withUnsafeBytes { packets.push($0, arrival: 11) })  // too large
        #expect(([4] as [UInt8]).withUnsafeBytes { packets.push($0, arrival: 12) })
        #expect(!([5] as [UInt8]).withUnsafeBytes { packets.push($0, arrival: 13) })  // full
        #expect(packets.dropped == 2)
        var seen: [([UInt8], UInt64)] = []
        packets.drain { bytes, arrival in seen.append((Array(bytes), arrival)) }
        #expect(seen.map(\.0) == [[1, 2, 3], [4]])
        #expect(seen.map(\.1) == [10, 12])
    }
}
