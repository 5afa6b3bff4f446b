import ICETestSupport
import ParleyTestSupport
import Synchronization
import Testing

@testable import ICE

@Suite("Receive pacing: datagram wake-ups batched to a consumer's frame")
struct ReceivePacerTests {
    // MARK: The policy

    @Test func aSocketIsSteadyAfterItsRunOfFramesAndNotOnceItStops() {
        var policy = ReceivePacingPolicy(consumerGoneAfter: .milliseconds(60), steadyTicks: 10)
        for tick in UInt64(1)...9 { policy.datagrams(on: 7, tick: tick) }
        #expect(!policy.isSteady(7, tick: 9))  // a new link's checks and handshake: never held
        policy.datagrams(on: 7, tick: 10)
        policy.datagrams(on: 7, tick: 10)  // two in one frame count once
        #expect(policy.isSteady(7, tick: 10))
        // A sender whose device hands over two frames at once skips a frame: still steady.
        policy.datagrams(on: 7, tick: 12)
        #expect(policy.isSteady(7, tick: 14))
        // It stopped (a DTX pause, a stream that moved to another socket): watched again.
        #expect(!policy.isSteady(7, tick: 15))
        // And it starts its run afresh.
        policy.datagrams(on: 7, tick: 20)
        #expect(!policy.isSteady(7, tick: 20))
        #expect(!policy.isSteady(8, tick: 20))  // never seen
        #expect(!policy.isSteady(-1, tick: 20) && !policy.isSteady(Int32(ReceivePacingPolicy.tracked), tick: 20))
    }

    @Test func aSocketWithDatagramsEveryOtherFrameIsSteady() {
        // 20 ms packets on a 10 ms consumer frame.
        var policy = ReceivePacingPolicy(consumerGoneAfter: .milliseconds(60), steadyTicks: 10)
        for tick in stride(from: UInt64(1), through: 19, by: 2) { policy.datagrams(on: 3, tick: tick) }
        #expect(policy.isSteady(3, tick: 20))
    }

    @Test func aConsumerCountsAsGoneAfterItsBound() {
        let policy = ReceivePacingPolicy(consumerGoneAfter: .milliseconds(60))
        let tick: UInt64 = 5_000_000_000
        #expect(!policy.consumerActive(lastTick: 0, now: tick))  // never asked
        #expect(policy.consumerActive(lastTick: tick, now: tick + 59_999_999))
        #expect(!policy.consumerActive(lastTick: tick, now: tick + 60_000_000))
        // A tick stored after the loop read its clock is not a consumer long gone.
        #expect(policy.consumerActive(lastTick: tick + 1_000, now: tick))
        #expect(policy.millisecondsUntilConsumerGone(lastTick: tick, now: tick + 10_500_000) == 50)
        #expect(policy.millisecondsUntilConsumerGone(lastTick: tick, now: tick + 70_000_000) == 0)
    }

    // MARK: Real agents

    /// Two agents on loopback, each on its own loop thread; B's datagrams go to `onDatagram` (on
    /// B's loop thread) and B's loop has `pacer`.
    static func withPacedLink<T: Sendable>(
        pacer: ReceivePacer, _ body: @Sendable (SignalingLink, GLibExecutor) async throws -> T
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
                return try await body(link, executorB)
            }
        }
    }

    /// One datagram a consumer frame from A, each waited for at B, until B's loop holds A's socket
    /// back (the pacers here count one steady socket after 3 frames as enough).
    static func pace(
        _ link: SignalingLink, _ pacer: ReceivePacer, _ loop: GLibExecutor,
        _ received: inout AsyncStream<[UInt8]>.Iterator
    ) async throws {
        var sent = 0
        while !pacer.isDeferring {
            pacer.collect()
            #expect(link.a.stream.send([0xFF, UInt8(sent)]))
            _ = try #require(await received.next())
            await roundTrip(loop)
            sent += 1
            try #require(sent <= 10)
        }
    }

    /// Returns once B's loop ran a job queued now, so libnice's read of the datagrams delivered
    /// so far has ended: the next one is seen by a poll, which now leaves a held socket out.
    static func roundTrip(_ loop: GLibExecutor) async {
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in loop.run { done.resume() } }
    }

    @Test func heldDatagramsAreDeliveredWhenTheConsumerCollects() async throws {
        // The consumer is never counted gone here: only `collect` can deliver what is held.
        let pacer = try ReceivePacer(consumerGoneAfter: .seconds(600), steadyTicks: 3, steadySocketsToPace: 1)
        try await withTimeout(.seconds(20), "held datagrams delivered by collect") {
            try await Self.withPacedLink(pacer: pacer) { link, loop in
                let (stream, sink) = AsyncStream.makeStream(of: [UInt8].self)
                let delivered = Atomic<Int>(0)
                link.b.stream.deliverDatagrams { datagram in
                    delivered.add(1, ordering: .relaxed)
                    sink.yield(datagram)
                }
                try await link.exchangeCredentials()
                _ = try await link.bothConnected()
                var received = stream.makeAsyncIterator()
                try await Self.pace(link, pacer, loop, &received)
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
        // Longer than one of `pace`'s frames (a datagram's round trip) on a busy machine.
        let pacer = try ReceivePacer(consumerGoneAfter: .milliseconds(500), steadyTicks: 3, steadySocketsToPace: 1)
        try await withTimeout(.seconds(20), "datagrams delivered after the consumer stopped") {
            try await Self.withPacedLink(pacer: pacer) { link, loop in
                let (stream, sink) = AsyncStream.makeStream(of: [UInt8].self)
                link.b.stream.deliverDatagrams { sink.yield($0) }
                try await link.exchangeCredentials()
                _ = try await link.bothConnected()
                var received = stream.makeAsyncIterator()
                try await Self.pace(link, pacer, loop, &received)
                for index in 0..<5 { #expect(link.a.stream.send([UInt8(index)])) }
                // Nobody collects: the loop watches the sockets again once the consumer is gone.
                for index in 0..<5 { #expect(await received.next() == [UInt8(index)]) }
                #expect(!pacer.isDeferring)
            }
        }
    }
}
