import ParleyCore
import ParleyProtocol
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
