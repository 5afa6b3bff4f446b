import ControlAPI
import NodeLab
import ParleyProtocol
import ParleyTestSupport
import RendezvousClient
import Sodium
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What must not work: outsiders in a meeting, and bad input to the executables (each answered
/// with one clear line and a non-zero exit).
@Suite(.serialized, .enabled(if: TestEnvironment.shouldRun(needing: NodeLab.binariesBuilt)))
struct RefusalTests {
    func withLab(_ name: String, _ body: @escaping @Sendable (NodeLab) async throws -> Void) async throws {
        let lab = try NodeLab(name)
        do {
            try await withTimeout(.seconds(120), "the \(name) scenario") { try await body(lab) }
        } catch {
            Issue.record("\(error)\n\(lab.logs(of: ["alice", "bob", "eve", "rendezvous"]))")
        }
        await runBlockingQuietly { lab.shutdown() }
    }

    /// Someone with another room secret (a guessed or stale invite for the same rendezvous) lands
    /// in a different room and meets nobody; and blobs that are not sealed with the room's keys —
    /// from an outsider, or from the rendezvous itself, which can deliver anything to a room it
    /// serves — are dropped without effect.
    @Test func wrongRoomSecretCannotJoinOrInject() async throws {
        try await withLab("outsider") { lab in
            let (invite, alice, bob, eve) = try await runBlocking {
                let rendezvous = try lab.rendezvous()
                let invite = try lab.invite(rendezvous: rendezvous.url)
                let alice = try lab.node(NodeSpec(name: "alice", input: "tone:440", join: invite))
                let bob = try lab.node(NodeSpec(name: "bob", input: "tone:660", join: invite))
                try alice.waitForPeersUp(1)
                try bob.waitForPeersUp(1)
                let wrong = try lab.invite(rendezvous: rendezvous.url)
                let eve = try lab.node(NodeSpec(name: "eve", input: "tone:880", join: wrong))
                try LabWait.until(.seconds(10), "eve to be admitted to her own room") {
                    try eve.status().node.meeting == .inMeeting
                }
                return (invite, alice, bob, eve)
            }

            // Inject: a client admitted to the real room (as the rendezvous could deliver) sends
            // envelopes sealed under another secret, broken envelopes and random bytes.
            let realKeys = RoomKeys(invite: try Invite(parsing: invite))
            let otherKeys = RoomKeys(
                invite: try Invite.mint(rendezvous: try RendezvousURL(parsing: "ws://127.0.0.1:1")))
            let client = RendezvousClient(
                configuration: .init(url: try Invite(parsing: invite).rendezvous), roomKey: realKeys.roomKey)
            let clientTask = Task { try await client.run() }
            defer { clientTask.cancel() }
            try await withTimeout(.seconds(10), "the injector to be admitted") {
                for await event in client.events { if case .joined = event { return } }
            }
            let mallory = NodeIdentity.generate()
            var sequence = UInt64(1)
            func forged(_ message: SignalingMessage) throws -> [UInt8] {
                sequence += 1
                return try Envelope.seal(message, to: .everyone, from: mallory, sequence: sequence, keys: otherKeys)
            }
            let hello = try Hello(identity: mallory.peerIdentity, sessionEpoch: 42, displayName: "alice")
            var garbage = try forged(.hello(hello))
            garbage[40] ^= 0x55
            for payload in [try forged(.hello(hello)), try forged(.bye), garbage, RandomBytes.bytes(count: 553), []] {
                try await client.send(to: .everyone, payload: payload)
            }

            try await runBlocking {
                let window = ListeningWindow([alice, bob, eve])
                let heard = try window.heard(
                    [alice, bob, eve], seconds: 3, tones: MeetingTests.tones, threshold: MeetingTests.threshold)
                #expect(heard["alice"] == ["bob"] && heard["bob"] == ["alice"], "\(ListeningWindow.describe(heard))")
                #expect(heard["eve"] == [], "eve hears nobody")
                for node in [alice, bob] {
                    let peers = try node.status().peers
                    #expect(peers.map(\.name) == [node.name == "alice" ? "bob" : "alice"])
                    #expect(peers.allSatisfy { $0.state == .up })
                }
                #expect(try eve.status().peers.isEmpty)
            }
        }
    }

    /// The invite is the meeting's only secret: at the chattiest log level, joining with it at
    /// start (the daemon logged `NodeService(…initialInvite: "parley1:…")` at debug) and meeting
    /// someone write it nowhere but where the user asked for it (issue 15, finding 8).
    @Test func theInviteNeverReachesTheLogs() async throws {
        try await withLab("secrets") { lab in
            try await runBlocking {
                let rendezvous = try lab.rendezvous(arguments: ["--log-level", "trace"])
                let invite = try lab.invite(rendezvous: rendezvous.url)
                var spec = NodeSpec(name: "alice", input: "silence", join: invite)
                spec.output = "null"
                spec.logLevel = "trace"
                let alice = try lab.node(spec)
                var bobSpec = NodeSpec(name: "bob", input: "silence")
                bobSpec.output = "null"
                bobSpec.logLevel = "trace"
                let bob = try lab.node(bobSpec)
                let joined = try bob.parley(["join", invite])
                #expect(joined.status == 0, "\(joined.error)")
                try alice.waitForPeersUp(1)
                try bob.waitForPeersUp(1)
                #expect(alice.terminate() == 0 && bob.terminate() == 0)
                let secret = String(invite.dropFirst("parley1:".count))
                for (name, text) in [
                    ("alice", alice.process.standardError + alice.process.standardOutput),
                    ("bob", bob.process.standardError + bob.process.standardOutput),
                    ("rendezvous", rendezvous.process.standardError),
                ] {
                    #expect(text.count > 1000, "\(name) logged at trace level")
                    #expect(!text.contains(secret), "\(name)'s output holds the invite")
                }
            }
        }
    }

    @Test func badInputGetsOneClearLine() async throws {
        try await withLab("input") { lab in
            try await runBlocking {
                func expectOneLine(
                    _ tool: String, _ arguments: [String], saying fragment: String,
                    sourceLocation: SourceLocation = #_sourceLocation
                ) throws {
                    let result = try lab.run(tool, arguments)
                    let lines = result.error.split(separator: "\n")
                    #expect(result.status != 0, "\(tool) \(arguments) exits non-zero", sourceLocation: sourceLocation)
                    #expect(lines.count == 1, "one line, got: \(result.error)", sourceLocation: sourceLocation)
                    #expect(
                        lines.first?.contains(fragment) == true, "\(result.error) should say \(fragment)",
                        sourceLocation: sourceLocation)
                }
                let missing = "\(lab.directory)/nobody/parleyd.sock"
                // Malformed invites, with or without a daemon.
                try expectOneLine("parley", ["join", "hello", "--socket", missing], saying: "not a Parley invite")
                try expectOneLine("parley", ["join", "parley1:abcd", "--socket", missing], saying: "invalid invite")
                try expectOneLine("parley", ["join", "parley2:abcd", "--socket", missing], saying: "update Parley")
                let invite = try lab.invite(rendezvous: "ws://127.0.0.1:9")
                var typo = Array(invite)
                typo[20] = typo[20] == "a" ? "b" : "a"
                try expectOneLine("parley", ["join", String(typo), "--socket", missing], saying: "checksum")
                try expectOneLine("parleyd", ["--join", "nonsense", "--socket", missing], saying: "invalid invite")
                // Unknown flags and commands.
                try expectOneLine("parley", ["--bogus"], saying: "--bogus")
                try expectOneLine("parley", ["frobnicate"], saying: "frobnicate")
                try expectOneLine("parleyd", ["--bogus"], saying: "--bogus")
                try expectOneLine("parleyd", ["--host", "--join", invite], saying: "--host or --join")
                try expectOneLine("parleyd", ["--local-address", "localhost"], saying: "IP address")
                try expectOneLine(
                    "parleyd",
                    ["--audio-in", "wav:\(lab.directory)/missing.wav", "--audio-out", "null", "--socket", missing],
                    saying: "missing.wav")
                try expectOneLine("parley", ["invite", "--rendezvous", "http://example.org"], saying: "rendezvous")
                try expectOneLine(
                    "parley", ["invite", "--rendezvous", "wss://example.org", "--tls-pin", "12"], saying: "64 hex")
                // Numbers and files each flag refuses in its own words (issue 15, finding 12).
                let silent = ["--audio-in", "silence", "--audio-out", "null", "--socket", missing]
                try expectOneLine(
                    "parleyd", ["--frame-ms", "7"] + silent, saying: "--frame-ms must be 10, 20 or 40, got 7")
                try expectOneLine(
                    "parleyd", ["--bitrate", "-5"] + silent,
                    saying: "--bitrate must be 6000 to 510000 bits per second, got -5")
                try expectOneLine(
                    "parleyd", ["--complexity", "-1"] + silent, saying: "--complexity must be 0 to 10, got -1")
                try expectOneLine(
                    "parleyd", ["--relay-pairs", "99"] + silent, saying: "--relay-pairs must be 0 to 64, got 99")
                try expectOneLine("parleyd", ["--complexity", "ten"], saying: "'ten' is invalid for '--complexity")
                try expectOneLine("parleyd", ["--stun", "[::1"], saying: "--stun wants HOST:PORT")
                try expectOneLine(
                    "parleyd", ["--turn", "http://relay", "--turn-user", "u", "--turn-pass", "p"],
                    saying: "--turn http://relay")
                try expectOneLine(
                    "parleyd", ["--turn-ca", "/etc/passwd"] + silent, saying: "--turn-ca /etc/passwd: ")
                try expectOneLine("parleyd", ["--name", " "] + silent, saying: "invalid --name")
                try expectOneLine(
                    "parleyd", ["--state-dir", "/etc/passwd"] + silent,
                    saying: "/etc/passwd exists and is not a directory")
                let junk = "\(lab.directory)/junk"
                try expectOneLine(
                    "parley-rendezvous", ["--listen", "127.0.0.1:0", "--tls-cert", junk, "--tls-key", junk],
                    saying: "cannot read a PEM certificate from \(junk): No such file or directory")
                #expect(creat(junk, 0o600) >= 0)
                try expectOneLine(
                    "parley-rendezvous", ["--listen", "127.0.0.1:0", "--tls-cert", junk, "--tls-key", junk],
                    saying: "cannot read a PEM certificate from \(junk): not PEM")
                try expectOneLine(
                    "parley-rendezvous",
                    [
                        "--listen", "127.0.0.1:0", "--tls-cert", Self.fixtures + "/test-cert.pem", "--tls-key",
                        Self.fixtures + "/other-host-key.pem",
                    ], saying: "does not belong to the certificate in")
                try expectOneLine(
                    "parley-rendezvous",
                    ["--listen", "127.0.0.1:0", "--tls-cert", Self.fixtures + "/test-cert.pem", "--tls-key", junk],
                    saying: "cannot read a PEM private key from \(junk): not PEM")
                try expectOneLine(
                    "parley-rendezvous", ["--max-members", "17"], saying: "members per room must be 2…16")
                try expectOneLine("parley-rendezvous", ["--turn-ttl", "-5"], saying: "'-5' is invalid for '--turn-ttl")
                try expectOneLine(
                    "parley-rendezvous", ["--going-away-retry-ms", "-1"], saying: "--going-away-retry-ms")
                try expectOneLine("parley-rendezvous", ["--idle-timeout", "1"], saying: "idle timeout must be longer")
                try expectOneLine("parley-rendezvous", ["--listen", "nowhere"], saying: "--listen wants HOST:PORT")
                try expectOneLine("parley-rendezvous", ["--bogus"], saying: "--bogus")

                // No daemon, and a socket a dead daemon left behind.
                try expectOneLine("parley", ["status", "--socket", missing], saying: "parleyd is not running")
                let stale = "\(lab.directory)/stale.sock"
                try Self.leaveStaleSocket(at: stale)
                try expectOneLine("parley", ["status", "--socket", stale], saying: "stale socket")
                // The global form of --socket works too.
                try expectOneLine("parley", ["--socket", stale, "status"], saying: "stale socket")

                // And a valid invite from `parley invite` parses.
                #expect(invite.hasPrefix("parley1:"))
                #expect((try? Invite(parsing: invite)) != nil)
            }
        }
    }

    /// SIGTERM ends a daemon within 2 s whatever its rendezvous does: here it refuses every
    /// connection, so the daemon started with --join is still waiting to be admitted (it used to
    /// wait forever, and only SIGKILL stopped it).
    @Test func stoppingWorksWhileTheRendezvousIsUnreachable() async throws {
        try await withLab("stop") { lab in
            let invite = try lab.invite(rendezvous: "ws://127.0.0.1:9")
            let node = try lab.node(NodeSpec(name: "alice", input: "silence", join: invite))
            try LabWait.until(.seconds(10), "alice to try the rendezvous") {
                node.process.standardError.contains("joining")
            }
            let asked = ContinuousClock.now
            node.process.signal(SIGTERM)
            let status = node.process.wait(upTo: .seconds(5))
            let took = ContinuousClock.now - asked
            #expect(status == 0, "exit status \(status.map(String.init) ?? "none: still running")")
            #expect(took < .seconds(2), "stopped after \(took)")
            #expect(node.process.standardError.contains("left the meeting"))
        }
    }

    static let fixtures: String = {
        var path = "\(#filePath)".split(separator: "/", omittingEmptySubsequences: false)
        path.removeLast(2)
        return path.joined(separator: "/") + "/Fixtures/rendezvous"
    }()

    /// A Unix socket file with nobody listening: what a crashed daemon leaves.
    static func leaveStaleSocket(at path: String) throws {
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw LabError("socket() failed") }
        defer { close(descriptor) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { destination in
            for (index, byte) in path.utf8.enumerated() { destination[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0 else { throw LabError("bind(\(path)) failed") }
    }
}

/// Runs blocking cleanup off the concurrency pool, ignoring errors.
func runBlockingQuietly(_ work: @escaping @Sendable () -> Void) async {
    _ = try? await runBlocking { work() }
}
