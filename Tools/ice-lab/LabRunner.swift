import Foundation
import ICE
import ICETestSupport
import ParleyTestSupport

/// Runs scenarios with real libnice agents inside the lab's namespaces.
struct LabRunner: Sendable {
    let environment: LabEnvironment
    let hosts: [String: LabHost]

    /// Identity keys for the role rule: host a's sorts first, so a is controlling.
    static let identityA: [UInt8] = [0x01]
    static let identityB: [UInt8] = [0x02]
    static let connectLimit = Duration.seconds(30)

    init(environment: LabEnvironment) throws {
        self.environment = environment
        let labels = [
            "pub": "public 203.0.113.20", "pub2": "public 203.0.113.21", "c1a": "cone 10.11.0.2",
            "c1b": "cone 10.11.0.3", "c2": "cone 10.12.0.2", "s1": "symmetric 10.21.0.2", "s2": "symmetric 10.22.0.2",
        ]
        var hosts: [String: LabHost] = [:]
        for (name, label) in labels { hosts[name] = try LabHost(name: name, label: label, environment: environment) }
        self.hosts = hosts
    }

    func shutdown() {
        for host in hosts.values { host.executor.shutdown() }
    }

    func configuration(for scenario: LabScenario) -> ICEConfiguration {
        var configuration = ICEConfiguration(stunServer: environment.stun, relayOnly: scenario.relayOnly)
        switch scenario.relay {
        case .none: break
        case .udp, .tcp:
            configuration.turnServers = [
                TURNServer(
                    endpoint: environment.turn, transport: scenario.relay == .tcp ? .tcp : .udp,
                    username: environment.turnUser, password: environment.turnPassword)
            ]
        }
        // Generous: libnice itself fails a stream whose checks all failed within a few seconds.
        configuration.checkDeadline = .seconds(20)
        return configuration
    }

    func run(_ scenario: LabScenario) async -> LabResult {
        var result = LabResult(scenario: scenario)
        let configuration = configuration(for: scenario)
        do {
            let agentA = try ICEAgent(configuration: configuration, executor: hosts[scenario.a]!.executor)
            let agentB = try ICEAgent(configuration: configuration, executor: hosts[scenario.b]!.executor)
            do {
                try await withTimeout(.seconds(90), "scenario \(scenario.name)") {
                    try await self.trial(scenario, agentA, agentB)
                }.apply(to: &result)
            } catch {
                result.problems.append("\(error)")
            }
            await agentA.close()
            await agentB.close()
        } catch {
            result.problems.append("\(error)")
        }
        return result
    }

    /// What a trial found; merged into the result.
    struct Findings: Sendable {
        var outcome = "-"
        var pair = "-"
        var connectedIn: Duration?
        var roundTrip: Duration?
        var detail: [String] = []
        var problems: [String] = []

        func apply(to result: inout LabResult) {
            result.outcome = outcome
            result.pair = pair
            result.connectedIn = connectedIn
            result.roundTrip = roundTrip
            result.detail = detail.joined(separator: "; ")
            result.problems += problems
        }
    }

    private func trial(_ scenario: LabScenario, _ agentA: ICEAgent, _ agentB: ICEAgent) async throws -> Findings {
        var findings = Findings()
        let start = ContinuousClock.now
        let streamA = try await agentA.addStream(
            role: .forPair(localIdentity: Self.identityA, peerIdentity: Self.identityB))
        let streamB = try await agentB.addStream(
            role: .forPair(localIdentity: Self.identityB, peerIdentity: Self.identityA))
        let link = SignalingLink(LinkEnd(agent: agentA, stream: streamA), LinkEnd(agent: agentB, stream: streamB))
        defer { link.stop() }
        try await link.exchangeCredentials()

        let outcomeA = try await withTimeout(Self.connectLimit, "\(scenario.a) to connect or fail") {
            try await link.outcome(of: .a)
        }
        let outcomeB = try await withTimeout(Self.connectLimit, "\(scenario.b) to connect or fail") {
            try await link.outcome(of: .b)
        }
        if let failure = outcomeA.failure ?? outcomeB.failure {
            findings.outcome = "failed"
            findings.detail.append(failure.description)
            if case .failure(let expected) = scenario.expected, expected == failure {
                return findings
            }
            findings.problems.append("expected \(scenario.expected), failed: \(failure)")
            return findings
        }
        let connected = try await link.bothConnected()
        findings.connectedIn = start.duration(to: max(connected.a, connected.b))
        try await settle(link)

        let stats = try await agentA.stats(for: streamA.id)
        let route = stats.selectedPair?.route
        findings.outcome = route?.rawValue ?? "?"
        findings.pair = stats.selectedPair.map { "\($0.local.kind) → \($0.remote.kind)" } ?? "?"
        if case .route(let expected) = scenario.expected, route != expected {
            findings.problems.append("expected a \(expected) route, got \(findings.outcome)")
        } else if case .failure = scenario.expected {
            findings.problems.append("expected a failure, connected \(findings.outcome)")
        }
        if scenario.relayOnly { findings.problems += await relayOnlyProblems(link) }

        let echo = Echo(link: link)
        defer { echo.stop() }
        switch scenario.trial {
        case .connect:
            findings.roundTrip = try await echo.medianRoundTrip(count: 20)
        case .loss(let loss):
            findings.roundTrip = try await echo.medianRoundTrip(count: 20)
            try impair(scenario.routers, "--loss", "\(loss)")
            defer { unimpair(scenario.routers) }
            let delivered = try await echo.deliveryRatio(count: 400)
            // An echo crosses each of the two routers twice: (1 - loss)⁴ come back.
            let expected = (0..<4).reduce(1.0) { product, _ in product * (1 - loss) }
            findings.detail.append("echoed \(Self.percent(delivered)) (expected ≈\(Self.percent(expected)))")
            if abs(delivered - expected) > 0.12 {
                findings.problems.append("delivery \(delivered), expected \(expected)")
            }
        case .rateCap(let rate):
            findings.roundTrip = try await echo.medianRoundTrip(count: 20)
            // 60 kB at once: fits the receiving socket's buffer uncapped; through a 256 kbit/s bucket
            // only its 4 kB burst, 50 ms of queue and what drains meanwhile get through.
            let free = try await echo.burstRatio(count: 60, size: 1000)
            try impair(scenario.routers, "--rate", rate)
            defer { unimpair(scenario.routers) }
            let capped = try await echo.burstRatio(count: 60, size: 1000)
            findings.detail.append("60 kB burst echoed \(Self.percent(free)) free, \(Self.percent(capped)) capped")
            if free < 0.9 || capped > 0.6 {
                findings.problems.append("the \(rate) cap did not show (\(free) → \(capped))")
            }
        case .flushThenRestart, .rebindThenRestart:
            findings.roundTrip = try await echo.medianRoundTrip(count: 5)
            var newAddress: String?
            for router in scenario.routers {
                if case .rebindThenRestart = scenario.trial {
                    newAddress = try environment.natlab("rebind", environment.namespace(router))
                } else {
                    try environment.natlab("flush", environment.namespace(router))
                }
            }
            let survived = try await echo.deliveryRatio(count: 20)
            findings.detail.append("echoed before restart \(Self.percent(survived))")
            let mark = await link.log.count
            let restartStart = ContinuousClock.now
            try await link.restart(initiator: .b)
            let reconnected = try await withTimeout(Self.connectLimit, "the restart to reconnect") {
                try await link.bothConnected(after: mark)
            }
            findings.detail.append(
                "restart reconnected in \(Milliseconds(restartStart.duration(to: max(reconnected.a, reconnected.b))))")
            try await settle(link)
            if let newAddress {
                let offered = await link.log.entries.dropFirst(mark).filter { $0.side == .a }
                    .compactMap(\.event.localCandidate)
                if !offered.contains(where: { $0.kind == .serverReflexive && $0.address.description == newAddress }) {
                    findings.problems.append("no server-reflexive candidate on the new address \(newAddress)")
                }
                findings.detail.append("new srflx \(newAddress)")
            }
            let after = try await echo.deliveryRatio(count: 20)
            findings.detail.append("after \(Self.percent(after))")
            if after < 0.9 { findings.problems.append("the restarted path delivered only \(after)") }
            let restarted = try await agentA.stats(for: streamA.id)
            if let pair = restarted.selectedPair, case .route(let expected) = scenario.expected, pair.route != expected
            {
                findings.problems.append("after restart: \(pair.route), expected \(expected)")
            }
        }
        return findings
    }

    private func impair(_ routers: [String], _ arguments: String...) throws {
        for router in routers {
            try environment.natlab(["impair", environment.namespace(router)] + arguments)
        }
    }

    private func unimpair(_ routers: [String]) {
        for router in routers { _ = try? environment.natlab("unimpair", environment.namespace(router)) }
    }

    static func percent(_ fraction: Double) -> String { "\(Int((fraction * 100).rounded()))%" }

    /// Waits until both sides conclude checks (ready), so the reported pair is the final one;
    /// connected-but-not-ready after 3 s is accepted as it is.
    private func settle(_ link: SignalingLink) async throws {
        for side in LinkSide.allCases {
            _ = try? await withTimeout(.seconds(3), "\(side) ready") {
                try await link.log.first(from: side) { $0 == .stateChanged(.ready) }
            }
        }
    }

    /// Relay-only: every candidate either side offered is relayed, and no line names anything but
    /// the relay (related addresses are 0.0.0.0).
    private func relayOnlyProblems(_ link: SignalingLink) async -> [String] {
        var problems: [String] = []
        let relay = environment.turn.address
        for side in LinkSide.allCases {
            let offered = await link.log.events(of: side).compactMap(\.localCandidate)
            if offered.isEmpty { problems.append("\(side) offered no candidate") }
            for candidate in offered
            where candidate.kind != .relayed || candidate.address != relay
                || !(candidate.relatedAddress?.isUnspecified ?? true)
            {
                problems.append("relay-only \(side) offered \(candidate.line)")
            }
        }
        return problems
    }
}

/// Datagrams b echoes back to a; a measures round trips and delivery. RTT is measured here, above
/// ICE, because libnice does not report one.
final class Echo: Sendable {
    private let link: SignalingLink
    private let tasks: [Task<Void, Never>]
    private let replies = Replies()

    /// What came back to a, and the one reply being waited for.
    actor Replies {
        private(set) var count = 0
        private var expected: [UInt8]?
        private var arrived = false
        private(set) var arrivedAt = ContinuousClock.now
        private var waiter: CheckedContinuation<Void, Never>?

        /// Registers the reply to wait for before its request is sent, so it cannot be missed.
        func expect(_ message: [UInt8]) {
            expected = message
            arrived = false
        }

        func record(_ datagram: [UInt8]) {
            count += 1
            guard datagram == expected else { return }
            arrivedAt = .now
            arrived = true
            waiter?.resume()
            waiter = nil
        }

        /// Returns when the expected reply arrived, or when the waiting task is cancelled.
        func wait() async {
            if arrived { return }
            await withTaskCancellationHandler {
                await withCheckedContinuation { waiter = $0 }
            } onCancel: {
                Task { await self.release() }
            }
        }

        var arrivedExpected: Bool { arrived }

        private func release() {
            waiter?.resume()
            waiter = nil
        }
    }

    init(link: SignalingLink) {
        self.link = link
        let b = link.b.stream
        let a = link.a.stream
        let replies = replies
        tasks = [
            Task { for await datagram in b.datagrams { b.send(datagram) } },
            Task { for await datagram in a.datagrams { await replies.record(datagram) } },
        ]
    }

    func stop() { for task in tasks { task.cancel() } }

    /// Sends `count` numbered datagrams one at a time, each awaited (up to 1 s) before the next;
    /// returns the median round trip.
    func medianRoundTrip(count: Int) async throws -> Duration {
        var times: [Duration] = []
        for index in 0..<count {
            let message = Array("echo \(index)".utf8)
            await replies.expect(message)
            let sent = ContinuousClock.now
            guard link.a.stream.send(message) else { continue }
            let replies = replies
            _ = try? await withTimeout(.seconds(1), "echo \(index)") { await replies.wait() }
            if await replies.arrivedExpected { times.append(sent.duration(to: await replies.arrivedAt)) }
        }
        guard !times.isEmpty else { throw Lost() }
        return times.sorted()[times.count / 2]
    }

    struct Lost: Error, CustomStringConvertible {
        var description: String { "no echo came back" }
    }

    /// Sends `count` datagrams of `size` bytes as fast as possible; the fraction echoed within 1 s.
    func burstRatio(count: Int, size: Int) async throws -> Double {
        let before = await replies.count
        var datagram = [UInt8](repeating: 0x42, count: size)
        for index in 0..<count {
            datagram[0] = UInt8(truncatingIfNeeded: index)
            link.a.stream.send(datagram)
        }
        try await Task.sleep(for: .seconds(1))
        return Double(await replies.count - before) / Double(count)
    }

    /// Sends `count` datagrams 2 ms apart and returns the fraction echoed back within 1 s of the
    /// last one. (A time window, not an event: "everything that will arrive has" has no event.)
    func deliveryRatio(count: Int) async throws -> Double {
        let before = await replies.count
        for index in 0..<count {
            link.a.stream.send(Array("ratio \(index)".utf8))
            try await Task.sleep(for: .milliseconds(2))
        }
        try await Task.sleep(for: .seconds(1))
        return Double(await replies.count - before) / Double(count)
    }
}

/// A duration printed in milliseconds.
struct Milliseconds: CustomStringConvertible {
    let duration: Duration
    init(_ duration: Duration) { self.duration = duration }
    var description: String {
        let ms = Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
        return ms < 10 ? String(format: "%.2f ms", ms) : "\(Int(ms.rounded())) ms"
    }
}
