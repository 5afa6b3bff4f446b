import ParleyCore
import RendezvousWire
import Testing

/// Until the libFuzzer target runs in CI (Scripts/fuzz), a deterministic mutation test feeds the
/// parsers' fuzz entry points many corrupted variants of valid messages: truncations, bit flips,
/// inserted and deleted bytes, changed length fields. The entry points trap on a round-trip
/// mismatch, and any crash fails the test run.
@Suite("Parser mutation fuzzing")
struct FuzzMutationTests {
    static func mutate(_ seed: [UInt8], using rng: inout SeededGenerator) -> [UInt8] {
        var bytes = seed
        for _ in 0...Int.random(in: 0...3, using: &rng) {
            switch Int.random(in: 0..<6, using: &rng) {
            case 0 where !bytes.isEmpty: bytes.removeLast(Int.random(in: 1...bytes.count, using: &rng))
            case 1 where !bytes.isEmpty:
                bytes[Int.random(in: 0..<bytes.count, using: &rng)] ^= 1 << UInt8.random(in: 0..<8, using: &rng)
            case 2:
                bytes.insert(UInt8.random(in: 0...255, using: &rng), at: Int.random(in: 0...bytes.count, using: &rng))
            case 3 where !bytes.isEmpty: bytes.remove(at: Int.random(in: 0..<bytes.count, using: &rng))
            case 4 where !bytes.isEmpty:
                bytes[Int.random(in: 0..<bytes.count, using: &rng)] = [0, 1, 0x7F, 0x80, 0xFF].randomElement(
                    using: &rng)!
            default:
                bytes += (0..<Int.random(in: 1...8, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            }
        }
        return bytes
    }

    @Test func rendezvousParserSurvivesMutations() throws {
        let seeds = try FuzzCorpus.seeds("rendezvous-wire")
        #expect(seeds.count >= 9)
        var rng = SeededGenerator(seed: 0x5EED_0005)
        var parsed = 0
        for round in 0..<60_000 {
            let input = Self.mutate(seeds[round % seeds.count], using: &rng)
            input.withUnsafeBytes { RendezvousWire.fuzz($0) }
            if (try? RendezvousMessage.parse(input)) != nil { parsed += 1 }
        }
        // Some mutants stay valid (payload bytes are free), most must not: both paths ran.
        #expect(parsed > 1_000 && parsed < 59_000)
    }

    @Test func stunParserSurvivesMutations() throws {
        let seeds = try FuzzCorpus.seeds("stun")
        #expect(seeds.count >= 3)
        var rng = SeededGenerator(seed: 0x5EED_3489)
        for round in 0..<30_000 {
            let input = Self.mutate(seeds[round % seeds.count], using: &rng)
            input.withUnsafeBytes { RendezvousWire.fuzzSTUN($0) }
        }
    }

    @Test(arguments: ["rendezvous-wire", "stun"])
    func everySeedIsAValidMessage(corpus: String) throws {
        for seed in try FuzzCorpus.seeds(corpus) {
            switch corpus {
            case "stun": #expect(throws: Never.self) { try STUNMessage.parse(seed) }
            default: #expect(try RendezvousMessage.parse(seed).encoded() == seed)
            }
        }
    }
}
