import ParleyCore
import Testing

@Suite("RFC 6479 replay window")
struct ReplayWindowTests {
    static let window: UInt64 = 1984  // 32 blocks: (32 − 1) × 64
    /// WireGuard's REJECT_AFTER_MESSAGES, the limit transport keys use (docs/PROTOCOL.md §8.5).
    static let limit: UInt64 = UInt64.max - (1 << 13)

    /// A table in the manner of WireGuard's counter self-test: every line is fed in order to one
    /// window and must be accepted or rejected as stated.
    static let table: [(counter: UInt64, accepted: Bool, why: String)] = [
        (0, true, "first packet"),
        (1, true, "in order"),
        (1, false, "duplicate"),
        (9, true, "jump ahead"),
        (8, true, "reordered within the window"),
        (7, true, "reordered within the window"),
        (7, false, "duplicate of a reordered packet"),
        (window + 10, true, "jump by the window size"),
        (10, false, "exactly the window size behind: too old"),
        (11, true, "one less than the window size behind: unseen, accepted"),
        (11, false, "duplicate at the window's edge"),
        (9, false, "behind the window"),
        (window + 9, true, "just behind the greatest"),
        (window + 9, false, "duplicate just behind the greatest"),
        (window + 11, true, "greatest + 1"),
        (12, true, "edge of the moved window"),
        (11, false, "fell out of the window"),
        (4 * window, true, "large jump clears the ring"),
        (window + 11, false, "far behind after the jump"),
        (3 * window + 1, true, "edge after the jump"),
        (3 * window, false, "window size behind after the jump"),
        (4 * window - 1, true, "reordered after the jump"),
        (4 * window, false, "duplicate of the greatest"),
        (1 << 40, true, "huge jump"),
        (4 * window - 2, false, "far behind the huge jump"),
        (limit - 1, true, "last counter below the limit"),
        (limit, false, "the limit itself"),
        (limit - 1, false, "duplicate at the limit"),
        (limit - 2, true, "reordered below the limit"),
        (limit + 1, false, "past the limit"),
        (UInt64.max, false, "the largest counter"),
        (0, false, "far behind"),
    ]

    @Test func wireGuardStyleTable() {
        var window = ReplayWindow(limit: Self.limit)
        #expect(window.windowSize == Self.window)
        for (line, entry) in Self.table.enumerated() {
            #expect(window.wouldAccept(entry.counter) == entry.accepted, "line \(line): \(entry.why) (check)")
            let accepted = window.accept(entry.counter)
            #expect(accepted == entry.accepted, "line \(line): \(entry.why)")
        }
    }

    @Test func checkingDoesNotRecord() {
        var window = ReplayWindow()
        #expect(window.wouldAccept(5))
        #expect(window.wouldAccept(5))
        #expect(window.greatestAccepted == nil)
        let accepted = window.accept(5)
        #expect(accepted)
        #expect(!window.wouldAccept(5))
        #expect(window.greatestAccepted == 5)
    }

    /// Random sequences against an obviously correct model (a set of every counter seen), with a
    /// tiny ring so the blocks wrap around constantly.
    @Test(arguments: [2, 4, 32])
    func agreesWithAReferenceModel(blockCount: Int) {
        var generator = SeededGenerator(seed: UInt64(blockCount))
        var window = ReplayWindow(blockCount: blockCount, limit: 5000)
        var seen = Set<UInt64>()
        var greatest: UInt64?
        let size = UInt64(blockCount - 1) * 64
        for _ in 0..<20_000 {
            let base = greatest ?? 0
            let counter: UInt64
            switch generator.next() % 4 {
            case 0: counter = base + 1 + generator.next() % 3
            case 1: counter = base &- min(base, generator.next() % (size + 10))
            case 2: counter = base + generator.next() % (3 * size)
            default: counter = generator.next() % 5100
            }
            let fresh = !seen.contains(counter)
            let inWindow = greatest.map { counter > $0 || $0 - counter < size } ?? true
            let expected = counter < 5000 && fresh && inWindow
            let accepted = window.accept(counter)
            #expect(accepted == expected, "counter \(counter), greatest \(String(describing: greatest))")
            if expected {
                seen.insert(counter)
                greatest = max(greatest ?? 0, counter)
            }
        }
    }
}
