import ParleyProtocol
import Sodium
import Testing

/// The fuzz entry points (Scripts/fuzz runs them under libFuzzer) hold up on their seeds, on
/// every truncation of them, and on random bytes, in an ordinary test run too.
@Suite("Fuzz entry points")
struct FuzzEntryTests {
    static let targets: [(String, @Sendable ([UInt8]) -> Void, @Sendable () -> [[UInt8]])] = [
        ("invite", ParleyProtocolFuzz.invite, ParleyProtocolFuzz.inviteSeeds),
        ("envelope", ParleyProtocolFuzz.envelope, ParleyProtocolFuzz.envelopeSeeds),
        ("transport", ParleyProtocolFuzz.transportPacket, ParleyProtocolFuzz.transportSeeds),
        ("fan-out", ParleyProtocolFuzz.fanOutFrame, ParleyProtocolFuzz.fanOutSeeds),
    ]

    @Test(arguments: 0..<4)
    func seedsTruncationsAndNoise(target: Int) {
        let (_, run, seeds) = Self.targets[target]
        let inputs = seeds()
        #expect(!inputs.isEmpty)
        for seed in inputs {
            run(seed)
            for length in stride(from: 0, to: seed.count, by: max(1, seed.count / 16)) {
                run(Array(seed.prefix(length)))
            }
            var flipped = seed
            if !flipped.isEmpty { flipped[flipped.count / 2] ^= 0xFF }
            run(flipped)
        }
        for length in [0, 1, 4, 16, 33, 76, 132, 553, 2000] { run(RandomBytes.bytes(count: length)) }
    }
}
