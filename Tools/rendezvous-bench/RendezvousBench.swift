import NIOPosix
import NodeLab
import ParleyProtocol

#if canImport(Glibc)
import Glibc
#endif

/// Load benchmark of `parley-rendezvous` on loopback (run by Scripts/bench-rendezvous):
///
///     rendezvous-bench [--setups single,nginx] [--connections 50000] [--rate 10000] …
///
/// For each setup — one instance alone, then nginx in front of three (configured by
/// Scripts/deploy/nginx-rendezvous.conf) — it holds `--connections` joined connections (8 per
/// room) from helper processes and reports the servers' resident memory per connection, measures
/// relay latency at `--rate` messages a second spread over `--latency-pairs` rooms, then relay
/// throughput; behind nginx, it then kills one instance under 300 rooms of the node's own client
/// and times their failover. It ends with a table of both. Every phase is bounded in time.
///
/// Two more modes serve the benchmark and the tests:
///
///     rendezvous-bench hold --url ws://… --connections N [--source 127.0.0.K] [--room-size 8]
///     rendezvous-bench swarm --url wss://… [--pin HEX] --rooms 300 --members 3
///
/// `hold` opens N connections, prints `held N`, and keeps them until its parent exits; `swarm`
/// runs rooms of members with the node's own client and reports them as JSON lines (`Swarm`).
@main
struct RendezvousBench {
    struct Options {
        var setups = ["single", "nginx"]
        var connections = 50_000
        var roomSize = 8
        var rate = 10_000
        var latencyPairs = 100
        var latencySeconds = 10
        var throughputSeconds = 5
        var pairs = 16
        var payloadBytes = 200
        var instances = 3
        // hold and swarm
        var url: RendezvousURL?
        var source: String?
        var pin: [UInt8]?
        var rooms = 300
        var members = 3
    }

    static func main() async {
        do {
            try await run()
        } catch {
            fail("\(error)")  // one line, not a crash report: a helper's parent shows it
        }
    }

    static func run() async throws {
        var arguments = Array(CommandLine.arguments.dropFirst())
        let mode = arguments.first.flatMap { $0.hasPrefix("--") ? nil : $0 } ?? "measure"
        if mode != "measure" { arguments.removeFirst() }
        let options = parse(arguments)
        ProcessStats.raiseOpenFileLimit()
        switch mode {
        case "hold":
            guard let url = options.url else { fail("hold needs --url") }
            try await hold(url: url, options: options)
        case "swarm":
            guard let url = options.url else { fail("swarm needs --url") }
            try await Swarm(url: url, pin: options.pin, rooms: options.rooms, members: options.members).run()
        case "measure":
            var results: [SetupResult] = []
            for setup in options.setups {
                guard let kind = Setup.Kind(rawValue: setup) else { fail("unknown setup \(setup) (single, nginx)") }
                results.append(try await Setup(kind: kind, options: options).run())
            }
            printTable(results, options: options)
        default:
            fail("unknown mode \(mode) (measure, hold, swarm)")
        }
    }

    static func parse(_ arguments: [String]) -> Options {
        var options = Options()
        var iterator = arguments.makeIterator()
        while let flag = iterator.next() {
            guard let value = iterator.next() else { fail("\(flag) needs a value") }
            func number() -> Int {
                guard let number = Int(value), number > 0 else { fail("\(flag) needs a positive number, got \(value)") }
                return number
            }
            switch flag {
            case "--setups": options.setups = value.split(separator: ",").map(String.init)
            case "--connections": options.connections = number()
            case "--room-size": options.roomSize = number()
            case "--rate": options.rate = number()
            case "--latency-pairs": options.latencyPairs = number()
            case "--latency-seconds": options.latencySeconds = number()
            case "--throughput-seconds": options.throughputSeconds = number()
            case "--pairs": options.pairs = number()
            case "--payload-bytes": options.payloadBytes = max(8, number())
            case "--instances": options.instances = number()
            case "--rooms": options.rooms = number()
            case "--members": options.members = number()
            case "--source": options.source = value
            case "--url":
                guard let url = try? RendezvousURL(parsing: value) else {
                    fail("--url: not a rendezvous URL: \(value)")
                }
                options.url = url
            case "--pin":
                let digits = Array(value.utf8)
                guard digits.count == 64, let bytes = hexBytes(value) else { fail("--pin wants 64 hex digits") }
                options.pin = bytes
            default: fail("unknown option \(flag)")
            }
        }
        return options
    }

    static func hexBytes(_ text: String) -> [UInt8]? {
        let characters = Array(text)
        guard characters.count % 2 == 0 else { return nil }
        return try? stride(from: 0, to: characters.count, by: 2).map { index in
            guard let byte = UInt8(String(characters[index...index + 1]), radix: 16) else { throw BenchError("hex") }
            return byte
        }
    }

    /// `hold`: the connections, then wait for the parent to go (it stops us at the end; if it
    /// dies first, we notice that we have been handed to another parent).
    static func hold(url: RendezvousURL, options: Options) async throws {
        let parent = getppid()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let load = LoadGenerator(url: url, source: options.source, loop: group.next())
        let started = ContinuousClock.now
        try await load.hold(count: options.connections, roomSize: options.roomSize)
        print("held \(options.connections) in \(fixed(benchSeconds(ContinuousClock.now - started), 1)) s")
        fflush(nil)
        while getppid() == parent { try await Task.sleep(for: .seconds(1)) }
    }

    static func fail(_ message: String) -> Never {
        print("rendezvous-bench: \(message)")
        exit(2)
    }

    static func printTable(_ results: [SetupResult], options: Options) {
        print("")
        print(
            "| setup | connections held | rendezvous memory each | balancer memory each | relay p50 / p99 at \(options.rate) msg/s | messages relayed/s | rooms re-formed after kill -9 of an instance |"
        )
        print("|---|---|---|---|---|---|---|")
        for result in results {
            print(result.tableRow)
        }
    }
}
