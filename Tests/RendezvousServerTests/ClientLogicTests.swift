import Testing

@testable import RendezvousClient

@Suite("Rendezvous client logic")
struct ClientLogicTests {
    @Test(arguments: [
        ("ws://rv.example.org:7777/", false, "rv.example.org", 7777, "/"),
        ("wss://rv.example.org", true, "rv.example.org", 443, "/"),
        ("ws://rv.example.org", false, "rv.example.org", 80, "/"),
        ("wss://[2001:db8::1]:8443/parley/", true, "2001:db8::1", 8443, "/parley/"),
        ("ws://127.0.0.1:9/x?y=1", false, "127.0.0.1", 9, "/x?y=1"),
    ])
    func urlsParse(text: String, tls: Bool, host: String, port: Int, path: String) throws {
        let url = try RendezvousURL(text)
        #expect(url.usesTLS == tls && url.host == host && url.port == port && url.path == path)
    }

    @Test(arguments: [
        "http://rv.example.org/", "rv.example.org:7777", "ws://", "ws://:7777/", "ws://host:0/", "ws://host:99999/",
        "wss://[2001:db8::1/", "ws://user@host/",
    ])
    func badURLsAreRejected(text: String) {
        #expect(throws: RendezvousClientError.self) { try RendezvousURL(text) }
    }

    @Test func hostHeaderOmitsDefaultPorts() throws {
        #expect(try RendezvousURL("wss://rv.example.org/").hostHeader == "rv.example.org")
        #expect(try RendezvousURL("ws://[::1]:7777/").hostHeader == "[::1]:7777")
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
