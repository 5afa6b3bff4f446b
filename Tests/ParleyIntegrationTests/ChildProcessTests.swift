import Foundation
import NodeLab
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Lab children inherit nothing but standard input, output and error: SwiftNIO accepts
/// connections without close-on-exec, and a daemon that inherited a test server's accepted socket
/// would keep the connection open after the server closed it.
struct ChildProcessTests {
    @Test func aChildInheritsOnlyTheStandardDescriptors() throws {
        var pipeEnds: [Int32] = [0, 0]
        #expect(pipe(&pipeEnds) == 0)  // plain pipe(): not close-on-exec
        defer { for end in pipeEnds { close(end) } }
        let directory = FileManager.default.temporaryDirectory.path + "/parley-child-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let child = try ChildProcess(
            name: "sleep", executable: "/bin/sleep", arguments: ["30"], stdoutPath: directory + "/out",
            stderrPath: directory + "/err")
        defer { child.kill9() }
        // Until sleep is in its nanosleep, the dynamic loader and locale set-up briefly hold
        // descriptors of their own (libc.so as 3 was seen in CI), so read the table only then.
        let deadline = ContinuousClock.now + .seconds(10)
        while !((try? String(contentsOfFile: "/proc/\(child.pid)/wchan", encoding: .utf8)) ?? "").contains("nanosleep"),
            ContinuousClock.now < deadline
        {
            usleep(1000)
        }
        let open = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(child.pid)/fd").compactMap(Int32.init)
        #expect(open.sorted() == [0, 1, 2])
    }
}
