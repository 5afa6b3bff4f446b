import ControlAPI
import NodeLab
import ParleyTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The three-node meeting across real NATs: run inside the NAT lab (`Scripts/natlab-meeting`,
/// a step of Scripts/test, runs `Scripts/natlab run -- swift test --filter NATLabMeetingTests`).
/// alice is on the public side, bob behind a cone NAT, carol behind a symmetric NAT; the
/// rendezvous runs on the lab's server with a STUN responder and hands out credentials for a coturn
/// started here with a shared secret (TURN REST API, §4.6). Between the cone and the symmetric NAT
/// there is no direct path, so that pair must relay; the others go direct.
@Suite(.serialized, .enabled(if: NATLab.prefix != nil))
struct NATLabMeetingTests {
    static let tones: [String: Double] = ["alice": 440, "bob": 660, "carol": 880]

    @Test func meetingAcrossConeAndSymmetricNATsWithTURN() async throws {
        let lab = try NodeLab("natlab")
        do {
            try await withTimeout(.seconds(150), "the NAT lab meeting") {
                try await runBlocking { try Self.meeting(lab) }
            }
        } catch {
            let coturn = String(LabFilesText.read("\(lab.directory)/coturn.log").suffix(3000))
            let logs = lab.logs(of: ["alice", "bob", "carol", "rendezvous"])
            Issue.record("\(error)\n\(logs)\n--- coturn\n\(coturn)")
        }
        await runBlockingQuietly { lab.shutdown() }
    }

    /// The mesh repairs itself with no TURN at all (issue 14): alice and dave on public
    /// addresses, bob and carol behind symmetric NATs. bob and carol have no direct path, so a
    /// public member carries them. Then the rendezvous dies and the path between alice and dave
    /// is cut: they go on through a NATed member; the cut heals and their
    /// link returns to the direct path, its ICE restart signaled over the mesh.
    @Test func theMeshRepairsItselfWithoutTURN() async throws {
        let lab = try NodeLab("natlab-mesh")
        do {
            try await withTimeout(.seconds(150), "the self-repairing mesh in the NAT lab") {
                try await runBlocking { try Self.selfRepair(lab) }
            }
        } catch {
            Issue.record("\(error)\n\(lab.logs(of: ["alice", "bob", "carol", "dave", "rendezvous"]))")
        }
        // A failure between the cut and its healing must not leave the next test without that path.
        for rule in Self.cutRules {
            _ = try? lab.run(NATLab.iptables, ["-D"] + rule, namespace: NATLab.namespace("pub"))
        }
        let left = try? lab.run(NATLab.iptables, ["-S"], namespace: NATLab.namespace("pub")).output
        #expect(left?.contains(Self.cutHost) == false, "alice's host still cuts: \(left ?? "?")")
        await runBlockingQuietly { lab.shutdown() }
    }

    /// A laptop lid closed for 20 s (issue 14): carol (behind a cone NAT) is SIGSTOPped while the
    /// others go on, and SIGCONT brings her back without anyone acting: she notices her timers fired
    /// late, restarts her links and reconnects to the rendezvous; the others kept her in the meeting.
    @Test func aMemberSuspendedTwentySecondsComesBack() async throws {
        let lab = try NodeLab("natlab-suspend")
        do {
            try await withTimeout(.seconds(150), "the suspended member's return") {
                try await runBlocking { try Self.suspendAndResume(lab) }
            }
        } catch {
            Issue.record("\(error)\n\(lab.logs(of: ["alice", "bob", "carol", "rendezvous"]))")
        }
        await runBlockingQuietly { lab.shutdown() }
    }

    /// A member whose uplink is capped below what it sends (issue 17): bob, alone behind cone2,
    /// sends a copy of his voice to each of three peers (3 × 60 kb/s) through a `tc tbf` of
    /// 96 kbit/s with a home router's 200 ms queue. His bandwidth estimate brings him under the
    /// cap, and since a copy per peer would leave each too little he sends one signed copy up to a
    /// member that passes it on (PROTOCOL §15); his peers report the queue drained, everyone still
    /// hears everyone, and the others — whose uplinks are free — keep sending their full rate.
    /// With the cap gone he is at his full rate, and a probe (§15.3) finds that a copy per peer
    /// fits again: he sends one to each, his frames no longer signed.
    @Test func aCappedUplinkIsFilledNotOverfilled() async throws {
        let lab = try NodeLab("natlab-uplink")
        do {
            try await withTimeout(.seconds(270), "the capped uplink") {
                try await runBlocking { try Self.cappedUplink(lab) }
            }
        } catch {
            Issue.record("\(error)\n\(lab.logs(of: ["alice", "bob", "carol", "dave", "rendezvous"]))")
        }
        _ = try? lab.run(NATLab.script, ["unimpair", NATLab.namespace("cone2")])
        let left = try? lab.run("/usr/sbin/tc", ["qdisc", "show", "dev", "wan"], namespace: NATLab.namespace("cone2"))
        #expect(left?.output.contains("tbf") == false, "cone2 still caps: \(left?.output ?? "?")")
        await runBlockingQuietly { lab.shutdown() }
    }

    static func cappedUplink(_ lab: NodeLab) throws {
        // At debug, each move of a member's estimate is logged ("send rate": which peer's REPORT, its
        // queue and loss), for the message if a free member is found limited.
        let (_, nodes) = try meshOfFour(
            lab, placement: ["alice": "pub", "bob": "c2", "carol": "pub2", "dave": "c1a"], logLevel: "debug")
        let bob = nodes[1]
        #expect(try bob.status().node.sendRate?.limited == false)
        let capped = try lab.run(
            NATLab.script, ["impair", NATLab.namespace("cone2"), "--rate", "96kbit", "--queue", "200"])
        #expect(capped.status == 0, "\(capped.error)")
        // One copy up, under the cap, with what every peer reports of his queue well under 100 ms.
        try LabWait.until(.seconds(30), "bob's voice to go up once and fit his uplink, his queue drained") {
            let status = try bob.status()
            guard let rate = status.node.sendRate, rate.fanOut != nil, rate.uplinkKbps <= 96 else { return false }
            return status.peers.allSatisfy { ($0.queueDelayMs ?? 1000) < 100 && $0.state == .up }
        }
        try expectEveryoneHears(nodes, "bob's uplink capped at 96 kbit/s")
        for node in nodes where node.name != "bob" {
            let status = try node.status()
            #expect(
                status.node.sendRate?.limited == false, "\(node.name) sends its full rate\n\(rateMoves(node, status))")
        }
        let removed = try lab.run(NATLab.script, ["unimpair", NATLab.namespace("cone2")])
        #expect(removed.status == 0, "\(removed.error)")
        try LabWait.until(.seconds(60), "bob back at his full rate") {
            try bob.status().node.sendRate?.limited == false
        }
        // The first probe comes 120 s after going up once (the simulator's `BandwidthScenarioTests`
        // has the probes a cap cannot carry).
        let uncapped = ContinuousClock.now
        try LabWait.until(.seconds(135), "bob back to a copy per peer") {
            try bob.status().node.sendRate.map { $0.fanOut == nil } ?? false
        }
        print("uplink cap lifted: a copy per peer again \(ContinuousClock.now - uncapped) later")
        try expectEveryoneHears(nodes, "bob's uplink free again")
        for node in nodes { #expect(node.terminate() == 0) }
    }

    static func suspendAndResume(_ lab: NodeLab) throws {
        let rendezvous = try lab.rendezvous(
            host: "203.0.113.10", port: 7779, arguments: ["--stun-listen", "203.0.113.10:3482"],
            namespace: NATLab.namespace("srv"))
        let invite = try lab.invite(rendezvous: rendezvous.url)
        let placement = ["alice": "pub", "bob": "c1a", "carol": "c2"]
        var nodes: [NodeHandle] = []
        for name in ["alice", "bob", "carol"] {
            var spec = NodeSpec(name: name, input: "tone:\(Int(tones[name]!))", join: invite)
            spec.localAddresses = []
            spec.namespace = NATLab.namespace(placement[name]!)
            spec.waitUntilReady = false
            nodes.append(try lab.node(spec))
        }
        for node in nodes { try node.waitUntilReady() }
        for node in nodes { try node.waitForPeersUp(2, limit: .seconds(45)) }
        let carol = nodes[2]
        let carolID = try carol.status().node.id
        carol.process.signal(SIGSTOP)
        try LabWait.until(.seconds(10), "the others to see carol's links lost") {
            try nodes.prefix(2).allSatisfy { node in
                try node.status().peers.contains { $0.name == "carol" && $0.state != .up }
            }
        }
        LabWait.sleep(for: .seconds(20))  // the lid stays closed this long: the event itself
        carol.process.signal(SIGCONT)
        let resumed = ContinuousClock.now
        for node in nodes { try node.waitForPeersUp(2, limit: .seconds(20)) }
        print("suspend 20 s: every link up again \(ContinuousClock.now - resumed) after SIGCONT")
        let heard = try ListeningWindow(nodes).heard(
            nodes, seconds: 2, tones: tones, threshold: Hearing.expectedPower(dBFS: -10) / 8)
        for name in tones.keys {
            #expect(heard[name] == Set(tones.keys).subtracting([name]), "\(ListeningWindow.describe(heard))")
        }
        // The same member came back (same identity, still in the others' meeting), by itself.
        #expect(try carol.status().node.id == carolID)
        for node in nodes.prefix(2) {
            #expect(try node.status().peers.contains { $0.id == carolID && $0.state == .up })
        }
        #expect(carol.process.standardError.contains("ICE restart"), "carol restarted her links on waking")
        for node in nodes { #expect(node.terminate() == 0) }
    }

    /// A network that lets only HTTPS out (issue 14): carol's router drops everything she sends
    /// but TCP to port 443. The rendezvous listens on 443, and coturn speaks TURN only over TLS on
    /// 443 with a certificate from a CA the nodes are given (`--turn-ca`). carol joins and hears
    /// everyone through TURN over TLS (a local tunnel carries libnice's TURN-over-TCP).
    @Test func aMemberWhoseNetworkPassesOnlyTLSOn443() async throws {
        let lab = try NodeLab("natlab-tls")
        do {
            try await withTimeout(.seconds(150), "the meeting through TURN over TLS") {
                try await runBlocking { try Self.onlyTLS(lab) }
            }
        } catch {
            let coturn = String(LabFilesText.read("\(lab.directory)/coturn-tls.log").suffix(3000))
            Issue.record("\(error)\n\(lab.logs(of: ["alice", "bob", "carol", "rendezvous"]))\n--- coturn\n\(coturn)")
        }
        // cone2 carries UDP again for whatever runs next in the lab (bob's router in the capped uplink).
        for rule in Self.onlyTLSRules {
            _ = try? lab.run(NATLab.iptables, ["-D", "FORWARD"] + rule, namespace: NATLab.namespace("cone2"))
        }
        let left = try? lab.run(NATLab.iptables, ["-S", "FORWARD"], namespace: NATLab.namespace("cone2")).output
        #expect(left?.contains(Self.onlyTLSNetwork) == false, "cone2 still filters: \(left ?? "?")")
        await runBlockingQuietly { lab.shutdown() }
    }

    /// What carol's router forwards in `onlyTLS`: from her network, TCP to port 443 and nothing else.
    static let onlyTLSRules = [
        ["-s", onlyTLSNetwork, "-j", "DROP"], ["-s", onlyTLSNetwork, "-p", "tcp", "--dport", "443", "-j", "ACCEPT"],
    ]
    /// cone2's private network, carol's in `onlyTLS`.
    static let onlyTLSNetwork = "10.12.0.0/24"

    static func onlyTLS(_ lab: NodeLab) throws {
        let server = NATLab.namespace("srv")
        let (key, certificate) = ("\(lab.directory)/turn-key.pem", "\(lab.directory)/turn-cert.pem")
        let made = try lab.run(
            "/usr/bin/openssl",
            [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
                "-subj", "/CN=turn.parley.lab", "-addext", "subjectAltName=IP:203.0.113.11", "-keyout", key, "-out",
                certificate,
            ])
        #expect(made.status == 0, "openssl: \(made.error)")
        let secret = "lab-secret-\(UInt32.random(in: 0...UInt32.max))"
        _ = try lab.spawn(
            "coturn-tls", "/usr/bin/turnserver",
            [
                "-n", "--no-cli", "--no-udp", "--no-tcp", "--no-dtls", "--listening-ip", "203.0.113.11",
                "--relay-ip", "203.0.113.11", "--tls-listening-port", "443", "--cert", certificate, "--pkey", key,
                "--min-port", "51000", "--max-port", "51999", "--use-auth-secret", "--static-auth-secret", secret,
                "--realm", "parley.lab", "--no-multicast-peers", "--userdb", "\(lab.directory)/turndb-tls",
                "--pidfile", "\(lab.directory)/coturn-tls.pid", "--log-file", "\(lab.directory)/coturn-tls.log",
                "--simple-log", "--no-stdout-log",
            ], namespace: server)
        try LabWait.until(.seconds(10), "coturn to listen on 203.0.113.11:443") {
            try lab.run("/usr/bin/ss", ["-lnt"], namespace: server).output.contains("203.0.113.11:443")
        }
        let rendezvous = try lab.rendezvous(
            host: "203.0.113.10", port: 443,
            arguments: ["--turn-secret", secret, "--turn-url", "turns:203.0.113.11:443"], namespace: server)
        let invite = try lab.invite(rendezvous: rendezvous.url)
        // carol's router forwards only TCP to port 443 (replies come back as for any connection).
        for rule in onlyTLSRules {
            let result = try lab.run(
                NATLab.iptables, ["-I", "FORWARD", "1"] + rule, namespace: NATLab.namespace("cone2"))
            #expect(result.status == 0, "iptables \(rule): \(result.error)")
        }
        let placement = ["alice": "pub", "bob": "c1a", "carol": "c2"]
        var nodes: [NodeHandle] = []
        for name in ["alice", "bob", "carol"] {
            var spec = NodeSpec(name: name, input: "tone:\(Int(tones[name]!))", join: invite)
            spec.localAddresses = []
            spec.namespace = NATLab.namespace(placement[name]!)
            spec.arguments = ["--turn-ca", certificate]
            spec.waitUntilReady = false
            nodes.append(try lab.node(spec))
        }
        for node in nodes { try node.waitUntilReady() }
        for node in nodes { try node.waitForPeersUp(2, limit: .seconds(45)) }
        let heard = try ListeningWindow(nodes).heard(
            nodes, seconds: 2, tones: tones, threshold: Hearing.expectedPower(dBFS: -10) / 8)
        for name in tones.keys {
            #expect(heard[name] == Set(tones.keys).subtracting([name]), "\(ListeningWindow.describe(heard))")
        }
        // Nothing but the TLS relay can carry carol's audio.
        for peer in try nodes[2].status().peers {
            #expect(peer.route == "relay", "carol reaches \(peer.name) via \(peer.route ?? "none")")
        }
        for node in nodes { #expect(node.terminate() == 0) }
        #expect(!LabFilesText.read("\(lab.directory)/carol.err").contains(secret))
    }

    static let meshTones: [String: Double] = ["alice": 440, "bob": 660, "carol": 880, "dave": 550]

    /// Drops (`-I`) or stops dropping (`-D`) every packet between the two public members, both
    /// ways, at alice's host (the lab's internet is a bridge that iptables does not see).
    static func cut(_ lab: NodeLab, _ action: String) throws {
        for rule in Self.cutRules {
            let result = try lab.run(NATLab.iptables, [action] + rule, namespace: NATLab.namespace("pub"))
            #expect(result.status == 0, "iptables \(action) \(rule): \(result.error)")
        }
    }

    /// What `cut` adds at the first public host (pub): nothing to or from the second (pub2).
    static let cutRules = [["OUTPUT", "-d", cutHost, "-j", "DROP"], ["INPUT", "-s", cutHost, "-j", "DROP"]]
    /// The second public host's address (pub2, dave's in `selfRepair`).
    static let cutHost = "203.0.113.21"

    /// Why a member's send rate is where it is: its estimate's moves from its log and what each of
    /// its links reports now.
    static func rateMoves(_ node: NodeHandle, _ status: StatusReport) -> String {
        let moves = node.process.standardError.split(separator: "\n").filter { $0.contains("send rate") }.map(
            String.init)
        let links = status.peers.map { peer in
            "\(peer.name): \(peer.state) via \(peer.route ?? "-"), queue \(peer.queueDelayMs.map { "\($0)" } ?? "-") ms, "
                + "loss \(peer.lossPct.map { "\($0)" } ?? "-") %"
        }
        return "estimate \(status.node.sendRate.map { "\($0)" } ?? "none")\n" + (moves + links).joined(separator: "\n")
    }

    /// alice, bob, carol and dave, each sending its tone from its host (`placement`), joined
    /// through a rendezvous (with STUN, no TURN) on the lab's server; returns once every link is up.
    static func meshOfFour(
        _ lab: NodeLab, placement: [String: String], logLevel: String = "info"
    ) throws -> (RendezvousHandle, [NodeHandle]) {
        let rendezvous = try lab.rendezvous(
            host: "203.0.113.10", port: 7778, arguments: ["--stun-listen", "203.0.113.10:3481"],
            namespace: NATLab.namespace("srv"))
        let invite = try lab.invite(rendezvous: rendezvous.url)
        var nodes: [NodeHandle] = []
        for name in ["alice", "bob", "carol", "dave"] {
            var spec = NodeSpec(name: name, input: "tone:\(Int(meshTones[name]!))", join: invite)
            spec.localAddresses = []
            spec.namespace = NATLab.namespace(placement[name]!)
            spec.waitUntilReady = false
            spec.logLevel = logLevel
            nodes.append(try lab.node(spec))
        }
        for node in nodes { try node.waitUntilReady() }
        for node in nodes { try node.waitForPeersUp(3, limit: .seconds(45)) }
        return (rendezvous, nodes)
    }

    static func selfRepair(_ lab: NodeLab) throws {
        let (rendezvous, nodes) = try meshOfFour(
            lab, placement: ["alice": "pub", "dave": "pub2", "bob": "s1", "carol": "s2"])
        let (alice, bob, dave) = (nodes[0], nodes[1], nodes[3])
        try expectEveryoneHears(nodes, "all four joined")
        // Between the symmetric NATs there is no direct path: a public member carries the pair.
        let bobToCarol = try bob.status().peers.first { $0.name == "carol" }
        #expect(bobToCarol?.route == "peer", "bob reaches carol via \(bobToCarol?.route ?? "none")")
        let publicMembers = try [alice, dave].map { try $0.status().node.id }
        #expect(publicMembers.contains(bobToCarol?.via ?? ""), "carried by \(bobToCarol?.via ?? "nobody")")
        // Its traffic is the link's own, though none of it crossed the link's ICE stream.
        #expect(
            (bobToCarol?.rxKbps ?? 0) > 10 && (bobToCarol?.txKbps ?? 0) > 10 && (bobToCarol?.packetsRx ?? 0) > 50,
            "a relayed link shows its traffic: \(String(describing: bobToCarol))")

        // The rendezvous goes away; then the path between alice and dave is cut.
        rendezvous.process.kill9()
        try cut(lab, "-I")
        try LabWait.until(.seconds(15), "alice's link to dave to go through a member") {
            try alice.status().peers.first { $0.name == "dave" }.map { $0.route == "peer" && $0.state == .up } == true
        }
        try expectEveryoneHears(nodes, "the path between alice and dave cut, no rendezvous")

        // The cut heals: the lead's next probe (an ICE restart signaled through the members)
        // finds the direct path again.
        try cut(lab, "-D")
        try LabWait.until(.seconds(30), "alice's link to dave back on its direct path") {
            try alice.status().peers.first { $0.name == "dave" }.map { $0.route != "peer" && $0.state == .up } == true
        }
        try expectEveryoneHears(nodes, "the cut healed")
        #expect(alice.process.standardError.contains("link goes through a member"))
        #expect(alice.process.standardError.contains("link back on its direct path"))
        for node in nodes { #expect(node.terminate() == 0) }
    }

    static func expectEveryoneHears(_ nodes: [NodeHandle], _ when: String) throws {
        let heard = try ListeningWindow(nodes).heard(
            nodes, seconds: 2, tones: meshTones, threshold: Hearing.expectedPower(dBFS: -10) / 8)
        for name in meshTones.keys {
            #expect(
                heard[name] == Set(meshTones.keys).subtracting([name]), "\(when): \(ListeningWindow.describe(heard))")
        }
    }

    static func meeting(_ lab: NodeLab) throws {
        let server = NATLab.namespace("srv")
        let secret = "lab-secret-\(UInt32.random(in: 0...UInt32.max))"
        _ = try lab.spawn(
            "coturn", "/usr/bin/turnserver",
            [
                "-n", "--no-cli", "--no-tls", "--no-dtls", "--listening-ip", "203.0.113.10", "--relay-ip",
                "203.0.113.10", "--listening-port", "3490", "--min-port", "50000", "--max-port", "50999",
                "--use-auth-secret", "--static-auth-secret", secret, "--realm", "parley.lab", "--no-multicast-peers",
                "--userdb", "\(lab.directory)/turndb", "--pidfile", "\(lab.directory)/coturn.pid", "--log-file",
                "\(lab.directory)/coturn.log", "--simple-log", "--no-stdout-log",
            ], namespace: server)
        try LabWait.until(.seconds(10), "coturn to listen on 203.0.113.10:3490") {
            let sockets = try lab.run("/usr/bin/ss", ["-lnu"], namespace: server).output
            return sockets.contains("203.0.113.10:3490")
        }
        let rendezvous = try lab.rendezvous(
            host: "203.0.113.10", port: 7777,
            arguments: [
                "--stun-listen", "203.0.113.10:3480", "--turn-secret", secret, "--turn-url",
                "turn:203.0.113.10:3490?transport=udp",
            ], namespace: server)
        let invite = try lab.invite(rendezvous: rendezvous.url)

        let placement = ["alice": "pub", "bob": "c1a", "carol": "s1"]
        var nodes: [NodeHandle] = []
        for name in ["alice", "bob", "carol"] {
            var spec = NodeSpec(name: name, input: "tone:\(Int(tones[name]!))", join: invite)
            spec.localAddresses = []
            spec.namespace = NATLab.namespace(placement[name]!)
            spec.waitUntilReady = false
            nodes.append(try lab.node(spec))
        }
        for node in nodes { try node.waitUntilReady() }
        for node in nodes { try node.waitForPeersUp(2, limit: .seconds(45)) }

        let heard = try ListeningWindow(nodes).heard(
            nodes, seconds: 2, tones: tones, threshold: Hearing.expectedPower(dBFS: -10) / 8)
        for name in tones.keys {
            #expect(heard[name] == Set(tones.keys).subtracting([name]), "\(ListeningWindow.describe(heard))")
        }

        // Routes as each node sees its peers (`route`: relay if either side relays, else the
        // kind of the peer's candidate): the public node reaches the NATed ones at their mapped
        // (srflx) or learned (prflx) addresses; they reach it at its host address; the cone and
        // the symmetric NAT meet only through the relay.
        let expected: [String: [String: Set<String>]] = [
            "alice": ["bob": ["srflx", "prflx"], "carol": ["prflx"]],
            "bob": ["alice": ["host"], "carol": ["relay"]],
            "carol": ["alice": ["host"], "bob": ["relay"]],
        ]
        for node in nodes {
            let status = try node.statusFromCLI()
            #expect(status.node.rendezvous == .connected)
            for peer in status.peers {
                #expect(peer.state == .up)
                #expect(
                    expected[node.name]?[peer.name]?.contains(peer.route ?? "none") == true,
                    "\(node.name) reaches \(peer.name) via \(peer.route ?? "none")")
                #expect(peer.rttMs != nil, "RTT from REPORT echoes, after 2 s of audio")
            }
        }
        // bob's router gets a new public address (as a DSL reconnect does): every path through
        // it breaks. The leads restart ICE, bob's rendezvous connection comes back, and the
        // links recover with bob's new mapped address — without anyone leaving the meeting.
        let rebound = try lab.run(NATLab.script, ["rebind", NATLab.namespace("cone1")])
        #expect(rebound.status == 0, "\(rebound.error)")
        let newAddress = rebound.output.trimmed
        let bob = nodes[1]
        try LabWait.until(.seconds(10), "a link through bob's router to be noticed broken") {
            try nodes.contains { node in
                try node.status().peers.contains { $0.state != .up && (node.name == "bob" || $0.name == "bob") }
            }
        }
        try LabWait.until(.seconds(40), "the meeting to recover from bob's new address") {
            try nodes.allSatisfy { node in
                let peers = try node.status().peers
                return peers.count == 2 && peers.allSatisfy { $0.state == .up }
            }
        }
        let recovered = try ListeningWindow(nodes).heard(
            nodes, seconds: 2, tones: tones, threshold: Hearing.expectedPower(dBFS: -10) / 8)
        for name in tones.keys {
            #expect(recovered[name] == Set(tones.keys).subtracting([name]), "\(ListeningWindow.describe(recovered))")
        }
        #expect(bob.process.standardError.contains("ICE restart"), "bob's links restarted ICE")
        #expect(!newAddress.isEmpty)
        for node in nodes { #expect(node.terminate() == 0) }
        // TURN credentials and the invite stay out of every log.
        for name in ["alice", "bob", "carol", "rendezvous"] {
            let log = LabFilesText.read("\(lab.directory)/\(name).err")
            #expect(!log.contains(secret) && !log.contains(invite.dropFirst(8).prefix(24)), "\(name)'s log")
        }
    }
}

/// Where the NAT lab is (set by `Scripts/natlab run`).
enum NATLab {
    static var prefix: String? { TestEnvironment.environment("NATLAB_PREFIX") }
    static var script: String { TestEnvironment.environment("NATLAB_SCRIPT") ?? "Scripts/natlab" }
    static func namespace(_ host: String) -> String { "\(prefix ?? "none")-\(host)" }
    static let iptables = "/usr/sbin/iptables"
}

enum LabFilesText {
    static func read(_ path: String) -> String {
        guard let file = fopen(path, "r") else { return "" }
        defer { fclose(file) }
        var text = ""
        var buffer = [CChar](repeating: 0, count: 4096)
        while fgets(&buffer, Int32(buffer.count), file) != nil {
            text += String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        return text
    }
}
