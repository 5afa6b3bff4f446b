import ICE
import ParleyTestSupport
import Testing

@Suite("libnice wrapper (minimal path)")
struct ICEAgentTests {
    /// The first event matching `predicate` (the caller bounds the wait with `withTimeout`).
    static func next(
        _ iterator: inout AsyncStream<ICEEvent>.Iterator, where predicate: (ICEEvent) -> Bool
    ) async throws -> ICEEvent {
        while let event = await iterator.next() {
            if predicate(event) { return event }
        }
        throw ICEError("the agent's event stream ended")
    }

    @Test func twoAgentsOnLoopbackReachReadyAndPassADatagram() async throws {
        try await withTimeout(.seconds(20), "two loopback agents to connect and pass a datagram") {
            try await Self.connectAndPassADatagram()
        }
    }

    static func connectAndPassADatagram() async throws {
        let loop = GLibLoop()
        defer { loop.stop() }
        let alice = try ICEAgent(loop: loop, controlling: true, localAddresses: ["127.0.0.1"])
        let bob = try ICEAgent(loop: loop, controlling: false, localAddresses: ["127.0.0.1"])
        defer { alice.close(); bob.close() }
        #expect(!alice.boolProperty("upnp"))
        #expect(!alice.boolProperty("ice-tcp"))
        #expect(alice.boolProperty("controlling-mode"))
        #expect(!bob.boolProperty("controlling-mode"))

        var aliceEvents = alice.events.makeAsyncIterator()
        var bobEvents = bob.events.makeAsyncIterator()
        let aliceStream = try alice.addStream()
        let bobStream = try bob.addStream()
        try alice.gatherCandidates(stream: aliceStream)
        try bob.gatherCandidates(stream: bobStream)
        _ = try await next(&aliceEvents) { if case .gatheringDone = $0 { true } else { false } }
        _ = try await next(&bobEvents) { if case .gatheringDone = $0 { true } else { false } }

        let aliceSDP = try alice.localDescription()
        let bobSDP = try bob.localDescription()
        // Host candidates only, on loopback only, UDP only.
        #expect(aliceSDP.contains("127.0.0.1"))
        #expect(!aliceSDP.contains(" tcp "))
        #expect(!aliceSDP.lowercased().contains("typ srflx"))
        try alice.setRemoteDescription(bobSDP)
        try bob.setRemoteDescription(aliceSDP)

        let isReady: (ICEEvent) -> Bool = { if case .stateChanged(_, .ready) = $0 { true } else { false } }
        _ = try await next(&aliceEvents, where: isReady)
        _ = try await next(&bobEvents, where: isReady)

        let message: [UInt8] = Array("hello from alice".utf8)
        #expect(alice.send(message, stream: aliceStream))
        let received = try await next(&bobEvents) { if case .received = $0 { true } else { false } }
        guard case .received(let stream, let datagram) = received else { return }
        #expect(stream == bobStream)
        #expect(datagram == message)
    }

    @Test func badLocalAddressIsAClearError() {
        let loop = GLibLoop()
        defer { loop.stop() }
        #expect(throws: ICEError.self) { try ICEAgent(loop: loop, controlling: true, localAddresses: ["not-an-ip"]) }
    }
}
