import NIOCore
import NIOPosix
import RendezvousWire
import Sodium

#if canImport(Glibc)
import Glibc
#endif

/// Load generator for `parley-rendezvous` (run by Scripts/bench-rendezvous, which starts the
/// server): holds many joined connections and reports the server's resident memory per
/// connection, measures relay latency at a fixed message rate, then relay throughput. Loopback
/// only; every phase is bounded in time. Prints its figures.
@main
struct RendezvousBench {
    struct Options {
        var port = 0
        var serverPID: Int32 = 0
        var connections = 10_000
        var roomSize = 8
        var latencySeconds = 10
        var rate = 1000
        var throughputSeconds = 5
        var pairs = 16
        var payloadBytes = 200
    }

    static func main() async throws {
        var options = Options()
        var arguments = CommandLine.arguments.dropFirst().makeIterator()
        while let flag = arguments.next() {
            guard let value = arguments.next(), let number = Int(value) else { fail("\(flag) needs a number") }
            switch flag {
            case "--port": options.port = number
            case "--server-pid": options.serverPID = Int32(number)
            case "--connections": options.connections = number
            case "--room-size": options.roomSize = number
            case "--latency-seconds": options.latencySeconds = number
            case "--rate": options.rate = number
            case "--throughput-seconds": options.throughputSeconds = number
            case "--pairs": options.pairs = number
            case "--payload-bytes": options.payloadBytes = max(8, number)
            default: fail("unknown option \(flag)")
            }
        }
        guard options.port > 0, options.serverPID > 0 else { fail("--port and --server-pid are required") }
        // One thread for the load generator: the server's one event loop gets the other core.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let bench = Bench(options: options, loop: group.next())
        try await bench.holdConnections()
        try await bench.measureLatency()
        try await bench.measureThroughput()
        try await group.shutdownGracefully()
    }

    static func fail(_ message: String) -> Never {
        print("rendezvous-bench: \(message)")
        exit(2)
    }
}

/// The benchmark's state. Safety: every mutable field is touched only on `loop` (all access is
/// inside `loop.submit`/`flatSubmit` or the handlers' callbacks, which run on it).
final class Bench: @unchecked Sendable {
    let options: RendezvousBench.Options
    let loop: any EventLoop
    private var held: [any Channel] = []
    private var welcomes = 0
    private var welcomed: EventLoopPromise<Void>?
    private var target = 0
    private var latencies: [UInt64] = []
    private var delivered = 0
    private var sentCount = 0

    init(options: RendezvousBench.Options, loop: any EventLoop) {
        self.options = options
        self.loop = loop
    }

    // MARK: Phase 1: held connections

    func holdConnections() async throws {
        let rssBefore = residentKB(options.serverPID)
        let started = ContinuousClock.now
        let rooms = (0..<(options.connections + options.roomSize - 1) / options.roomSize).map { _ in
            Ed25519.KeyPair.generate()
        }
        var opened = 0
        while opened < options.connections {
            let batch = min(500, options.connections - opened)
            let first = opened
            let roomSize = options.roomSize
            try await connect(count: batch, room: { rooms[(first + $0) / roomSize] })
            opened += batch
        }
        let elapsed = ContinuousClock.now - started
        let rssAfter = residentKB(options.serverPID)
        let perConnection = Double(rssAfter - rssBefore) * 1024 / Double(options.connections)
        print(
            "held connections:        \(options.connections) joined in \(rooms.count) rooms of \(options.roomSize) (opened in \(seconds(elapsed)) s)"
        )
        print("server resident memory:  \(rssBefore) kB idle -> \(rssAfter) kB held")
        print("memory per connection:   \(Int(perConnection.rounded())) bytes (\(fixed(perConnection / 1024, 1)) KiB)")
    }

    /// Opens `count` connections to the rooms `room(i)` names and waits for every WELCOME.
    private func connect(count: Int, room: @escaping @Sendable (Int) -> Ed25519.KeyPair) async throws {
        try await loop.flatSubmit { [self] in
            target = welcomes + count
            let promise = loop.makePromise(of: Void.self)
            welcomed = promise
            for index in 0..<count {
                let key = room(index)
                BenchConnection.connect(port: options.port, on: loop) { [self] in
                    BenchConnection(room: key, onWelcome: { _, _ in self.welcomedOne() }, onDeliver: { _ in })
                }.whenComplete { [self] result in
                    switch result {
                    case .success(let channel): held.append(channel)
                    case .failure(let error): welcomed?.fail(error)
                    }
                }
            }
            return promise.futureResult
        }.get()
    }

    private func welcomedOne() {
        welcomes += 1
        if welcomes == target { welcomed?.succeed() }
    }

    // MARK: Phase 2: relay latency at a fixed rate

    func measureLatency() async throws {
        let (sender, receiver) = try await pair(onDeliver: { [self] payload in
            let sent = payload.getInteger(at: payload.readerIndex, as: UInt64.self) ?? 0
            latencies.append(DispatchlessClock.nanoseconds() - sent)
        })
        let total = options.rate * options.latencySeconds
        let interval = TimeAmount.nanoseconds(1_000_000_000 / Int64(options.rate))
        let padding = [UInt8](repeating: 0, count: options.payloadBytes - 8)
        try await loop.flatSubmit { [self] in
            let done = loop.makePromise(of: Void.self)
            sentCount = 0
            // Paced by the loop's timer: one SEND per interval, each stamped with its send time.
            loop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { task in
                var payload = ByteBuffer()
                payload.writeInteger(DispatchlessClock.nanoseconds())
                payload.writeBytes(padding)
                sender.handler.send(to: receiver.id, payload: payload, flush: true)
                self.sentCount += 1
                if self.sentCount == total {
                    task.cancel()
                    done.succeed()
                }
            }
            return done.futureResult
        }.get()
        try await loop.scheduleTask(in: .milliseconds(200)) {}.futureResult.get()  // stragglers
        let sorted = try await loop.submit { [self] in latencies.sorted() }.get()
        func percentile(_ p: Double) -> String {
            guard !sorted.isEmpty else { return "n/a" }
            let value = sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
            return fixed(Double(value) / 1e6, 3) + " ms"
        }
        print(
            "relay latency at \(options.rate) msg/s, \(options.payloadBytes)-byte payloads, \(options.latencySeconds) s (\(sorted.count)/\(total) delivered):"
        )
        print(
            "  p50 \(percentile(0.50))   p99 \(percentile(0.99))   p99.9 \(percentile(0.999))   max \(percentile(1.0))")
    }

    /// Safety: the handler is used only on `loop`.
    struct Member: @unchecked Sendable {
        let handler: BenchConnection
        let id: RendezvousMemberID
        /// 0: sender, 1: receiver.
        var role = 0
    }

    private var pairMembers: [Member] = []
    private var pairReady: EventLoopPromise<[Member]>?

    /// Two members of a fresh room: (sender, receiver); `onDeliver` runs for the receiver.
    private func pair(onDeliver: @escaping @Sendable (ByteBuffer) -> Void) async throws -> (Member, Member) {
        let room = Ed25519.KeyPair.generate()
        let future: EventLoopFuture<[Member]> = loop.flatSubmit { self.startPair(room: room, onDeliver: onDeliver) }
        let members = try await future.get()
        return (members[0], members[1])
    }

    private func startPair(
        room: Ed25519.KeyPair, onDeliver: @escaping @Sendable (ByteBuffer) -> Void
    ) -> EventLoopFuture<[Member]> {
        pairMembers = []
        let ready = loop.makePromise(of: [Member].self)
        pairReady = ready
        for role in 0..<2 {
            let ignore: @Sendable (ByteBuffer) -> Void = { _ in }
            let deliver = role == 1 ? onDeliver : ignore
            let welcome: @Sendable (BenchConnection, RendezvousWelcome) -> Void = { connection, welcome in
                self.paired(Member(handler: connection, id: welcome.memberID, role: role))
            }
            BenchConnection.connect(port: options.port, on: loop) {
                BenchConnection(room: room, onWelcome: welcome, onDeliver: deliver)
            }.whenSuccess { channel in self.held.append(channel) }
        }
        return ready.futureResult
    }

    private func paired(_ member: Member) {
        pairMembers.append(member)
        if pairMembers.count == 2 { pairReady?.succeed(pairMembers.sorted { $0.role < $1.role }) }
    }

    // MARK: Phase 3: throughput

    func measureThroughput() async throws {
        var pairs: [(Member, Member)] = []
        for _ in 0..<options.pairs {
            pairs.append(try await pair(onDeliver: { [self] _ in delivered += 1 }))
        }
        let senders = pairs
        let payload = ByteBuffer(bytes: [UInt8](repeating: 0x42, count: options.payloadBytes))
        let cpuBefore = cpuSeconds(options.serverPID)
        let started = ContinuousClock.now
        let countBefore = try await loop.submit { [self] in delivered }.get()
        let stop = NIODeadline.now() + .seconds(Int64(options.throughputSeconds))
        try await loop.flatSubmit { [self] in
            let done = loop.makePromise(of: Void.self)
            loop.scheduleRepeatedTask(initialDelay: .milliseconds(1), delay: .milliseconds(1)) { task in
                for (sender, receiver) in senders {
                    var burst = 0
                    while sender.handler.isWritable && burst < 64 {
                        sender.handler.send(to: receiver.id, payload: payload, flush: false)
                        burst += 1
                    }
                    sender.handler.flush()
                }
                if NIODeadline.now() >= stop {
                    task.cancel()
                    done.succeed()
                }
            }
            return done.futureResult
        }.get()
        let count = try await loop.submit { [self] in delivered }.get() - countBefore
        let elapsed = ContinuousClock.now - started
        let cpu = cpuSeconds(options.serverPID) - cpuBefore
        let wall = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        print(
            "throughput (\(options.pairs) sender/receiver pairs, \(options.payloadBytes)-byte payloads, \(options.throughputSeconds) s):"
        )
        let rate = Int(Double(count) / wall)
        let load = fixed(cpu / wall * 100, 0)
        print("  \(rate) messages/s relayed; server CPU \(load) % of one core")
        print("  \(Int(Double(count) / max(cpu, 0.001))) messages per server CPU-second")
    }
}

/// Monotonic nanoseconds (CLOCK_MONOTONIC), comparable across the loop's callbacks.
enum DispatchlessClock {
    static func nanoseconds() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }
}

/// VmRSS of a process, in kB.
func residentKB(_ pid: Int32) -> Int {
    procLines("/proc/\(pid)/status").first { $0.hasPrefix("VmRSS:") }.flatMap {
        Int($0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
    } ?? 0
}

/// User + system CPU seconds of a process (/proc/PID/stat fields 14 and 15).
func cpuSeconds(_ pid: Int32) -> Double {
    guard let line = procLines("/proc/\(pid)/stat").first, let close = line.lastIndex(of: ")") else { return 0 }
    let fields = line[line.index(after: close)...].split(separator: " ")
    // After the command: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

func procLines(_ path: String) -> [String] {
    guard let file = fopen(path, "r") else { return [] }
    defer { fclose(file) }
    var lines: [String] = []
    var buffer = [CChar](repeating: 0, count: 4096)
    while fgets(&buffer, Int32(buffer.count), file) != nil {
        let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        lines.append(String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: "\n"))
    }
    return lines
}

extension String {
    func trimmingCharacters(in character: Character) -> String {
        var result = self
        while result.last == character { result.removeLast() }
        return result
    }
}

func seconds(_ duration: Duration) -> String {
    fixed(Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18, 1)
}

/// `value` with `decimals` digits after the point (no Foundation here).
func fixed(_ value: Double, _ decimals: Int) -> String {
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let scaled = Int((abs(value) * scale).rounded())
    let whole = scaled / Int(scale)
    let fraction = String(scaled % Int(scale))
    let sign = value < 0 ? "-" : ""
    guard decimals > 0 else { return sign + String(whole) }
    return sign + String(whole) + "." + String(repeating: "0", count: decimals - fraction.count) + fraction
}
