import ParleyProtocol
import Testing

@testable import RendezvousClient

@Suite("Rendezvous client logic")
struct ClientLogicTests {
    @Test func hostHeaderOmitsDefaultPorts() throws {
        #expect(try RendezvousURL(parsing: "wss://rv.example.org/").hostHeader == "rv.example.org")
        #expect(try RendezvousURL(parsing: "ws://rv.example.org:443/").hostHeader == "rv.example.org:443")
        #expect(try RendezvousURL(parsing: "ws://[::1]:7777/").hostHeader == "[::1]:7777")
    }

    /// §4.3 step 7: attempt k waits b·v, b = min(30 s, 0.5 s·2^k), v in [0.5, 1].
    @Test(arguments: [0, 1, 2, 5, 6, 10, 40])
    func backoffStaysInItsBand(attempt: Int) {
        let policy = RendezvousClient.ReconnectPolicy()
        var generator = SystemRandomNumberGenerator()
        let base = min(Duration.seconds(30), .milliseconds(500) * (1 << min(attempt, 30)))
        for _ in 0..<200 {
            let delay = policy.delay(attempt: attempt, using: &generator)
            #expect(delay >= base / 2 && delay <= base)
        }
    }

    /// §4.3 step 6: GOING_AWAY's hint plus up to the hint again.
    @Test func goingAwayDelayIsTheHintPlusJitter() {
        let policy = RendezvousClient.ReconnectPolicy()
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let delay = policy.delay(goingAwayHint: 1000, using: &generator)
            #expect(delay >= .seconds(1) && delay <= .seconds(2))
        }
    }
}
