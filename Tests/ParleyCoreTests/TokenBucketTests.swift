import ParleyCore
import Testing

@Suite("Token bucket")
struct TokenBucketTests {
    struct BucketStep: Sendable, CustomTestStringConvertible {
        let name: String
        let rate: Double
        let burst: Double
        /// (time in ms, expected outcome of take)
        let takes: [(Int, Bool)]
        var testDescription: String { name }
    }

    static let bucketSteps: [BucketStep] = [
        BucketStep(name: "burst then empty", rate: 1, burst: 3, takes: [(0, true), (0, true), (0, true), (0, false)]),
        BucketStep(
            name: "refills at the rate", rate: 10, burst: 1, takes: [(0, true), (50, false), (100, true), (150, false)]),
        BucketStep(
            name: "never above the burst", rate: 1000, burst: 2,
            takes: [(0, true), (10_000, true), (10_000, true), (10_000, false)]),
        BucketStep(
            name: "clock going back is ignored", rate: 1, burst: 1, takes: [(1000, true), (0, false), (999, false)]),
    ]

    @Test(arguments: bucketSteps)
    func tokenBucket(_ row: BucketStep) {
        var bucket = TokenBucket(rate: row.rate, capacity: row.burst, now: 0)
        for (index, (milliseconds, expected)) in row.takes.enumerated() {
            #expect(
                bucket.take(now: UInt64(milliseconds) * 1_000_000) == expected, "take \(index) at \(milliseconds) ms")
        }
    }
}
