import ICE
import ICETestSupport
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `ice-bench NODES RUNS`: time to connected for a full mesh of NODES Parley ICE agents on
/// 127.0.0.1 (one `ICEAgent` per node, one stream per peer, all on one GLib loop thread), measured
/// exactly as `Scripts/nice-floor.c` measures plain libnice: from "every stream gathered,
/// start exchanging credentials and candidates" to "every end of every pair connected". The
/// exchange goes through the public API as a node would drive it: candidate lines are printed and
/// parsed again. Also prints the full trickle path (streams added → all connected).
@main
enum ICEBench {
    static func main() async throws {
        let arguments = CommandLine.arguments.dropFirst().compactMap { Int($0) }
        guard arguments.count == 2, (2...16).contains(arguments[0]), arguments[1] >= 1 else {
            print("usage: ice-bench NODES RUNS   (2 ≤ NODES ≤ 16)")
            exit(2)
        }
        let (nodes, runs) = (arguments[0], arguments[1])
        let executor = try GLibExecutor(name: "ice-bench")
        var exchanged: [Double] = []
        var trickled: [Double] = []
        for _ in 0..<runs {
            let result = try await run(nodes: nodes, executor: executor)
            exchanged.append(result.exchange)
            trickled.append(result.trickle)
        }
        executor.shutdown()
        print(summary("Parley ICE, exchange → connected", nodes: nodes, times: exchanged))
        print(summary("Parley ICE, streams added → connected (trickle)", nodes: nodes, times: trickled))
    }

    static func summary(_ what: String, nodes: Int, times: [Double]) -> String {
        let sorted = times.sorted()
        return
            "\(what): \(nodes) nodes, \(nodes * (nodes - 1) / 2) pairs: median \(format(sorted[sorted.count / 2])) ms, "
            + "min \(format(sorted.first!)), max \(format(sorted.last!)) over \(times.count) runs"
    }

    static func format(_ value: Double) -> String {
        let tenths = (value * 10).rounded() / 10
        return "\(tenths)"
    }

    /// One mesh: first with candidates exchanged only after gathering (the floor's method), and
    /// separately the time from adding the streams, since gathering on loopback is part of it.
    static func run(nodes: Int, executor: GLibExecutor) async throws -> (exchange: Double, trickle: Double) {
        let agents = try (0..<nodes).map { _ in try ICEAgent(configuration: loopbackConfiguration(), executor: executor)
        }
        let ends = nodes * (nodes - 1)
        let gathered = Countdown(ends)
        let connected = Countdown(ends)
        var streams: [[ICEStream?]] = Array(repeating: Array(repeating: nil, count: nodes), count: nodes)
        var watchers: [Task<Void, Never>] = []
        let added = ContinuousClock.now
        for i in 0..<nodes {
            for j in 0..<nodes where i != j {
                let stream = try await agents[i].addStream(
                    role: .forPair(localIdentity: [UInt8(i)], peerIdentity: [UInt8(j)]))
                streams[i][j] = stream
                watchers.append(
                    Task {
                        var counted = false
                        for await event in stream.events {
                            switch event {
                            case .localCandidatesDone: gathered.tick()
                            case .stateChanged(let state) where state.isConnected && !counted:
                                counted = true
                                connected.tick()
                            default: break
                            }
                        }
                    })
            }
        }
        await gathered.wait()
        let start = ContinuousClock.now
        for i in 0..<nodes {
            for j in 0..<nodes where i != j {
                // The peer's whole description in one call each way, as a node applies what it
                // holds at once (the floor hands libnice the same in two calls).
                let description = try await agents[j].localSignals(of: streams[j][i]!.id)
                let refused = try await agents[i].applyRemote(description, to: streams[i][j]!.id)
                if let error = refused.compactMap({ $0 }).first { throw error }
            }
        }
        let finished = await connected.wait()
        for agent in agents { await agent.close() }
        for watcher in watchers { await watcher.value }
        return (milliseconds(start.duration(to: finished)), milliseconds(added.duration(to: finished)))
    }

    static func milliseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    }
}

/// Counts events down to zero and records when the last one came.
final class Countdown: Sendable {
    private struct State {
        var remaining: Int
        var finishedAt: ContinuousClock.Instant?
        var waiter: CheckedContinuation<ContinuousClock.Instant, Never>?
    }

    private let state: Mutex<State>

    init(_ count: Int) { state = Mutex(State(remaining: count)) }

    func tick() {
        let now = ContinuousClock.now
        let waiter: CheckedContinuation<ContinuousClock.Instant, Never>? = state.withLock { state in
            state.remaining -= 1
            guard state.remaining == 0 else { return nil }
            state.finishedAt = now
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: now)
    }

    /// When the count reached zero (waiting for it if need be).
    @discardableResult
    func wait() async -> ContinuousClock.Instant {
        await withCheckedContinuation { continuation in
            let done: ContinuousClock.Instant? = state.withLock {
                if let finished = $0.finishedAt { return finished }
                $0.waiter = continuation
                return nil
            }
            if let done { continuation.resume(returning: done) }
        }
    }
}
