import NIOPosix
import NodeLab
import ParleyProtocol

#if canImport(Glibc)
import Glibc
#endif

/// One configuration under load: its servers started in a lab, the held connections opened by
/// helper processes (`rendezvous-bench hold`: each process may hold only as many sockets as the
/// open-file limit allows, and each connects from its own loopback address, so it has a whole
/// range of ephemeral ports of its own), then latency and throughput measured from this process.
struct Setup {
    enum Kind: String {
        /// One `parley-rendezvous`.
        case single
        /// nginx (Scripts/deploy/nginx-rendezvous.conf) in front of `--instances` of them.
        case nginx
    }

    let kind: Kind
    let options: RendezvousBench.Options

    /// Flags that take the per-client limits out of the way: the load comes from a few addresses.
    static let serverFlags = [
        "--log-level", "warning", "--max-connections", "100000", "--max-connections-per-address", "100000",
        "--max-rooms-per-address", "100000", "--messages-per-second", "1000000", "--message-burst", "1000000",
    ]

    func say(_ line: String) {
        print("[\(kind.rawValue)] \(line)")
        fflush(nil)
    }

    func run() async throws -> SetupResult {
        let lab = try NodeLab("bench-rendezvous", tools: ["parley-rendezvous", "rendezvous-bench"])
        defer { lab.shutdown() }
        let fileLimit = ProcessStats.openFileHardLimit()
        // Sockets this process opens itself, and what any process keeps for everything else.
        let ownConnections = 2 * (options.latencyPairs + options.pairs)
        let spare = 200
        var connections = options.connections
        let url: RendezvousURL
        let serverPIDs: [Int32]
        var balancerPIDs: () -> [Int32] = { [] }
        var pool: BalancedRendezvous?
        switch kind {
        case .single:
            // Every connection is a descriptor of the one server process.
            connections = min(connections, fileLimit - spare - ownConnections)
            let server = try lab.rendezvous(port: try LabNetwork.freePort(), arguments: Self.serverFlags)
            url = try RendezvousURL(parsing: server.url)
            serverPIDs = [server.process.pid]
            print("== single: one parley-rendezvous on \(server.url)")
        case .nginx:
            // nginx holds two descriptors per connection (client and instance side): enough
            // workers that each stays well under the limit (connections spread over them by
            // the kernel, with SO_REUSEPORT).
            let total = connections + ownConnections
            let workers = max(2, Int((2.5 * Double(total) / Double(fileLimit - spare)).rounded(.up)))
            var balanced = BalancedRendezvous.Options()
            balanced.instances = options.instances
            balanced.instanceArguments = Self.serverFlags
            balanced.workers = workers
            balanced.workerConnections = 3 * total / workers + 1000
            balanced.workerOpenFiles = fileLimit
            let balancer = try BalancedRendezvous(lab: lab, balancer: .nginx, options: balanced)
            url = try RendezvousURL(parsing: balancer.url)
            serverPIDs = balancer.instances.map(\.process.pid)
            balancerPIDs = { ProcessStats.withChildren(balancer.process.pid) }
            pool = balancer
            print(
                "== nginx: \(options.instances) parley-rendezvous behind nginx (\(workers) workers) on \(balancer.url)")
        }
        if connections < options.connections {
            say(
                "open-file limit \(fileLimit) (hard): holding \(grouped(connections)) of the \(grouped(options.connections)) asked; more needs a higher hard limit (ulimit -Hn)"
            )
        }
        let serverBefore = serverPIDs.map(ProcessStats.residentKB).reduce(0, +)
        let balancerBefore = balancerPIDs().map(ProcessStats.residentKB).reduce(0, +)

        // Held connections, from helper processes, each from its own source address (and so with
        // a whole range of ephemeral ports toward the one server port).
        let perHelper = min(fileLimit - spare, 25_000)
        let helpers = (connections + perHelper - 1) / perHelper
        // One helper after the other: a stampede of all of them at once measures the kernel's
        // listen queues, not what the servers hold.
        let started = ContinuousClock.now
        var holders: [ChildProcess] = []
        for index in 0..<helpers {
            let share = connections / helpers + (index < connections % helpers ? 1 : 0)
            let process = try lab.spawn(
                "hold-\(index + 1)", "rendezvous-bench",
                [
                    "hold", "--url", url.description, "--connections", "\(share)", "--source",
                    "127.0.0.\(11 + index)", "--room-size", "\(options.roomSize)",
                ])
            try LabWait.until(.seconds(300), "\(process.name) to hold its connections", every: .milliseconds(200)) {
                if !process.isRunning {
                    throw BenchError("\(process.name) stopped: \(process.standardOutput.lastLine)")
                }
                return process.standardOutput.contains("held ")
            }
            holders.append(process)
        }
        let opened = benchSeconds(ContinuousClock.now - started)
        let serverAfter = serverPIDs.map(ProcessStats.residentKB).reduce(0, +)
        let balancerAfter = balancerPIDs().map(ProcessStats.residentKB).reduce(0, +)
        let perConnection = Double(serverAfter - serverBefore) * 1024 / Double(connections)
        let balancerPerConnection =
            kind == .single ? nil : Double(balancerAfter - balancerBefore) * 1024 / Double(connections)
        say(
            "held connections:        \(connections) joined in \((connections + options.roomSize - 1) / options.roomSize) rooms of \(options.roomSize) (\(helpers) helper processes, \(fixed(opened, 1)) s)"
        )
        say(
            "rendezvous resident memory: \(serverBefore) kB idle -> \(serverAfter) kB held (\(serverPIDs.count) process\(serverPIDs.count == 1 ? "" : "es"))"
        )
        say("memory per connection:   \(Int(perConnection.rounded())) bytes (\(fixed(perConnection / 1024, 1)) KiB)")
        if let balancerPerConnection {
            say(
                "nginx resident memory:   \(balancerBefore) kB idle -> \(balancerAfter) kB held: \(Int(balancerPerConnection.rounded())) bytes (\(fixed(balancerPerConnection / 1024, 1)) KiB) per connection"
            )
        }

        // Latency and throughput, from this process (one thread; the servers get the rest).
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            let result = try await measure(url: url, group: group, serverPIDs: serverPIDs)
            try await group.shutdownGracefully()
            // The failover alone: with the held connections gone, no instance is near the
            // connections its open-file limit allows when another one's rooms arrive.
            for holder in holders { holder.terminate() }
            let failover = try pool.map { try self.failover($0, lab: lab) }
            return SetupResult(
                kind: kind, instances: kind == .single ? 1 : options.instances, connections: connections,
                bytesPerConnection: perConnection, balancerBytesPerConnection: balancerPerConnection,
                p50: result.latency.percentile(0.50), p99: result.latency.percentile(0.99),
                messagesPerSecond: result.throughput.messagesPerSecond, failoverSeconds: failover)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    /// `kill -9` of one instance under load: 300 rooms of 3 members, each the node's own client
    /// with its reconnect back-off (`rendezvous-bench swarm`), are formed across the instances;
    /// then the first instance dies, and the time until every room has re-formed on the
    /// survivors (every member seeing exactly the others again) is the failover time.
    func failover(_ pool: BalancedRendezvous, lab: NodeLab) throws -> Double {
        let before = pool.roomsPerInstance()
        let swarm = try lab.spawn(
            "swarm", "rendezvous-bench", ["swarm", "--url", pool.url, "--rooms", "300", "--members", "3"])
        try SwarmReport.waitUntilFormed(swarm, rooms: 300, members: 3, limit: .seconds(120))
        let moved = pool.roomsPerInstance()[0] - before[0]
        let mark = SwarmReport.lines(swarm).count
        pool.kill9(0)
        let killed = ContinuousClock.now
        try LabWait.until(.seconds(60), "the swarm's rooms to re-form", every: .milliseconds(10)) {
            SwarmReport.formedAfterADip(swarm, since: mark, rooms: 300, members: 3)
        }
        let seconds = benchSeconds(ContinuousClock.now - killed)
        say(
            "failover: kill -9 of 1 of \(options.instances) instances holding \(moved) of 300 rooms of 3 (the node's client): every room re-formed on the survivors in \(fixed(seconds, 2)) s"
        )
        return seconds
    }

    /// Relay latency, then throughput.
    func measure(
        url: RendezvousURL, group: MultiThreadedEventLoopGroup, serverPIDs: [Int32]
    ) async throws -> (
        latency: LoadGenerator.Latency, throughput: LoadGenerator.Throughput
    ) {
        let load = LoadGenerator(url: url, source: nil, loop: group.next())
        let latency = try await load.measureLatency(
            rate: options.rate, seconds: options.latencySeconds, pairs: options.latencyPairs,
            payloadBytes: options.payloadBytes)
        func milliseconds(_ p: Double) -> String { latency.percentile(p).map { fixed($0, 3) + " ms" } ?? "n/a" }
        say(
            "relay latency at \(options.rate) msg/s over \(options.latencyPairs) rooms, \(options.payloadBytes)-byte payloads, \(options.latencySeconds) s (\(latency.delivered)/\(latency.sent) delivered):"
        )
        say(
            "  p50 \(milliseconds(0.50))   p99 \(milliseconds(0.99))   p99.9 \(milliseconds(0.999))   max \(milliseconds(1.0))"
        )
        let throughput = try await load.measureThroughput(
            pairs: options.pairs, seconds: options.throughputSeconds, payloadBytes: options.payloadBytes,
            serverPIDs: serverPIDs)
        say(
            "throughput (\(options.pairs) sender/receiver pairs, \(options.payloadBytes)-byte payloads, \(options.throughputSeconds) s):"
        )
        say(
            "  \(Int(throughput.messagesPerSecond)) messages/s relayed; rendezvous CPU \(fixed(throughput.cpuPercent, 0)) % of one core (\(Int(throughput.messagesPerCPUSecond)) messages per CPU-second)"
        )
        return (latency, throughput)
    }
}

struct SetupResult {
    let kind: Setup.Kind
    let instances: Int
    let connections: Int
    let bytesPerConnection: Double
    let balancerBytesPerConnection: Double?
    let p50: Double?
    let p99: Double?
    let messagesPerSecond: Double
    let failoverSeconds: Double?

    var tableRow: String {
        let name = kind == .single ? "one instance" : "nginx + \(instances) instances"
        let balancer = balancerBytesPerConnection.map { fixed($0 / 1024, 1) + " KiB" } ?? "—"
        let latency = "\(p50.map { fixed($0, 3) } ?? "n/a") / \(p99.map { fixed($0, 3) } ?? "n/a") ms"
        return
            "| \(name) | \(grouped(connections)) | \(fixed(bytesPerConnection / 1024, 1)) KiB | \(balancer) | \(latency) | \(Int(messagesPerSecond)) | \(failoverSeconds.map { fixed($0, 2) + " s" } ?? "—") |"
    }
}
