import ControlAPI
import NodeLab
import ParleyTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A machine whose addresses change mid-call (another network, Wi-Fi to wired): the daemon
/// notices from the interface list, restarts every link's ICE at once, and the meeting goes on
/// with the same identities (issue 14, roaming). Two real daemons and a rendezvous in a network
/// namespace of their own, so the test can add and remove addresses without touching the host.
@Suite(.serialized, .enabled(if: TestEnvironment.shouldRun(needing: NodeLab.binariesBuilt && TestEnvironment.isRoot)))
struct RoamingTests {
    @Test func anAddressChangeRestartsEveryLinkAndTheMeetingGoesOn() async throws {
        let lab = try NodeLab("roaming")
        let scratch = try LabNamespace(lab, prefix: "parley-roam")
        let namespace = scratch.name
        defer {
            lab.shutdown()  // first: the daemons inside must be gone before their namespace
            scratch.remove()
        }
        try await withTimeout(.seconds(120), "the roaming scenario") {
            try await runBlocking {
                for command in [
                    // A veth pair stands for the network card (this kernel has no dummy links).
                    ["-n", namespace, "link", "add", "wlan0", "type", "veth", "peer", "name", "wlan0-peer"],
                    ["-n", namespace, "link", "set", "wlan0-peer", "up"],
                    ["-n", namespace, "link", "set", "wlan0", "up"],
                    ["-n", namespace, "address", "add", "10.77.0.1/24", "dev", "wlan0"],
                ] {
                    let result = try lab.run("/usr/sbin/ip", command)
                    #expect(result.status == 0, "ip \(command.joined(separator: " ")): \(result.error)")
                }
                // The rendezvous on the namespace's loopback stays reachable throughout; ICE
                // leaves loopback out when it may use every interface, so the links run over wlan0.
                let rendezvous = try lab.rendezvous(host: "127.0.0.1", namespace: namespace)
                let invite = try lab.invite(rendezvous: rendezvous.url)
                var nodes: [NodeHandle] = []
                for (name, tone) in [("alice", 440), ("bob", 660)] {
                    var spec = NodeSpec(name: name, input: "tone:\(tone)", join: invite)
                    spec.localAddresses = []  // every interface: the address watch is on
                    spec.namespace = namespace
                    nodes.append(try lab.node(spec))
                }
                for node in nodes { try node.waitForPeersUp(1) }
                let codeBefore = try MeetingTests.agreedCode(of: nodes)

                // The "Wi-Fi" gets a second address and loses its first: every path over
                // 10.77.0.1 is gone.
                for command in [
                    ["-n", namespace, "address", "add", "10.78.0.1/24", "dev", "wlan0"],
                    ["-n", namespace, "address", "del", "10.77.0.1/24", "dev", "wlan0"],
                ] {
                    let result = try lab.run("/usr/sbin/ip", command)
                    #expect(result.status == 0, "ip \(command.joined(separator: " ")): \(result.error)")
                }
                for node in nodes {
                    try LabWait.until(.seconds(10), "\(node.name) to notice its addresses changed") {
                        node.process.standardError.contains("local addresses changed")
                            && node.process.standardError.contains("restarted every path")
                    }
                }
                for node in nodes { try node.waitForPeersUp(1, limit: .seconds(20)) }
                let heard = try ListeningWindow(nodes).heard(
                    nodes, seconds: 2, tones: ["alice": 440, "bob": 660],
                    threshold: Hearing.expectedPower(dBFS: -10) / 8)
                #expect(heard["alice"] == ["bob"] && heard["bob"] == ["alice"], "\(ListeningWindow.describe(heard))")
                // Same identities, same meeting: the code is the one read aloud before.
                #expect(try MeetingTests.agreedCode(of: nodes) == codeBefore)
                for node in nodes { #expect(node.terminate() == 0) }
            }
        }
    }
}
