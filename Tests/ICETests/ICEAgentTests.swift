import ICETestSupport
import ParleyTestSupport
import Testing

@testable import ICE

#if canImport(Glibc)
import Glibc
#endif

/// The name of the calling OS thread (Linux: /proc/thread-self/comm).
func currentThreadName() -> String {
    guard let file = fopen("/proc/thread-self/comm", "r") else { return "" }
    defer { fclose(file) }
    var buffer = [CChar](repeating: 0, count: 64)
    guard fgets(&buffer, Int32(buffer.count), file) != nil else { return "" }
    return String(decoding: buffer.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Real libnice agents on 127.0.0.1, two (or three) nodes in one process.
@Suite("ICE agent on loopback")
struct ICEAgentTests {
    static let limit = Duration.seconds(20)

    /// Two nodes, one stream each, signalling through `SignalingLink`.
    static func withLink<T: Sendable>(
        configuration: ICEConfiguration = loopbackConfiguration(), _ body: @Sendable (SignalingLink) async throws -> T
    ) async throws -> T {
        try await withICEAgents(count: 2, configuration: configuration) { agents in
            let a = try await agents[0].addStream(role: .controlling)
            let b = try await agents[1].addStream(role: .controlled)
            let link = SignalingLink(LinkEnd(agent: agents[0], stream: a), LinkEnd(agent: agents[1], stream: b))
            defer { link.stop() }
            return try await body(link)
        }
    }

    @Test func connectsAndPassesDatagramsBothWaysWithStats() async throws {
        try await withTimeout(Self.limit, "two loopback nodes to connect and exchange datagrams") {
            try await Self.withLink { link in
                try await link.exchangeCredentials()
                _ = try await link.bothConnected()
                let pair = try await link.log.first(from: .a) { $0.selectedPair != nil }.event.selectedPair
                #expect(pair?.local.kind == .host && pair?.remote.kind == .host && pair?.route == .direct)

                var fromB = link.b.stream.datagrams.makeAsyncIterator()
                var fromA = link.a.stream.datagrams.makeAsyncIterator()
                for index in 0..<10 {
                    let message = Array("a→b \(index)".utf8)
                    #expect(link.a.stream.send(message))
                    #expect(await fromB.next() == message)
                }
                let reply: [UInt8] = Array(repeating: 0xAB, count: 1200)
                #expect(link.b.stream.send(reply))
                #expect(await fromA.next() == reply)

                let statsA = try await link.a.agent.stats(for: link.a.stream.id)
                let statsB = try await link.b.agent.stats(for: link.b.stream.id)
                #expect(statsA.state.isConnected && statsA.route == .direct && statsA.role == .controlling)
                #expect(statsA.timeToConnected != nil)
                #expect(statsA.traffic.packetsSent == 10 && statsB.traffic.packetsReceived == 10)
                #expect(statsA.traffic.bytesSent == statsB.traffic.bytesReceived)
                #expect(statsB.traffic.packetsSent == 1 && statsB.traffic.bytesSent == 1200)
                #expect(statsA.traffic.packetsReceived == 1 && statsA.traffic.bytesReceived == 1200)
                #expect(statsA.localCandidates == 1 && statsA.remoteCandidates == 1)
            }
        }
    }

    /// `deliverDatagrams(to:)`: datagrams reach the handler, on the ICE thread, in order, and the
    /// counters still count them; `traffic` reads the counters without the agent.
    @Test func datagramsCanGoToAHandlerOnTheICEThread() async throws {
        try await withTimeout(Self.limit, "datagrams through a handler") {
            try await Self.withLink { link in
                let (received, sink) = AsyncStream.makeStream(of: ([UInt8], Bool).self)
                link.b.stream.deliverDatagrams { datagram in
                    sink.yield((datagram, currentThreadName() == "ice-test"))
                }
                try await link.exchangeCredentials()
                _ = try await link.bothConnected()
                var iterator = received.makeAsyncIterator()
                for index in 0..<200 {
                    #expect(link.a.stream.send(Array("datagram \(index)".utf8)))
                }
                for index in 0..<200 {
                    let (datagram, onICEThread) = try #require(await iterator.next())
                    #expect(datagram == Array("datagram \(index)".utf8))
                    #expect(onICEThread)
                }
                #expect(link.b.stream.traffic.packetsReceived == 200)
                #expect(link.a.stream.traffic.packetsSent == 200)
            }
        }
    }

    @Test func appliesParleysLibniceSettings() async throws {
        try await withICEAgents(count: 1, configuration: loopbackConfiguration()) { agents in
            let controlling = try await agents[0].addStream(role: .controlling)
            let controlled = try await agents[0].addStream(role: .controlled)
            let property = { (name: String, stream: ICEStream) in
                try await agents[0].libniceProperty(name, of: stream.id)
            }
            #expect(try await !property("upnp", controlling))
            #expect(try await !property("ice-tcp", controlling))
            #expect(try await property("ice-udp", controlling))
            #expect(try await property("ice-trickle", controlling))
            #expect(try await property("consent-freshness", controlling))
            #expect(try await property("keepalive-conncheck", controlling))
            #expect(try await !property("force-relay", controlling))
            #expect(try await agents[0].nominatesAggressively(controlling.id))
            // One node, opposite roles on two streams: what one libnice agent could not do.
            #expect(try await property("controlling-mode", controlling))
            #expect(try await !property("controlling-mode", controlled))
        }
    }

    @Test func offersOnlyLoopbackHostCandidatesWithGenerationAndUfrag() async throws {
        try await withTimeout(Self.limit, "gathering on loopback") {
            try await Self.withLink { link in
                let done = try await link.log.first(from: .a) { $0 == .localCandidatesDone }
                let offered = await link.log.events(of: .a).compactMap(\.localCandidate)
                #expect(done.side == .a && !offered.isEmpty)
                let credentials = try await link.a.agent.localCredentials(of: link.a.stream.id)
                for candidate in offered {
                    #expect(candidate.address == IPAddress("127.0.0.1") && candidate.kind == .host)
                    #expect(candidate.transport == .udp)
                    #expect(candidate.generation == 0 && candidate.ufrag == credentials.ufrag)
                    #expect(candidate.line.hasPrefix("candidate:"))
                }
                #expect(try await link.a.agent.localCandidates(of: link.a.stream.id) == offered)
            }
        }
    }

    @Test func malformedAndHostileRemoteLinesAreRefusedAndChangeNothing() async throws {
        try await withTimeout(Self.limit, "connecting after refused lines") {
            try await Self.withLink { link in
                let agent = link.b.agent
                let id = link.b.stream.id
                for line in [
                    "candidate:1 1 UDP 1 example.org 5000 typ host",
                    "candidate:1 1 UDP 1 239.255.255.250 1900 typ host",
                    "candidate:1 1 UDP 1 0.0.0.0 9 typ host",
                    "garbage",
                ] {
                    await #expect(throws: ICEError.self) { try await agent.addRemoteCandidate(line, to: id) }
                }
                try await link.exchangeCredentials()
                _ = try await link.bothConnected()
                let stats = try await agent.stats(for: id)
                #expect(stats.rejectedRemoteCandidates == 4 && stats.remoteCandidates == 1)
            }
        }
    }

    /// `localSignals` / `applyRemote`: a whole description each way in one call connects the
    /// pair; each item gets its own answer (a bad line is refused, the rest taken), in order.
    @Test func aWholeDescriptionGoesInOneCallAndEachItemGetsItsAnswer() async throws {
        try await withTimeout(Self.limit, "connecting through applyRemote") {
            try await withICEAgents(count: 2, configuration: loopbackConfiguration()) { agents in
                let a = try await agents[0].addStream(role: .controlling)
                let b = try await agents[1].addStream(role: .controlled)
                var eventsA = a.events.makeAsyncIterator()
                var eventsB = b.events.makeAsyncIterator()
                while let event = await eventsA.next(), event != .localCandidatesDone {}
                while let event = await eventsB.next(), event != .localCandidatesDone {}
                let fromA = try await agents[0].localSignals(of: a.id)
                let fromB = try await agents[1].localSignals(of: b.id)
                guard case .credentials = try #require(fromB.first) else {
                    Issue.record("credentials come first: \(fromB)")
                    return
                }
                #expect(fromB.last == .endOfCandidates && fromB.count == 3)  // one host candidate on loopback

                // The candidate before the credentials is held for them, as with the single calls.
                let batch = [fromB[1], .candidate("garbage"), fromB[0], fromB[2]]
                let answers = try await agents[0].applyRemote(batch, to: a.id)
                #expect(answers.map { $0 == nil } == [true, false, true, true])
                #expect(answers.compactMap { $0 }.first?.kind == .invalidCandidate(.missingPrefix))
                #expect(try await agents[1].applyRemote(fromA, to: b.id).allSatisfy { $0 == nil })
                func connected(_ event: ICEStreamEvent) -> Bool {
                    if case .stateChanged(let state) = event { return state.isConnected }
                    return false
                }
                while let event = await eventsA.next(), !connected(event) {}
                while let event = await eventsB.next(), !connected(event) {}
                let stats = try await agents[0].stats(for: a.id)
                #expect(stats.remoteCandidates == 1 && stats.rejectedRemoteCandidates == 1)

                await #expect(throws: ICEError.self) {
                    try await agents[0].applyRemote([.endOfCandidates], to: ICEStream.ID(value: 999))
                }
            }
        }
    }

    @Test func candidatesBeforeCredentialsWaitForThem() async throws {
        try await withTimeout(Self.limit, "connecting with late credentials") {
            try await Self.withLink { link in
                // Candidates are forwarded from the start; credentials come only after gathering.
                _ = try await link.log.first(from: .a) { $0 == .localCandidatesDone }
                _ = try await link.log.first(from: .b) { $0 == .localCandidatesDone }
                #expect(try await link.b.agent.stats(for: link.b.stream.id).remoteCandidates == 0)
                try await link.exchangeCredentials()
                _ = try await link.bothConnected()
                #expect(try await link.b.agent.stats(for: link.b.stream.id).remoteCandidates == 1)
            }
        }
    }

    @Test func capsRemoteCandidates() async throws {
        var configuration = loopbackConfiguration()
        configuration.maxCandidatesPerStream = 2
        try await withICEAgents(count: 1, configuration: configuration) { agents in
            let stream = try await agents[0].addStream(role: .controlled)
            try await agents[0].setRemoteCredentials(
                ICECredentials(ufrag: "peer", password: "0123456789abcdefghijkl"), for: stream.id)
            for port in 5000..<5002 {
                #expect(
                    try await agents[0].addRemoteCandidate(
                        "candidate:1 1 UDP 1 127.0.0.1 \(port) typ host", to: stream.id) == .added)
            }
            await #expect {
                try await agents[0].addRemoteCandidate("candidate:1 1 UDP 1 127.0.0.1 5003 typ host", to: stream.id)
            } throws: { ($0 as? ICEError)?.kind == .candidateRejected(.tooMany(limit: 2)) }
        }
    }

    @Test func peerCredentialChangeNeedsARestart() async throws {
        try await withICEAgents(count: 1, configuration: loopbackConfiguration()) { agents in
            let stream = try await agents[0].addStream(role: .controlled)
            let first = try ICECredentials(ufrag: "peer", password: "0123456789abcdefghijkl")
            try await agents[0].setRemoteCredentials(first, for: stream.id)
            try await agents[0].setRemoteCredentials(first, for: stream.id)  // repeat: fine
            await #expect {
                try await agents[0].setRemoteCredentials(
                    ICECredentials(ufrag: "peer2", password: "0123456789abcdefghijkl"), for: stream.id)
            } throws: { ($0 as? ICEError)?.kind == .restartRequired }
        }
    }

    @Test func failsWithAReasonWhenThePeerSendsNoCandidates() async throws {
        var deadlined = loopbackConfiguration()
        deadlined.checkDeadline = .milliseconds(300)
        let configuration = deadlined
        try await withTimeout(Self.limit, "a stream without remote candidates to fail") {
            try await withICEAgents(count: 1, configuration: configuration) { agents in
                let stream = try await agents[0].addStream(role: .controlling)
                try await agents[0].setRemoteCredentials(
                    ICECredentials(ufrag: "peer", password: "0123456789abcdefghijkl"), for: stream.id)
                try await agents[0].remoteCandidatesDone(for: stream.id)
                for await event in stream.events {
                    if case .stateChanged(.failed(let failure)) = event {
                        #expect(failure == .noRemoteCandidates)
                        return
                    }
                }
                Issue.record("the event stream ended without a failure")
            }
        }
    }

    @Test func restartMakesANewGenerationThatReconnects() async throws {
        try await withTimeout(Self.limit, "an ICE restart to reconnect") {
            try await Self.withLink { link in
                try await link.exchangeCredentials()
                _ = try await link.bothConnected()
                let before = try await link.a.agent.localCredentials(of: link.a.stream.id)
                let oldLine = try #require(await link.log.events(of: .a).compactMap(\.localCandidate).first?.line)
                let mark = await link.log.count

                try await link.restart(initiator: .a)
                _ = try await link.bothConnected(after: mark)
                let after = try await link.a.agent.localCredentials(of: link.a.stream.id)
                #expect(after != before)
                let stats = try await link.a.agent.stats(for: link.a.stream.id)
                #expect(stats.generation == 1 && stats.state.isConnected)
                let restarted = await link.log.events(of: .a).contains(.restarted(generation: 1))
                #expect(restarted)
                let newCandidates = await link.log.entries.dropFirst(mark).filter { $0.side == .a }
                    .compactMap(\.event.localCandidate)
                #expect(
                    !newCandidates.isEmpty && newCandidates.allSatisfy { $0.generation == 1 && $0.ufrag == after.ufrag }
                )
                // A candidate of the old generation arriving late is recognised and ignored.
                #expect(try await link.b.agent.addRemoteCandidate(oldLine, to: link.b.stream.id) == .stale)

                var fromA = link.b.stream.datagrams.makeAsyncIterator()
                #expect(link.a.stream.send([1, 2, 3]))
                #expect(await fromA.next() == [1, 2, 3])
            }
        }
    }

    @Test func removingAStreamFinishesItsStreamsAndStopsSending() async throws {
        try await withTimeout(Self.limit, "a removed stream to finish") {
            try await Self.withLink { link in
                try await link.exchangeCredentials()
                _ = try await link.bothConnected()
                await link.b.agent.removeStream(link.b.stream.id)
                for await _ in link.b.stream.datagrams {}  // ends
                #expect(!link.b.stream.send([1]))
                await #expect(throws: ICEError.self) { try await link.b.agent.stats(for: link.b.stream.id) }
            }
        }
    }

    @Test func closeReleasesEveryCallbackContext() async throws {
        let executor = try GLibExecutor(name: "lifetime-test")
        let agents = try (0..<2).map { _ in try ICEAgent(configuration: loopbackConfiguration(), executor: executor) }
        try await withTimeout(Self.limit, "connect, restart and close") {
            let a = try await agents[0].addStream(role: .controlling)
            let b = try await agents[1].addStream(role: .controlled)
            let link = SignalingLink(LinkEnd(agent: agents[0], stream: a), LinkEnd(agent: agents[1], stream: b))
            try await link.exchangeCredentials()
            _ = try await link.bothConnected()
            try await link.restart(initiator: .b)
            #expect(agents[0].liveCallbackContexts > 0)
            for agent in agents { await agent.close() }
            // Signal contexts go when GLib finalizes each libnice agent, on the loop thread.
            try await waitUntil(.seconds(5), "callback contexts to be released") {
                agents.allSatisfy { $0.liveCallbackContexts == 0 }
            }
            await #expect(throws: ICEError.self) { try await agents[0].addStream(role: .controlled) }
            link.stop()
        }
        executor.shutdown()
    }

    /// Three nodes, full mesh, roles from the identity rule: node 1 is controlled towards node 0
    /// and controlling towards node 2 — on one agent.
    @Test func threeNodeMeshWithRolesFromTheRule() async throws {
        try await withTimeout(Self.limit, "a three-node mesh to connect") {
            try await withICEAgents(count: 3, configuration: loopbackConfiguration()) { agents in
                let identities: [[UInt8]] = [[0x10], [0x20], [0x30]]
                var links: [SignalingLink] = []
                for i in 0..<3 {
                    for j in (i + 1)..<3 {
                        let a = try await agents[i].addStream(
                            role: .forPair(localIdentity: identities[i], peerIdentity: identities[j]))
                        let b = try await agents[j].addStream(
                            role: .forPair(localIdentity: identities[j], peerIdentity: identities[i]))
                        #expect(a.role != b.role)
                        links.append(
                            SignalingLink(LinkEnd(agent: agents[i], stream: a), LinkEnd(agent: agents[j], stream: b)))
                    }
                }
                for link in links { try await link.exchangeCredentials() }
                for link in links { _ = try await link.bothConnected() }
                for link in links {
                    var received = link.b.stream.datagrams.makeAsyncIterator()
                    #expect(link.a.stream.send([42]))
                    #expect(await received.next() == [42])
                    link.stop()
                }
            }
        }
    }
}
