import NIOCore
import ParleyProtocol
import RendezvousWire
import Sodium

/// Load on one event loop (one thread): holds joined connections, and measures relay latency at a
/// fixed message rate and relay throughput between pairs of members. Safety: every mutable field
/// is touched only on `loop` (inside `loop.submit`/`flatSubmit` or the connections' callbacks).
final class LoadGenerator: @unchecked Sendable {
    let url: RendezvousURL
    /// The local address connections come from (one per holder process: each has its own range
    /// of ephemeral ports toward the same server port).
    let source: String?
    let loop: any EventLoop
    private var held: [any Channel] = []
    private var welcomes = 0
    private var target = 0
    private var welcomed: EventLoopPromise<Void>?

    init(url: RendezvousURL, source: String?, loop: any EventLoop) {
        self.url = url
        self.source = source
        self.loop = loop
    }

    // MARK: Held connections

    /// Opens `count` connections, `roomSize` to a fresh room, 250 at a time, each batch waiting
    /// for every WELCOME (at most a minute).
    func hold(count: Int, roomSize: Int) async throws {
        let rooms = (0..<(count + roomSize - 1) / roomSize).map { _ in Ed25519.KeyPair.generate() }
        var opened = 0
        while opened < count {
            let batch = min(250, count - opened)
            let first = opened
            try await connect(count: batch) { rooms[(first + $0) / roomSize] }
            opened += batch
        }
    }

    private func connect(count: Int, room: @escaping @Sendable (Int) -> Ed25519.KeyPair) async throws {
        try await loop.flatSubmit { [self] in
            target = welcomes + count
            let promise = loop.makePromise(of: Void.self)
            welcomed = promise
            let timeout = loop.scheduleTask(in: .seconds(60)) { [self] in
                promise.fail(
                    BenchError("only \(welcomes - target + count) of \(count) connections were welcomed in 60 s"))
            }
            for index in 0..<count {
                BenchConnection.connect(url, room: room(index), source: source, on: loop) { [self] _, _ in
                    welcomedOne()
                }.whenComplete { [self] result in
                    switch result {
                    case .success(let channel): held.append(channel)
                    case .failure(let error): promise.fail(error)
                    }
                }
            }
            promise.futureResult.whenComplete { _ in timeout.cancel() }
            return promise.futureResult
        }.get()
    }

    private func welcomedOne() {
        welcomes += 1
        if welcomes == target { welcomed?.succeed() }
    }

    // MARK: Pairs

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
    func pair(onDeliver: @escaping @Sendable (ByteBuffer) -> Void) async throws -> (Member, Member) {
        let room = Ed25519.KeyPair.generate()
        let members = try await loop.flatSubmit { [self] () -> EventLoopFuture<[Member]> in
            startPair(room: room, onDeliver: onDeliver)
        }.get()
        return (members[0], members[1])
    }

    private func startPair(
        room: Ed25519.KeyPair, onDeliver: @escaping @Sendable (ByteBuffer) -> Void
    ) -> EventLoopFuture<[Member]> {
        pairMembers = []
        let ready = loop.makePromise(of: [Member].self)
        pairReady = ready
        for role in 0..<2 {
            let welcome: @Sendable (BenchConnection, RendezvousWelcome) -> Void = { connection, welcome in
                self.paired(Member(handler: connection, id: welcome.memberID, role: role))
            }
            let ignore: @Sendable (ByteBuffer) -> Void = { _ in }
            let connecting = BenchConnection.connect(
                url, room: room, source: source, on: loop, onWelcome: welcome, onDeliver: role == 1 ? onDeliver : ignore
            )
            connecting.whenComplete { result in
                switch result {
                case .success(let channel): self.held.append(channel)
                case .failure(let error): ready.fail(error)
                }
            }
        }
        return ready.futureResult
    }

    private func paired(_ member: Member) {
        pairMembers.append(member)
        if pairMembers.count == 2 { pairReady?.succeed(pairMembers.sorted { $0.role < $1.role }) }
    }

    // MARK: Relay latency at a fixed rate

    struct Latency {
        let sent: Int
        let delivered: Int
        /// Nanoseconds, sorted.
        let sorted: [UInt64]

        func percentile(_ p: Double) -> Double? {
            guard !sorted.isEmpty else { return nil }
            return Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) / 1e6
        }
    }

    private var latencies: [UInt64] = []
    private var sentCount = 0

    /// `rate` messages a second in all for `seconds`, each to the next of `pairs` sender/receiver
    /// pairs in turn, stamped with the time it was written; latency is from that write to its
    /// DELIVER being read. Paced by a 100 µs timer that sends whatever is due, so a late tick
    /// catches up instead of lowering the rate.
    func measureLatency(rate: Int, seconds: Int, pairs count: Int, payloadBytes: Int) async throws -> Latency {
        var pairs: [(Member, Member)] = []
        for _ in 0..<count {
            pairs.append(
                try await pair(onDeliver: { [self] payload in
                    let sent = payload.getInteger(at: payload.readerIndex, as: UInt64.self) ?? 0
                    latencies.append(MonotonicClock.nanoseconds() - sent)
                }))
        }
        let total = rate * seconds
        let padding = [UInt8](repeating: 0, count: max(0, payloadBytes - 8))
        let senders = pairs
        try await loop.flatSubmit { [self] in
            latencies = []
            latencies.reserveCapacity(total)
            let done = loop.makePromise(of: Void.self)
            let start = MonotonicClock.nanoseconds()
            sentCount = 0
            loop.scheduleRepeatedTask(initialDelay: .microseconds(100), delay: .microseconds(100)) { task in
                let due = min(total, Int(Double(MonotonicClock.nanoseconds() - start) / 1e9 * Double(rate)))
                while self.sentCount < due {
                    let (sender, receiver) = senders[self.sentCount % senders.count]
                    var payload = ByteBuffer()
                    payload.writeInteger(MonotonicClock.nanoseconds())
                    payload.writeBytes(padding)
                    sender.handler.send(to: receiver.id, payload: payload, flush: true)
                    self.sentCount += 1
                }
                if self.sentCount == total {
                    task.cancel()
                    done.succeed()
                }
            }
            return done.futureResult
        }.get()
        try await loop.scheduleTask(in: .milliseconds(500)) {}.futureResult.get()  // stragglers
        let sorted = try await loop.submit { [self] in latencies.sorted() }.get()
        return Latency(sent: total, delivered: sorted.count, sorted: sorted)
    }

    // MARK: Throughput

    struct Throughput {
        let messagesPerSecond: Double
        /// Of the processes given (the servers), in % of one core.
        let cpuPercent: Double
        let messagesPerCPUSecond: Double
    }

    private var delivered = 0

    /// `pairs` senders each writing as fast as the connection takes it (up to 64 per ms) for
    /// `seconds`; counts what the receivers get.
    func measureThroughput(
        pairs count: Int, seconds: Int, payloadBytes: Int, serverPIDs: [Int32]
    ) async throws
        -> Throughput
    {
        var pairs: [(Member, Member)] = []
        for _ in 0..<count {
            pairs.append(try await pair(onDeliver: { [self] _ in delivered += 1 }))
        }
        let senders = pairs
        let payload = ByteBuffer(bytes: [UInt8](repeating: 0x42, count: payloadBytes))
        let cpuBefore = serverPIDs.map(ProcessStats.cpuSeconds).reduce(0, +)
        let started = ContinuousClock.now
        let countBefore = try await loop.submit { [self] in delivered }.get()
        let stop = NIODeadline.now() + .seconds(Int64(seconds))
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
        let wall = benchSeconds(ContinuousClock.now - started)
        let cpu = serverPIDs.map(ProcessStats.cpuSeconds).reduce(0, +) - cpuBefore
        return Throughput(
            messagesPerSecond: Double(count) / wall, cpuPercent: cpu / wall * 100,
            messagesPerCPUSecond: Double(count) / max(cpu, 0.001))
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
