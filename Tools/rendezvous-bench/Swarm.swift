import Logging
import ParleyProtocol
import RendezvousClient
import RendezvousWire
import Sodium
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `rendezvous-bench swarm`: rooms of simulated members, each one the node's own rendezvous client
/// (`RendezvousClient`: the shard path, TLS with the invite's pin, its reconnect back-off), so
/// a test can watch rooms form, break and re-form as a load balancer moves them. Prints one JSON
/// line to standard output whenever the picture changes (looked at every 50 ms):
///
///     {"t":12.35,"connected":900,"formed":300,"rooms":300}
///
/// `t`: seconds since start; `connected`: members admitted to their room now; `formed`: rooms in
/// which every member is admitted and sees exactly the others' current member ids, which can
/// only be when they all reached the same instance.
struct Swarm {
    /// What one member sees of its room.
    final class View: Sendable {
        struct State {
            var me: RendezvousMemberID?
            var others: Set<RendezvousMemberID> = []
        }
        let state = Mutex(State())
    }

    let url: RendezvousURL
    let pin: [UInt8]?
    let rooms: Int
    let members: Int

    func run() async throws {
        var logger = Logger(label: "swarm")
        logger.logLevel = .error
        let views = (0..<rooms * members).map { _ in View() }
        let keys = (0..<rooms).map { _ in Ed25519.KeyPair.generate() }
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for (index, view) in views.enumerated() {
                let client = RendezvousClient(
                    configuration: .init(url: url, certificatePin: pin), roomKey: keys[index / members], logger: logger)
                tasks.addTask { try await client.run() }
                tasks.addTask { await Self.follow(client, into: view) }
            }
            tasks.addTask { await report(views) }
            try await tasks.next()
            throw BenchError("a member stopped")
        }
    }

    /// Keeps `view` up to date with what `client` is told.
    static func follow(_ client: RendezvousClient, into view: View) async {
        for await event in client.events {
            view.state.withLock { state in
                switch event {
                case .joined(let welcome, _):
                    state.me = welcome.memberID
                    state.others = Set(welcome.members)
                case .memberJoined(let id): state.others.insert(id)
                case .memberLeft(let id): state.others.remove(id)
                case .disconnected: state = View.State()
                case .delivered: break
                }
            }
        }
    }

    func report(_ views: [View]) async {
        let started = ContinuousClock.now
        var last = ""
        while !Task.isCancelled {
            let states = views.map { $0.state.withLock { $0 } }
            let connected = states.filter { $0.me != nil }.count
            var formed = 0
            for room in 0..<rooms {
                let group = states[room * members..<(room + 1) * members]
                let ids = group.compactMap(\.me)
                guard ids.count == members else { continue }
                if group.allSatisfy({ $0.others == Set(ids).subtracting([$0.me!]) }) { formed += 1 }
            }
            let picture = "\"connected\":\(connected),\"formed\":\(formed),\"rooms\":\(rooms)"
            if picture != last {
                last = picture
                print("{\"t\":\(fixed(benchSeconds(ContinuousClock.now - started), 2)),\(picture)}")
                fflush(nil)
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }
}
