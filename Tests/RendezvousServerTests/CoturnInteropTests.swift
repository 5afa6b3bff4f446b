import Foundation
import ParleyTestSupport
import RendezvousServer
import RendezvousWire
import Sodium
import Testing

/// Against software we did not write: coturn accepts the TURN credentials our WELCOME hands out
/// (its `use-auth-secret` mode), and coturn's STUN client reads our STUN responder.
@Suite(
    "Rendezvous interop with coturn", .serialized,
    .enabled(
        if: TestEnvironment.shouldRun(needing: FileManager.default.isExecutableFile(atPath: "/usr/bin/turnserver")))
)
struct CoturnInteropTests {
    /// Runs a program to completion, off the cooperative pool. Bounded by coreutils' `timeout`
    /// with SIGKILL: coturn's tools ignore SIGTERM and wait forever for an answer that never comes.
    static func run(
        _ path: String, _ arguments: [String], limit: Duration = .seconds(20)
    ) async throws -> (Int32, String) {
        try await RawWebSocket.run {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
            process.arguments = ["-s", "KILL", "\(limit.components.seconds)", path] + arguments
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = pipe
            try process.run()
            let output = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return (process.terminationStatus, String(decoding: output, as: UTF8.self))
        }
    }

    /// A UDP port that was free a moment ago (coturn cannot bind port 0 and report it).
    static func freeUDPPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else { throw RawWebSocket.Failure(description: "no free UDP port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    @Test func coturnAcceptsTheCredentialsWelcomeHandsOut() async throws {
        let secret = "secret-\(UInt64.random(in: 0...UInt64.max))"
        let port = try Self.freeUDPPort()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "rendezvous-coturn-\(getpid())-\(port)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let coturn = Process()
        coturn.executableURL = URL(fileURLWithPath: "/usr/bin/turnserver")
        coturn.arguments = [
            "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", "--listening-port=\(port)",
            "--use-auth-secret", "--static-auth-secret=\(secret)", "--realm=parley.test", "--no-tls", "--no-dtls",
            "--no-cli", "--allow-loopback-peers", "--log-file=stdout", "--pidfile=\(directory.path)/pid",
            "--userdb=\(directory.path)/db",
        ]
        coturn.standardOutput = FileHandle.nullDevice
        coturn.standardError = FileHandle.nullDevice
        try coturn.run()
        defer {
            kill(coturn.processIdentifier, SIGKILL)
            coturn.waitUntilExit()
        }
        // coturn is up when it answers STUN.
        try await waitUntil(.seconds(40), "coturn to answer") {
            try await Self.run("/usr/bin/turnutils_stunclient", ["-p", "\(port)", "127.0.0.1"], limit: .seconds(2)).0
                == 0
        }

        try await withServer({
            $0.turn = .init(secret: Array(secret.utf8), urls: ["turn:127.0.0.1:\(port)?transport=udp"], ttlSeconds: 600)
        }) { _, addresses in
            let member = try TestMember(url: addresses.url, room: .generate())
            let welcome = try await member.joined()
            await member.stop()
            guard case .turn(let credential) = welcome.services.first else {
                Issue.record("no TURN credential"); return
            }
            let allocate = ["-p", "\(port)", "-n", "2", "-m", "1", "-y", "-X", "-u", credential.username]
            let (status, output) = try await Self.run(
                "/usr/bin/turnutils_uclient", allocate + ["-w", credential.password, "127.0.0.1"])
            #expect(status == 0, "coturn refused our credential: \(output.suffix(400))")
            // A wrong password is refused: the test can tell.
            let (refused, _) = try await Self.run(
                "/usr/bin/turnutils_uclient", allocate + ["-w", "x" + credential.password, "127.0.0.1"])
            #expect(refused != 0)
        }
    }

    @Test func coturnsSTUNClientReadsOurResponder() async throws {
        try await withServer({ $0.stunListen = .init(host: "127.0.0.1", port: 0) }) { _, addresses in
            let port = try #require(addresses.stun?.port)
            let (status, output) = try await Self.run("/usr/bin/turnutils_stunclient", ["-p", "\(port)", "127.0.0.1"])
            #expect(status == 0)
            #expect(output.contains("UDP reflexive addr: 127.0.0.1:"), "\(output)")
        }
    }
}
