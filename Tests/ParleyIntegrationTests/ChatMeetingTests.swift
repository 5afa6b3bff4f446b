import ControlAPI
import NodeLab
import ParleyTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Chat between real daemons (docs/PROTOCOL.md §14.1, issue 16): three `parleyd` in a network
/// namespace of their own, each on its own loopback address, so iptables can make one pair's
/// path lossy (20 %, both ways) and cut another's so that a member relays it. Messages are sent
/// with the real `parley say` (argument and standard input) and read back with `parley status
/// --json` and `parley watch`: each arrives exactly once, in order, at both others, under the
/// name of the session it came over.
@Suite(.serialized, .enabled(if: TestEnvironment.shouldRun(needing: NodeLab.binariesBuilt && TestEnvironment.isRoot)))
struct ChatMeetingTests {
    static let addresses = ["alice": "127.0.0.2", "bob": "127.0.0.3", "carol": "127.0.0.4"]

    @Test func messagesArriveOnceInOrderThroughLossAndARelay() async throws {
        let lab = try NodeLab("chat")
        let namespace = try LabNamespace(lab, prefix: "parley-chat")
        do {
            try await withTimeout(.seconds(150), "the chat meeting") {
                try await runBlocking { try Self.meeting(lab, namespace: namespace.name) }
            }
        } catch {
            Issue.record("\(error)\n\(lab.logs(of: ["alice", "bob", "carol", "rendezvous"]))")
        }
        lab.shutdown()  // first: the daemons inside must be gone before their namespace
        namespace.remove()
    }

    static func meeting(_ lab: NodeLab, namespace: String) throws {
        let rendezvous = try lab.rendezvous(host: "127.0.0.1", namespace: namespace)
        let invite = try lab.invite(rendezvous: rendezvous.url)
        var nodes: [String: NodeHandle] = [:]
        for name in ["alice", "bob", "carol"] {
            var spec = NodeSpec(name: name, input: "silence", join: invite)
            spec.output = "null"
            spec.localAddresses = [addresses[name]!]
            spec.namespace = namespace
            nodes[name] = try lab.node(spec)
        }
        for node in nodes.values { try node.waitForPeersUp(2) }
        let ids = try nodes.mapValues { try $0.status().node.id }
        let watch = try nodes["carol"]!.watch(json: false)

        // Clean paths; bob's message comes from standard input, with a name in it that is not his.
        var sent: [String: [String]] = [:]
        for name in ["alice", "carol"] {
            try say(nodes[name]!, "\(name): hello from \(name)", into: &sent)
        }
        let forged = "carol: this is really carol"
        let piped = try lab.run(
            "/bin/sh",
            ["-c", "printf '%s\\n' '\(forged)' | '\(lab.binaries)/parley' say --socket '\(nodes["bob"]!.socket)'"])
        #expect(piped.status == 0, "parley say from standard input: \(piped.error)")
        sent["bob", default: []].append(forged)
        try waitForEverything(nodes, sent, "messages on clean paths")

        // What a message claims about its sender changes nothing: carol shows bob's line as bob's.
        let carolSees = try nodes["carol"]!.statusFromCLI().chat
        #expect(carolSees.contains { $0.text == forged && $0.name == "bob" && $0.from == ids["bob"] })
        #expect(!carolSees.contains { $0.text == forged && $0.name == "carol" })
        let chatCommand = try nodes["carol"]!.parley(["chat"])
        #expect(chatCommand.status == 0 && chatCommand.output.contains("] bob (\(ids["bob"]!)): \(forged)\n"))
        #expect(chatCommand.output.split(separator: "\n").count == 3, "\(chatCommand.output)")
        try LabWait.until(.seconds(10), "carol's `parley watch` to print bob's message") {
            watch.standardOutput.contains("] bob (\(ids["bob"]!)): \(forged)")
        }

        // 4 KiB + 1 byte is refused with the size; 4 KiB is fine.
        let tooLong = try nodes["alice"]!.parley(["say", String(repeating: "x", count: 4097)])
        #expect(tooLong.status != 0)
        #expect(tooLong.error.contains("4097 bytes"), "\(tooLong.error)")
        #expect(tooLong.error.split(separator: "\n").count == 1)

        // 20 % loss each way between alice and bob: messages of one and of four pieces, in rounds
        // until the loss has dropped packets both ways (on loopback a round takes a fraction of a
        // second: three rounds alone left one direction without a drop about one run in seven).
        try lossBetween(lab, namespace, "alice", "bob", "-I")
        var counters = ""
        var dropped: [Int] = []
        var round = 0
        repeat {
            for name in ["alice", "bob", "carol"] {
                var text = "\(name) over a lossy path, \(round)"
                if round % 3 == 1 { text += " " + String(repeating: "ß", count: 2000) }
                try say(nodes[name]!, text, into: &sent)
            }
            round += 1
            try waitForEverything(nodes, sent, "messages over a lossy path")
            counters = try lab.run("/usr/sbin/iptables", ["-nvxL", "OUTPUT"], namespace: namespace).output
            dropped = counters.split(separator: "\n").filter { $0.contains("statistic") }.compactMap {
                Int($0.split(separator: " ").first ?? "")
            }
        } while round < 3 || (round < 12 && !dropped.allSatisfy { $0 > 0 })
        #expect(dropped.count == 2 && dropped.allSatisfy { $0 > 0 }, "the loss rules dropped nothing: \(counters)")
        try lossBetween(lab, namespace, "alice", "bob", "-D")

        // bob and carol lose their path: alice carries their sessions, chat included.
        try cut(lab, namespace, "bob", "carol")
        try LabWait.until(.seconds(30), "bob's link to carol to go through alice") {
            try nodes["bob"]!.status().peers.first { $0.name == "carol" }.map {
                $0.route == "peer" && $0.state == .up
            } == true
        }
        for name in ["alice", "bob", "carol"] { try say(nodes[name]!, "\(name) through a relay", into: &sent) }
        try waitForEverything(nodes, sent, "messages through a relayed link")
        #expect(try nodes["alice"]!.status().node.relaying.count == 1)
        #expect(nodes["bob"]!.process.standardError.contains("link goes through a member"))

        // Every message is still there exactly once, in order.
        try expectEverything(nodes, sent, "at the end")
        for node in nodes.values { #expect(node.terminate() == 0) }
    }

    static func say(_ node: NodeHandle, _ text: String, into sent: inout [String: [String]]) throws {
        let result = try node.parley(["say", text])
        #expect(result.status == 0, "\(node.name): parley say: \(result.error)")
        #expect(result.output.contains("sent to"), "\(result.output)")
        sent[node.name, default: []].append(text)
    }

    /// What `node` shows from each other member, in order, in `parley status --json`.
    static func received(by node: NodeHandle) throws -> [String: [String]] {
        var result: [String: [String]] = [:]
        for message in try node.statusFromCLI().chat where message.name != node.name {
            result[message.name, default: []].append(message.text)
        }
        return result
    }

    static func expected(at name: String, _ sent: [String: [String]]) -> [String: [String]] {
        var expected = sent
        expected[name] = nil
        return expected
    }

    static func waitForEverything(_ nodes: [String: NodeHandle], _ sent: [String: [String]], _ what: String) throws {
        for (name, node) in nodes {
            var last: [String: [String]] = [:]
            do {
                try LabWait.until(.seconds(20), "\(name) to have received the \(what)", every: .milliseconds(100)) {
                    last = try received(by: node)
                    return last == expected(at: name, sent)
                }
            } catch {
                throw LabError("\(error): it shows \(summary(last)), expected \(summary(expected(at: name, sent)))")
            }
        }
    }

    static func expectEverything(_ nodes: [String: NodeHandle], _ sent: [String: [String]], _ when: String) throws {
        for (name, node) in nodes {
            let shown = try received(by: node)
            #expect(shown == expected(at: name, sent), "\(name) \(when): \(summary(shown))")
        }
    }

    /// Counts per sender and each message's first 40 characters.
    static func summary(_ messages: [String: [String]]) -> String {
        messages.keys.sorted().map { "\($0): \(messages[$0]!.map { String($0.prefix(40)) })" }.joined(separator: "; ")
    }

    /// Adds (`-I`) or removes (`-D`) 20 % random loss on every packet between two members, each way.
    static func lossBetween(_ lab: NodeLab, _ namespace: String, _ a: String, _ b: String, _ action: String) throws {
        for (from, to) in [(a, b), (b, a)] {
            try iptables(
                lab, namespace,
                [
                    action, "OUTPUT", "-s", addresses[from]!, "-d", addresses[to]!, "-m", "statistic", "--mode",
                    "random",
                    "--probability", "0.2", "-j", "DROP",
                ])
        }
    }

    /// Drops every packet between two members.
    static func cut(_ lab: NodeLab, _ namespace: String, _ a: String, _ b: String) throws {
        for (from, to) in [(a, b), (b, a)] {
            try iptables(lab, namespace, ["-I", "OUTPUT", "-s", addresses[from]!, "-d", addresses[to]!, "-j", "DROP"])
        }
    }

    static func iptables(_ lab: NodeLab, _ namespace: String, _ arguments: [String]) throws {
        let result = try lab.run("/usr/sbin/iptables", arguments, namespace: namespace)
        guard result.status == 0 else {
            throw LabError("iptables \(arguments.joined(separator: " ")): \(result.error.lastLine)")
        }
    }
}
