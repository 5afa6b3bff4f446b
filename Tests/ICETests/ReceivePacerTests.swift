import ICETestSupport
import ParleyTestSupport
import Synchronization
import Testing

@testable import ICE

@Suite("Receive pacing: datagram wake-ups batched to a consumer's frame")
struct ReceivePacerTests {
    // MARK: The policy

    @Test func pacesOnlyWhenDatagramsComeSeveralToAConsumerFrame() {
        var policy = ReceivePacingPolicy(consumerGoneAfter: .milliseconds(60))
        func wake(_ tick: UInt64, active: Bool = true) -> Bool {
            policy.wokeForDatagrams(consumerTick: tick, consumerActive: active)
        }
        // Two wake-ups a frame (a 1:1 call): asking would cost as much as it saves.
        for tick in UInt64(1)...5 {
            #expect(!wake(tick))
            #expect(!wake(tick))
        }
        // Many, but no consumer reads them: nobody would ask for the held datagrams.
        for _ in 0..<10 { #expect(!wake(6, active: false)) }
        // Three in one frame of an active consumer.
        #expect(!wake(7))
        #expect(!wake(7))
        #expect(wake(7))
        #expect(policy.paced)
    }

    @Test func aDrainThatFindsFewSocketsOrAConsumerThatStopsEndsPacing() {
        var policy = ReceivePacingPolicy(consumerGoneAfter: .milliseconds(60))
        func pace() { for _ in 0..<3 { _ = policy.wokeForDatagrams(consumerTick: 1, consumerActive: true) } }
        pace()
        policy.drained(readySockets: 7)
        policy.drained(readySockets: 2)
        #expect(policy.paced)
        policy.drained(readySockets: 1)  // one speaker left
        #expect(!policy.paced)
        // It starts counting afresh: two more wake-ups in the same frame do not pace.
        let first = policy.wokeForDatagrams(consumerTick: 1, consumerActive: true)
        let second = policy.wokeForDatagrams(consumerTick: 1, consumerActive: true)
        #expect(!first && !second)
        pace()
        #expect(policy.paced)
        policy.consumerStopped()
        #expect(!policy.paced)
    }

    @Test func aConsumerCountsAsGoneAfterItsBound() {
        let policy = ReceivePacingPolicy(consumerGoneAfter: .milliseconds(60))
        let tick: UInt64 = 5_000_000_000
        #expect(!policy.consumerActive(lastTick: 0, now: tick))  // never asked
        #expect(policy.consumerActive(lastTick: tick, now: tick + 59_999_999))
        #expect(!policy.consumerActive(lastTick: tick, now: tick + 60_000_000))
        #expect(policy.millisecondsUntilConsumerGone(lastTick: tick, now: tick + 10_500_000) == 50)
        #expect(policy.millisecondsUntilConsumerGone(lastTick: tick, now: tick + 70_000_000) == 0)
    }

    // MARK: Real agents

    /// Two agents on loopback, each on its own loop thread; B's datagrams go to `onDatagram` (on
    /// B's loop thread) and B's loop has `pacer`.
    static func withPacedLink<T: Sendable>(
        pacer: ReceivePacer, _ body: @Sendable (SignalingLink) async throws -> T
    ) async throws -> T {
        let executorA = try GLibExecutor(name: "ice-test-a")
        let executorB = try GLibExecutor(name: "ice-test-b", receivePacer: pacer)
        defer {
            executorA.shutdown()
            executorB.shutdown()
        }
        return try await withICEAgents(count: 1, configuration: loopbackConfiguration(), executor: executorA) { a in
            try await withICEAgents(count: 1, configuration: loopbackConfiguration(), executor: executorB) { b in
                let streamA = try await a[0].addStream(role: .controlling)
                let streamB = try await b[0].addStream(role: .controlled)
                let link = SignalingLink(LinkEnd(agent: a[0], stream: streamA), LinkEnd(agent: b[0], stream: streamB))
                defer { link.stop() }
                return try await body(link)
            }
        }
    }

    /// Sends one datagram at a time from A, each waited for at B (so each is a wake-up of B's
    /// loop), until B's loop paces; the consumer asked once before, so they fall in one frame.
    static func pace(
        _ link: SignalingLink, _ pacer: ReceivePacer, _ received: inout AsyncStream<[UInt8]>.Iterator
    )
        async throws
    {
        pacer.collect()
        var sent = 0
        while !pacer.isDeferring {
            #expect(link.a.stream.send([0xFF, UInt8(sent)]))
            _ = try #require(await received.next())
            sent += 1
            try #require(sent <= ReceivePacingPolicy.wakeUpsToPace)
        }
    }

    @Test func heldDatagramsAreDeliveredWhenTheConsumerCollects() async throws {
        // The consumer is never counted gone here: only `collect` can deliver what is held.
        let pacer = try ReceivePacer(consumerGoneAfter: .seconds(600))
        try await withTimeout(.seconds(20), "held datagrams delivered by collect") {
            try await Self.withPacedLink(pacer: pacer) { link in
                let (stream, sink) = AsyncStream.makeStream(of: [UInt8].self)
                let delivered = Atomic<Int>(0)
                link.b.stream.deliverDatagrams { datagram in
                    delivered.add(1, ordering: .relaxed)
                    sink.yield(datagram)
                }
                try await link.exchangeCredentials()
                _ = try await link.bothConnected()
                var received = stream.makeAsyncIterator()
                try await Self.pace(link, pacer, &received)
                let before = delivered.load(ordering: .relaxed)
                for index in 0..<10 { #expect(link.a.stream.send([UInt8(index)])) }
                // A loopback send is in B's socket when it returns; a collect delivers all of it
                // (a few more, should the kernel still hold one back).
                var collects = 0
                while delivered.load(ordering: .relaxed) < before + 10, collects < 50 {
                    pacer.collect()
                    collects += 1
                }
                #expect(delivered.load(ordering: .relaxed) == before + 10)
                #expect(pacer.drains.load(ordering: .relaxed) >= 1)
                for index in 0..<10 { #expect(await received.next() == [UInt8(index)]) }
            }
        }
    }

    @Test func aConsumerThatStopsAskingNoLongerHoldsDatagramsBack() async throws {
        // Long enough for `pace` to send its datagrams within one consumer frame on a busy machine.
        let pacer = try ReceivePacer(consumerGoneAfter: .milliseconds(500))
        try await withTimeout(.seconds(20), "datagrams delivered after the consumer stopped") {
            try await Self.withPacedLink(pacer: pacer) { link in
                let (stream, sink) = AsyncStream.makeStream(of: [UInt8].self)
                link.b.stream.deliverDatagrams { sink.yield($0) }
                try await link.exchangeCredentials()
                _ = try await link.bothConnected()
                var received = stream.makeAsyncIterator()
                try await Self.pace(link, pacer, &received)
                for index in 0..<5 { #expect(link.a.stream.send([UInt8(index)])) }
                // Nobody collects: the loop watches the sockets again once the consumer is gone.
                for index in 0..<5 { #expect(await received.next() == [UInt8(index)]) }
                #expect(!pacer.isDeferring)
            }
        }
    }
}
