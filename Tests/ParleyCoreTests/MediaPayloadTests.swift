import ParleyCore
import Testing

@Suite("Media payload (docs/PROTOCOL.md §9)")
struct MediaPayloadTests {
    /// Builds a payload with the writer: primary "P…" and copies of earlier 20 ms frames.
    static func build(sequence: UInt16 = 0x1234, timestamp: UInt32 = 0x0102_0304, copies: [[UInt8]] = []) -> [UInt8] {
        let primary: [UInt8] = [0xF8, 0x50, 0x51]
        var output = [UInt8](repeating: 0, count: MediaPayload.maximumSize)
        let length = primary.withUnsafeBytes { primaryBytes in
            let storage = copies.map { copy in
                let pointer = UnsafeMutableRawBufferPointer.allocate(byteCount: copy.count, alignment: 1)
                pointer.copyBytes(from: copy)
                return UnsafeRawBufferPointer(pointer)
            }
            defer { storage.forEach { $0.deallocate() } }
            let frames = storage.enumerated().map { index, bytes in
                MediaPayload.Frame(
                    timestamp: timestamp &- UInt32(960 * (copies.count - index)), duration: 960, opus: bytes)
            }
            return output.withUnsafeMutableBytes { out in
                MediaPayload.write(
                    sequence: sequence, primary: .init(timestamp: timestamp, duration: 960, opus: primaryBytes),
                    redundant: frames, into: out)
            }
        }
        return Array(output.prefix(length))
    }

    @Test func theLayoutIsExactlyAsSpecified() throws {
        // The example in docs/PROTOCOL.md §9: one copy.
        let bytes = Self.build(copies: [[0xF8, 0xAA]])
        #expect(
            bytes == [
                0x01, 0x01, 0x12, 0x34, 0x01, 0x02, 0x03, 0x04, 0x03, 0xC0,  // version, R, seq, ts, duration 960
                0x03, 0xC0, 0x03, 0xC0, 0x00, 0x02,  // copy: offset 960, duration 960, length 2
                0xF8, 0xAA,  // copy
                0xF8, 0x50, 0x51,  // primary
            ])
        try bytes.withUnsafeBytes { raw in
            let payload = try MediaPayload(parsing: raw)
            #expect(payload.sequence == 0x1234)
            #expect(payload.timestamp == 0x0102_0304)
            #expect(payload.primary.duration == 960)
            #expect(Array(raw[payload.primary.range]) == [0xF8, 0x50, 0x51])
            #expect(payload.redundantCount == 1)
            let copy = payload.redundantBlock(0, in: raw)
            #expect(copy.sequence == 0x1233)
            #expect(copy.timestamp == 0x0102_0304 - 960)
            #expect(Array(raw[copy.range]) == [0xF8, 0xAA])
        }
    }

    @Test(arguments: 0...4)
    func payloadsWithCopiesRoundTrip(count: Int) throws {
        let copies = (0..<count).map { index in [UInt8](repeating: UInt8(index + 1), count: 10 + index) }
        let bytes = Self.build(sequence: 1, timestamp: 100, copies: copies)  // timestamps wrap below zero
        try bytes.withUnsafeBytes { raw in
            let payload = try MediaPayload(parsing: raw)
            #expect(payload.redundantCount == count)
            for index in 0..<count {
                let block = payload.redundantBlock(index, in: raw)
                #expect(Array(raw[block.range]) == copies[index])
                #expect(block.sequence == 1 &- UInt16(count - index))
                #expect(block.timestamp == 100 &- UInt32(960 * (count - index)))
            }
            MediaPayload.fuzzOneInput(raw)  // round-trips
        }
    }

    static let invalid: [([UInt8], MediaPayloadError)] = [
        ([], .truncated(needed: 10, have: 0)),
        ([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0x03], .truncated(needed: 10, have: 9)),
        ([0x02, 0x00, 0, 1, 0, 0, 0, 0, 0x03, 0xC0, 0xF8], .unsupportedVersion(2)),
        ([0x01, 0x05, 0, 1, 0, 0, 0, 0, 0x03, 0xC0, 0xF8], .tooManyRedundantBlocks(5)),
        ([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0x03, 0xC1, 0xF8], .invalidDuration(961)),
        ([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0x03, 0xC0], .truncated(needed: 11, have: 10)),  // no primary byte
        ([0x01, 0x01, 0, 1, 0, 0, 0, 0, 0x03, 0xC0, 0x03, 0xC0, 0x03, 0xC0], .truncated(needed: 16, have: 14)),
        ([0x01, 0x01, 0, 1, 0, 0, 0, 0, 0x03, 0xC0, 0x03, 0xC0, 0x03, 0xC0, 0x00, 0x00, 0xF8], .emptyBlock(0)),
        (
            [0x01, 0x01, 0, 1, 0, 0, 0, 0, 0x03, 0xC0, 0x01, 0xE0, 0x03, 0xC0, 0x00, 0x01, 0xF8, 0xF8],
            .overlappingBlocks(0)
        ),
        (
            [0x01, 0x01, 0, 1, 0, 0, 0, 0, 0x03, 0xC0, 0x03, 0xC0, 0x03, 0xC0, 0x00, 0x05, 0xF8, 0xF8],
            .truncated(needed: 22, have: 18)
        ),
        // Two copies out of order (the older one second).
        (
            [
                0x01, 0x02, 0, 1, 0, 0, 0, 0, 0x03, 0xC0, 0x03, 0xC0, 0x03, 0xC0, 0x00, 0x01, 0x07, 0x80, 0x03, 0xC0,
                0x00, 0x01, 1, 2, 3,
            ],
            .overlappingBlocks(1)
        ),
    ]

    @Test(arguments: invalid)
    func malformedPayloadsAreRejectedWithAClearError(bytes: [UInt8], error: MediaPayloadError) {
        #expect(throws: error) { try bytes.withUnsafeBytes { raw in _ = try MediaPayload(parsing: raw) } }
        #expect(!error.description.isEmpty)
    }

    @Test func oversizedPayloadsAreRejected() {
        let bytes = [0x01, 0x00, 0, 1, 0, 0, 0, 0, 0x03, 0xC0] + [UInt8](repeating: 0xF8, count: 1191)
        #expect(throws: MediaPayloadError.tooLarge(1201)) {
            try bytes.withUnsafeBytes { _ = try MediaPayload(parsing: $0) }
        }
    }

    /// Randomized mutation (the same entry point `Scripts/fuzz` drives): flips, inserts, deletes
    /// and truncates bytes of valid payloads; the parser must never trap, and whatever it accepts
    /// must round-trip exactly.
    @Test func randomMutationsNeverCrashTheParser() {
        var generator = SeededGenerator(seed: 0x5EED)
        let seeds = (0...4).map { count in
            Self.build(copies: (0..<count).map { [UInt8](repeating: UInt8($0), count: 3 + $0) })
        }
        var accepted = 0
        for _ in 0..<50_000 {
            var bytes = seeds[Int(generator.next() % UInt64(seeds.count))]
            for _ in 0...(generator.next() % 4) {
                let position = bytes.isEmpty ? 0 : Int(generator.next() % UInt64(bytes.count))
                switch generator.next() % 5 {
                case 0 where !bytes.isEmpty: bytes[position] ^= UInt8(1 << (generator.next() % 8))
                case 1 where !bytes.isEmpty: bytes[position] = UInt8(truncatingIfNeeded: generator.next())
                case 2: bytes.insert(UInt8(truncatingIfNeeded: generator.next()), at: position)
                case 3 where !bytes.isEmpty: bytes.remove(at: position)
                default: bytes = Array(bytes.prefix(position))
                }
            }
            bytes.withUnsafeBytes { raw in
                MediaPayload.fuzzOneInput(raw)
                if (try? MediaPayload(parsing: raw)) != nil { accepted += 1 }
            }
        }
        // Some mutations (e.g. of Opus bytes) stay valid, most do not: both paths were exercised.
        #expect(accepted > 1000)
        #expect(accepted < 49_000)
    }
}

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
