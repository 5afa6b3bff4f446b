import ControlAPI
import Foundation
import NodeLab
import ParleyTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Another local user must not get between `parley` and `parleyd` (issue 15, finding 1), tried
/// with two real users: the test runs as root (the victim) and "nobody" (uid 65534) is the
/// attacker, through setpriv(1).
@Suite(
    .serialized,
    .enabled(if: TestEnvironment.shouldRun(needing: NodeLab.binariesBuilt && TestEnvironment.isRoot)))
struct LocalHijackTests {
    static let attacker = ["--reuid=65534", "--regid=65534", "--clear-groups"]

    /// The attacker creates the victim's socket directory world-writable in /tmp before the victim
    /// starts parleyd, then serves its own "daemon" there. parleyd refuses the directory, and
    /// `parley join` refuses to hand the invite to a daemon of another user.
    @Test func anotherUserCannotHijackTheControlSocket() async throws {
        let lab = try NodeLab("hijack")
        let directory = "/tmp/parley-hijack-\(UInt32.random(in: 0...UInt32.max))"
        defer {
            for file in ["parleyd.sock", "received"] { unlink("\(directory)/\(file)") }
            rmdir(directory)
            lab.shutdown()
        }
        let socket = "\(directory)/parleyd.sock"
        try await withTimeout(.seconds(60), "the hijack scenario") {
            try await runBlocking {
                let made = try lab.run("/usr/bin/setpriv", Self.attacker + ["/bin/mkdir", "-m", "0777", directory])
                #expect(made.status == 0, "the attacker made \(directory): \(made.error)")

                // The victim's daemon will not live there.
                let daemon = try lab.run(
                    "parleyd",
                    [
                        "--socket", socket, "--state-dir", "\(lab.directory)/victim-state", "--audio-in", "silence",
                        "--audio-out", "null",
                    ])
                #expect(daemon.status != 0)
                #expect(daemon.error.split(separator: "\n").count == 1, "one line: \(daemon.error)")
                #expect(daemon.error.contains("\(directory) belongs to user 65534, not to you (user 0)"))

                // The attacker's fake daemon records what it is sent and says "joined".
                let fake = try lab.spawn(
                    "attacker", "/usr/bin/setpriv",
                    Self.attacker + ["/usr/bin/python3", "-c", Self.fakeDaemon, socket, "\(directory)/received"])
                try LabWait.until(.seconds(10), "the fake daemon to listen") {
                    if let status = fake.exitStatus { throw LabError("the fake daemon exited (\(status))") }
                    return access(socket, F_OK) == 0
                }
                let invite = try lab.invite(rendezvous: "ws://127.0.0.1:9")
                let join = try lab.run("parley", ["--socket", socket, "join", invite])
                #expect(join.status != 0)
                #expect(join.error.split(separator: "\n").count == 1, "one line: \(join.error)")
                #expect(join.error.contains("is served by user 65534, not by you (user 0)"), "\(join.error)")
                #expect(!join.output.contains("joining") && !join.output.contains("joined"))
                let received = (try? String(contentsOfFile: "\(directory)/received", encoding: .utf8)) ?? ""
                #expect(!received.contains("parley1:"), "the attacker got the invite: \(received)")
            }
        }
    }

    /// Listens on argv[1] (mode 0666), appends every line it is sent to argv[2] and answers as
    /// parleyd would.
    static let fakeDaemon = """
        import os, socket, sys
        s = socket.socket(socket.AF_UNIX)
        s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o666); s.listen()
        while True:
            c, _ = s.accept()
            line = c.makefile("rb").readline()
            with open(sys.argv[2], "ab") as f: f.write(line)
            c.sendall(b'{"ok":true,"message":"joined the meeting"}\\n'); c.close()
        """
}
