import ArgumentParser
import ControlAPI
import Dispatch
import Foundation
import NodeLab
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `parley-lab bench`: a real meeting of `--nodes` parleyd processes on 127.0.0.1 (through a
/// parley-rendezvous process), and three figures: join time, CPU per node, traffic per node.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure join time, CPU per node and bytes per second of a loopback meeting.",
        discussion: """
            Join time: from starting the last node's process until it has every other peer 'up' and \
            every other node has it 'up' (PROTOCOL §10.1: media received both ways): the last node's status \
            polled every 10 ms, the others' from their event streams (`watch`), as they happen. \
            CPU: utime+stime from /proc/PID/stat of each parleyd over the window, in % of one core. \
            Traffic: the ICE stream counters (UDP payload) per node, plus 28 bytes of IPv4+UDP header per packet.
            """)

    @Option(help: "Nodes in the meeting (the rendezvous' default cap is 8).")
    var nodes = 8
    @Option(help: "How many times to measure the last node's join.")
    var joins = 5
    @Option(help: "Seconds over which CPU and traffic are measured.")
    var window = 20.0
    @Option(
        help:
            "Audio input of every node: tone:HZ (default: one tone each) or wav:PATH (e.g. speech); {n} in it is replaced by the node's number (1...)."
    )
    var input: String?
    @Option(help: "More arguments for every parleyd, e.g. --daemon-argument=--complexity=5 (repeatable).")
    var daemonArgument: [String] = []
    @Option(help: "Who talks when, in words, for the report (the input decides it).")
    var scenario = "every node sending all the time"
    @Flag(
        help: """
            Each node sends a tone of its own, quiet enough that a mix of all does not clip, and plays to a \
            WAV file; print how many (listener, speaker) pairs were heard in at least 80 % of the window's \
            1-s blocks.
            """)
    var hearing = false

    func run() throws {
        let lab = try NodeLab("bench")
        defer { lab.shutdown() }
        let rendezvous = try lab.rendezvous(arguments: ["--max-members", "\(max(nodes, 8))"])
        let invite = try lab.invite(rendezvous: rendezvous.url)
        let names = (1...nodes).map { "node\($0)" }
        let tones = try hearing ? Self.writeTones(names, in: lab.directory) : [:]
        func spec(_ index: Int) -> NodeSpec {
            let audio =
                hearing
                ? "wav:\(Self.toneFile(names[index], in: lab.directory))"
                : input?.replacing("{n}", with: "\(index + 1)") ?? "tone:\(Self.toneHertz(index))"
            var spec = NodeSpec(name: names[index], input: audio, join: invite)
            spec.output = hearing ? nil : "null"
            spec.waitUntilReady = false
            spec.logLevel = "notice"
            spec.arguments = daemonArgument
            return spec
        }
        var members = try (0..<(nodes - 1)).map { try lab.node(spec($0)) }
        for member in members { try member.waitUntilReady() }
        for member in members { try member.waitForPeersUp(nodes - 2, limit: .seconds(60)) }
        let linksUp = try LinksUp(following: members)
        print("bench-node: \(nodes - 1) nodes up on 127.0.0.1; measuring the \(nodes)th node's join \(joins) times")

        var joinTimes: [Double] = []
        for round in 1...joins {
            let started = ContinuousClock.now
            let last = try lab.node(spec(nodes - 1))
            var answeredAt: Double?
            var lastID = ""
            try LabWait.until(.seconds(30), "the last node to have every link up", every: .milliseconds(10)) {
                guard let status = try? last.status() else { return false }
                if answeredAt == nil { answeredAt = Self.seconds(since: started) }
                lastID = status.node.id
                return status.peers.count == nodes - 1 && status.peers.allSatisfy { $0.state == .up }
            }
            let lastHasAll = ContinuousClock.now
            var everyoneHasLast: ContinuousClock.Instant?
            try LabWait.until(.seconds(30), "every member to have the last node up", every: .milliseconds(10)) {
                everyoneHasLast = linksUp.everyone(hasUp: lastID, since: started)
                return everyoneHasLast != nil
            }
            let joined = Self.seconds(from: started, to: max(lastHasAll, everyoneHasLast!))
            joinTimes.append(joined)
            print(
                "  join \(round): \(Self.ms(joined)) ms (process start to control socket: \(Self.ms(answeredAt ?? 0)) ms; "
                    + "control socket to joined: \(Self.ms(joined - (answeredAt ?? 0))) ms)")
            if round < joins {
                last.process.terminate()
                for member in members { try member.waitForPeersUp(nodes - 2, limit: .seconds(15)) }
            } else {
                members.append(last)
            }
        }
        joinTimes.sort()
        print(
            "join time (\(nodes)th node started → hears all \(nodes - 1), all \(nodes - 1) hear it): "
                + "median \(Self.ms(joinTimes[joinTimes.count / 2])) ms, min \(Self.ms(joinTimes.first!)) ms, "
                + "max \(Self.ms(joinTimes.last!)) ms  (target ≤ 500 ms)")

        // CPU and traffic over the window, with everyone in the meeting. Traffic: the packet
        // counters' difference, and the mean of the kb/s each status reports (once a second).
        let cpuBefore = members.map { Self.cpuTicks($0.process.pid) }
        let packetsBefore = try members.map { try Self.packets($0) }
        let rendezvousBefore = Self.cpuTicks(rendezvous.process.pid)
        let heardFrom = members.map { Hearing.sampleCount($0.wav) }
        var kbps = [(up: Double, down: Double)](repeating: (0, 0), count: members.count)
        var samples = 0
        let started = ContinuousClock.now
        while Self.seconds(since: started) < window {
            LabWait.sleep(for: .seconds(1))
            for (index, member) in members.enumerated() {
                let peers = try member.status().peers
                kbps[index].up += peers.map(\.txKbps).reduce(0, +)
                kbps[index].down += peers.map(\.rxKbps).reduce(0, +)
            }
            samples += 1
        }
        let elapsed = Self.seconds(since: started)
        let heardTo = members.map { Hearing.sampleCount($0.wav) }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        print("per node over \(Self.one(elapsed)) s (\(nodes)-node meeting, 20 ms Opus frames; \(scenario)):")
        print("  node      CPU % of a core   up kB/s  (pkts/s)   down kB/s  (pkts/s)")
        var cpus: [Double] = []
        var ups: [Double] = []
        var downs: [Double] = []
        for (index, member) in members.enumerated() {
            let cpu = Double(Self.cpuTicks(member.process.pid) - cpuBefore[index]) / ticks / elapsed * 100
            let packets = try Self.packets(member)
            let packetsUp = Double(packets.sent - packetsBefore[index].sent) / elapsed
            let packetsDown = Double(packets.received - packetsBefore[index].received) / elapsed
            // kb/s of UDP payload → kB/s on the wire with 28 bytes of IPv4 + UDP header a packet.
            let up = kbps[index].up / Double(samples) / 8 + 28 * packetsUp / 1000
            let down = kbps[index].down / Double(samples) / 8 + 28 * packetsDown / 1000
            cpus.append(cpu)
            ups.append(up)
            downs.append(down)
            let upText = Self.one(up) + "  (\(Int(packetsUp.rounded())))"
            print(
                "  \(member.name.padding(8))  \(Self.one(cpu).padding(16))  \(upText.padding(19))  \(Self.one(down))  (\(Int(packetsDown.rounded())))"
            )
        }
        let rendezvousCPU = Double(Self.cpuTicks(rendezvous.process.pid) - rendezvousBefore) / ticks / elapsed * 100
        let meanCPU = cpus.reduce(0, +) / Double(cpus.count)
        print(
            "CPU per node: mean \(Self.one(meanCPU)) %, max \(Self.one(cpus.max()!)) % of one core (target ≤ 4 %); "
                + "rendezvous \(Self.one(rendezvousCPU)) %")
        print(
            "traffic per node: up \(Self.one(ups.reduce(0, +) / Double(ups.count))) kB/s, "
                + "down \(Self.one(downs.reduce(0, +) / Double(downs.count))) kB/s (IPv4 + UDP headers included)")
        if hearing {
            try Self.reportHearing(members, tones: tones, from: heardFrom, to: heardTo)
        }
    }

    static func toneHertz(_ index: Int) -> Int { 300 + 150 * index }

    /// Loudness of each node's tone with `--hearing`: a listener's mix of all the others' peaks
    /// at -10 dBFS, so the mixer's soft clip does not smear one tone into another.
    static func toneLevel(nodes: Int) -> Double { -10 - 20 * log10(Double(max(1, nodes - 1))) }

    static func toneFile(_ name: String, in directory: String) -> String { "\(directory)/\(name)-tone.wav" }

    /// One WAV input per node (a WAV input plays once, then silence: long enough for any run).
    static func writeTones(_ names: [String], in directory: String) throws -> [String: Double] {
        var tones: [String: Double] = [:]
        for (index, name) in names.enumerated() {
            tones[name] = Double(toneHertz(index))
            try Hearing.writeTone(
                toneFile(name, in: directory), hertz: Double(toneHertz(index)), dBFS: toneLevel(nodes: names.count),
                seconds: 240)
        }
        return tones
    }

    /// Which speakers each listener heard in each 1-s block of what it played during the window.
    /// A pair counts as heard when its tone is within 9 dB of its level in ≥ 80 % of the blocks.
    static func reportHearing(_ listeners: [NodeHandle], tones: [String: Double], from: [Int], to: [Int]) throws {
        let threshold = Hearing.expectedPower(dBFS: toneLevel(nodes: tones.count)) / 8
        let second = Hearing.sampleRate
        var pairs = 0
        var heardPairs = 0
        var missed: [String] = []
        for (index, listener) in listeners.enumerated() {
            let blocks = (to[index] - from[index]) / second
            guard blocks > 0 else { throw LabError("\(listener.name) played nothing during the window") }
            let samples = try Hearing.samples(listener.wav, from: from[index], count: blocks * second)
            var heardBlocks: [String: Int] = [:]
            for block in 0..<blocks {
                let found = Hearing.heard(
                    in: Array(samples[block * second..<(block + 1) * second]), tones: tones, threshold: threshold)
                for speaker in found { heardBlocks[speaker, default: 0] += 1 }
            }
            for speaker in tones.keys.sorted() where speaker != listener.name {
                pairs += 1
                let share = Double(heardBlocks[speaker] ?? 0) / Double(blocks)
                if share >= 0.8 {
                    heardPairs += 1
                } else {
                    missed.append("\(listener.name)←\(speaker) \(Int((share * 100).rounded())) %")
                }
            }
        }
        print("pairs heard in ≥ 80 % of 1-s blocks: \(heardPairs) of \(pairs)")
        if !missed.isEmpty { print("  not heard enough: \(missed.joined(separator: ", "))") }
    }

    /// Packets sent and received over all of a node's links (ICE stream counters, via status).
    static func packets(_ node: NodeHandle) throws -> (sent: UInt64, received: UInt64) {
        let peers = try node.status().peers
        return (peers.map(\.packetsTx).reduce(0, +), peers.map(\.packetsRx).reduce(0, +))
    }

    /// utime + stime of a process, in clock ticks (/proc/PID/stat fields 14 and 15).
    static func cpuTicks(_ pid: Int32) -> Int {
        guard let file = fopen("/proc/\(pid)/stat", "r") else { return 0 }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 4096)
        guard fgets(&buffer, Int32(buffer.count), file) != nil else { return 0 }
        let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        // The command name (field 2) is in parentheses and may contain spaces: count after it.
        guard let close = line.lastIndex(of: ")") else { return 0 }
        let fields = line[line.index(after: close)...].split(separator: " ")
        // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
        guard fields.count > 12, let user = Int(fields[11]), let system = Int(fields[12]) else { return 0 }
        return user + system
    }

    static func seconds(since start: ContinuousClock.Instant) -> Double { seconds(from: start, to: .now) }

    static func seconds(from start: ContinuousClock.Instant, to end: ContinuousClock.Instant) -> Double {
        let elapsed = (end - start).components
        return Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18
    }

    static func ms(_ seconds: Double) -> String { "\(Int((seconds * 1000).rounded()))" }
    static func one(_ value: Double) -> String { format1(value) }
}

/// When each member saw each peer's link go `up`, from the member's own event stream (`watch`), as
/// it happens. The join is timed with these rather than by polling every member's status: with 15
/// members a poll was a sweep of 15 requests, each making a daemon build its status, so the figure
/// read the sweep (up to ~250 ms here) and the polling loaded the meeting it measured.
final class LinksUp: Sendable {
    /// peer id → for each member (by index), the times it saw that peer's link go up.
    private let seen = Mutex<[String: [Int: [ContinuousClock.Instant]]]>([:])
    private let memberCount: Int

    /// Returns once every member's stream is subscribed (every event from then on is seen).
    init(following members: [NodeHandle]) throws {
        memberCount = members.count
        let subscribed = DispatchSemaphore(value: 0)
        for (index, member) in members.enumerated() {
            let client = member.client
            Thread.detachNewThread { [self] in
                // Ends when the member's daemon closes the stream (the lab shuts it down).
                try? client.watch(subscribed: { subscribed.signal() }) { event in
                    if event.kind == .link, event.state == EventState(.up), let peer = event.peer {
                        let now = ContinuousClock.now
                        seen.withLock { $0[peer, default: [:]][index, default: []].append(now) }
                    }
                    return true
                }
            }
        }
        for member in members where subscribed.wait(timeout: .now() + 20) == .timedOut {
            throw LabError("\(member.name)'s event stream did not subscribe")
        }
    }

    /// When the last member saw `peer`'s link up for the first time since `start`, if all have.
    func everyone(hasUp peer: String, since start: ContinuousClock.Instant) -> ContinuousClock.Instant? {
        seen.withLock { seen in
            let firsts = (0..<memberCount).map { seen[peer]?[$0]?.first { $0 >= start } }
            guard firsts.allSatisfy({ $0 != nil }) else { return nil }
            return firsts.compactMap { $0 }.max()
        }
    }
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}
