import ParleyCore
import Testing

/// `Instant`: the meeting's clock reading, a count of nanoseconds with `Duration` arithmetic.
@Suite("Instant")
struct InstantTests {
    @Test(arguments: [
        Duration.zero, .nanoseconds(1), .milliseconds(250), .seconds(-3), .seconds(1) + .nanoseconds(7),
        .milliseconds(-1500), .seconds(86_400 * 365),
    ])
    func durationsGoThereAndBack(duration: Duration) {
        let start = Instant(nanoseconds: 5_000_000_000)
        #expect((start + duration) - start == duration)
        #expect((start + duration) - duration == start)
        #expect(start.duration(to: start + duration) == duration)
        var moved = start
        moved += duration
        moved -= duration
        #expect(moved == start)
    }

    @Test func laterIsGreater() {
        let earlier = Instant(nanoseconds: -1)
        let later = earlier + .nanoseconds(1)
        #expect(earlier < later)
        #expect(max(earlier, later) == later)
        #expect(later - earlier == .nanoseconds(1))
    }

    /// The clock moves on (it is read twice around a busy loop long enough for any clock).
    @Test func theClockMovesOn() {
        let first = Instant.now
        var second = Instant.now
        var spins = 0
        while second == first, spins < 10_000_000 {
            second = Instant.now
            spins += 1
        }
        #expect(second > first)
    }
}
