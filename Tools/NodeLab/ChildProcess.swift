import CSpawn
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A child process of a lab (a rendezvous, a daemon, a CLI call) with its standard output and
/// error in files, so a chatty child never blocks on a full pipe and a failed test leaves its
/// logs behind to read.
public final class ChildProcess: Sendable {
    public let name: String
    public let pid: Int32
    public let stdoutPath: String
    public let stderrPath: String
    private let exit = Mutex<Int32?>(nil)

    /// Starts `executable` with `arguments`; the environment is this process's plus `environment`.
    public init(
        name: String, executable: String, arguments: [String], environment: [String: String] = [:],
        stdoutPath: String, stderrPath: String
    ) throws(LabError) {
        self.name = name
        self.stdoutPath = stdoutPath
        self.stderrPath = stderrPath
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdoutPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        // Nothing else is inherited. SwiftNIO accepts connections without close-on-exec, so a child
        // spawned while a test's server holds a connection would keep that socket open after the
        // server closes it: the peer would never see the end (seen as a 10 s hang in CI).
        let closing = parley_spawn_close_from(&actions, 3)
        guard closing == 0 else { throw LabError("cannot set up \(executable): \(String(cString: strerror(closing)))") }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // Its own process group, so a terminal's Ctrl-C reaches the test runner only; the lab
        // stops its children itself.
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attributes, 0)
        var merged: [String: String] = [:]
        var entry = environ
        while let pointer = entry.pointee {
            let text = String(cString: pointer)
            if let equals = text.firstIndex(of: "=") {
                merged[String(text[..<equals])] = String(text[text.index(after: equals)...])
            }
            entry += 1
        }
        for (key, value) in environment { merged[key] = value }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = merged.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var child = pid_t()
        let result = posix_spawn(&child, executable, &actions, &attributes, argv, envp)
        guard result == 0 else {
            throw LabError("cannot start \(executable): \(String(cString: strerror(result)))")
        }
        pid = child
    }

    /// The exit status (the signal number + 128 for a signal) once it exited, else nil.
    public var exitStatus: Int32? {
        exit.withLock { status in
            if let status { return status }
            var raw: Int32 = 0
            let result = waitpid(pid, &raw, WNOHANG)
            guard result == pid else { return nil }
            let code = raw & 0x7f == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
            status = code
            return code
        }
    }

    public var isRunning: Bool { exitStatus == nil }

    public func signal(_ number: Int32) {
        if isRunning { kill(pid, number) }
    }

    /// Waits up to `limit` for the process to exit; its status, or nil if it still runs.
    @discardableResult
    public func wait(upTo limit: Duration) -> Int32? {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if let status = exitStatus { return status }
            usleep(10_000)
        }
        return exitStatus
    }

    /// SIGTERM, then SIGKILL if it has not exited after `grace`. Returns the exit status.
    @discardableResult
    public func terminate(grace: Duration = .seconds(10)) -> Int32 {
        signal(SIGTERM)
        if let status = wait(upTo: grace) { return status }
        signal(SIGKILL)
        return wait(upTo: .seconds(5)) ?? -1
    }

    /// `kill -9`: no goodbye, no cleanup (a crash).
    public func kill9() {
        signal(SIGKILL)
        wait(upTo: .seconds(5))
    }

    public var standardOutput: String { LabFiles.text(stdoutPath) }
    public var standardError: String { LabFiles.text(stderrPath) }
}

/// What went wrong in a lab, in one line.
public struct LabError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Blocking waits with a time limit, for lab code that runs on its own thread.
public enum LabWait {
    /// Polls `condition` until it holds or `limit` passes (then throws, naming `what`).
    public static func until(
        _ limit: Duration, _ what: @autoclosure () -> String, every interval: Duration = .milliseconds(50),
        _ condition: () throws -> Bool
    ) throws {
        let deadline = ContinuousClock.now + limit
        while true {
            if try condition() { return }
            guard ContinuousClock.now < deadline else {
                throw LabError("timed out after \(limit) waiting for \(what())")
            }
            sleep(for: interval)
        }
    }

    /// Lets real time pass (audio to accumulate, a window in which something must NOT happen).
    public static func sleep(for duration: Duration) {
        let (seconds, attoseconds) = duration.components
        var request = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }
}

enum LabFiles {
    static func text(_ path: String) -> String {
        String(decoding: bytes(path) ?? [], as: UTF8.self)
    }

    static func bytes(_ path: String) -> [UInt8]? {
        guard let file = fopen(path, "rb") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = fread(&chunk, 1, chunk.count, file)
            bytes += chunk[0..<count]
            if count < chunk.count { break }
        }
        return bytes
    }

    static func size(_ path: String) -> Int {
        var info = stat()
        return stat(path, &info) == 0 ? Int(info.st_size) : 0
    }
}
