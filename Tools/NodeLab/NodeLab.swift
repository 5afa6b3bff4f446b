public import ControlAPI
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A meeting on this machine made of the real executables: `parley-rendezvous`, `parleyd` and
/// `parley`, each a separate process, talking over 127.0.0.1 (or inside NAT lab namespaces).
/// Every process lives in a private temporary directory (sockets, state, WAV files, logs) and
/// `shutdown()` stops all of them — call it in a `defer`.
public final class NodeLab: Sendable {
    public let directory: String
    /// Where the executables are (the directory of the running test or benchmark binary, which
    /// SwiftPM builds next to them; `PARLEY_BIN_DIR` overrides).
    public let binaries: String
    private let children = Mutex<[ChildProcess]>([])

    /// `tools`: the executables this lab runs, which must be built (a benchmark of the
    /// rendezvous alone needs no `parleyd`).
    public init(_ name: String, tools: [String] = ["parleyd", "parley", "parley-rendezvous"]) throws(LabError) {
        var template = Array("/tmp/parley-lab-\(name)-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw LabError("cannot create a lab directory: \(String(cString: strerror(errno)))")
        }
        directory = String(cString: made)
        binaries = Self.binaryDirectory
        for tool in tools where access("\(binaries)/\(tool)", X_OK) != 0 {
            throw LabError("\(binaries)/\(tool) is not built (swift build)")
        }
    }

    /// The directory holding this process's executable, or `PARLEY_BIN_DIR`.
    public static var binaryDirectory: String {
        if let override = getenv("PARLEY_BIN_DIR").map({ String(cString: $0) }), !override.isEmpty { return override }
        var buffer = [CChar](repeating: 0, count: 4096)
        let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard length > 0 else { return "." }
        let path = String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)])
    }

    /// Whether the executables the lab runs are there (tests skip without them outside CI).
    public static var binariesBuilt: Bool {
        ["parleyd", "parley", "parley-rendezvous"].allSatisfy { access("\(binaryDirectory)/\($0)", X_OK) == 0 }
    }

    /// Starts a process and keeps it for `shutdown`. `namespace`: run it inside that network
    /// namespace (`ip netns exec`, which execs in place, so the pid is the program's).
    /// `niceness`: run it at that scheduling priority (`nice -n`, which also execs in place): a
    /// lab's simulated servers and crowds yield the CPU to the meeting's nodes, which in life run
    /// on other machines than they do.
    public func spawn(
        _ name: String, _ tool: String, _ arguments: [String], namespace: String? = nil,
        environment: [String: String] = [:], niceness: Int? = nil
    ) throws(LabError) -> ChildProcess {
        var executable = tool.hasPrefix("/") ? tool : "\(binaries)/\(tool)"
        var arguments = arguments
        if let niceness {
            arguments = ["-n", "\(niceness)", executable] + arguments
            executable = "/usr/bin/nice"
        }
        let (program, argv) =
            namespace.map { ("/usr/sbin/ip", ["netns", "exec", $0, executable] + arguments) } ?? (executable, arguments)
        let child = try ChildProcess(
            name: name, executable: program, arguments: argv, environment: environment,
            stdoutPath: "\(directory)/\(name).out", stderrPath: "\(directory)/\(name).err")
        children.withLock { $0.append(child) }
        return child
    }

    /// Runs a command to completion (at most `limit`).
    public func run(
        _ tool: String, _ arguments: [String], limit: Duration = .seconds(20), namespace: String? = nil
    ) throws(LabError) -> CommandResult {
        let name = "cmd-\(UInt32.random(in: 0...UInt32.max))"
        let child = try spawn(name, tool, arguments, namespace: namespace)
        guard let status = child.wait(upTo: limit) else {
            child.kill9()
            throw LabError("\(tool) \(arguments.joined(separator: " ")) did not finish within \(limit)")
        }
        defer {
            unlink(child.stdoutPath)
            unlink(child.stderrPath)
            children.withLock { $0.removeAll { $0 === child } }
        }
        return CommandResult(status: status, output: child.standardOutput, error: child.standardError)
    }

    // MARK: Meeting parts

    /// A new invite, minted as a user mints one: `parley invite --rendezvous URL [--tls-pin HEX]`.
    public func invite(rendezvous url: String, tlsPin: String? = nil) throws -> String {
        let result = try run("parley", ["invite", "--rendezvous", url] + (tlsPin.map { ["--tls-pin", $0] } ?? []))
        guard result.status == 0, let line = result.output.split(separator: "\n").first else {
            throw LabError("parley invite --rendezvous \(url) failed (\(result.status)): \(result.error.lastLine)")
        }
        return String(line)
    }

    /// `parley-rendezvous` on `host:port` (port 0: a free one); waits for its "listening" line.
    public func rendezvous(
        name: String = "rendezvous", host: String = "127.0.0.1", port: Int = 0, arguments: [String] = [],
        namespace: String? = nil, niceness: Int? = nil
    ) throws -> RendezvousHandle {
        let child = try spawn(
            name, "parley-rendezvous", ["--listen", "\(host):\(port)"] + arguments, namespace: namespace,
            niceness: niceness)
        var url = ""
        try LabWait.until(.seconds(20), "\(name) to listen") {
            if let exit = child.exitStatus {
                throw LabError("\(name) exited (\(exit)): \(child.standardError.lastLine)")
            }
            guard let line = child.standardOutput.split(separator: "\n").first(where: { $0.contains("listening on") })
            else { return false }
            url = String(line.split(separator: " ").last ?? "")
            return true
        }
        return RendezvousHandle(process: child, url: url)
    }

    /// Starts a `parleyd` and waits until its control socket answers.
    public func node(_ spec: NodeSpec) throws -> NodeHandle {
        let socket = "\(directory)/\(spec.name).sock"
        let wav = "\(directory)/\(spec.name)-heard.wav"
        var arguments = [
            "--socket", socket, "--state-dir", spec.stateDirectory ?? "\(directory)/\(spec.name)-state", "--name",
            spec.name, "--log-level", spec.logLevel,
        ]
        if let input = spec.input { arguments += ["--audio-in", input] }
        if let output = spec.output ?? (spec.input == nil ? nil : "wav:\(wav)") {
            arguments += ["--audio-out", output]
        }
        for address in spec.localAddresses { arguments += ["--local-address", address] }
        if let invite = spec.join { arguments += ["--join", invite] }
        if spec.host { arguments += ["--host", "--listen", spec.listen] }
        arguments += spec.arguments
        let child = try spawn(spec.name, "parleyd", arguments, namespace: spec.namespace, environment: spec.environment)
        let node = NodeHandle(lab: self, name: spec.name, socket: socket, wav: wav, process: child)
        if spec.waitUntilReady { try node.waitUntilReady() }
        return node
    }

    /// Stops every process still running (SIGTERM, then SIGKILL) and removes the directory,
    /// unless `keep` (or `PARLEY_KEEP_LAB=1`), so a failure can be read.
    public func shutdown(keep: Bool = false) {
        let running = children.withLock { children in
            defer { children = [] }
            return children
        }
        for child in running where child.isRunning { child.signal(SIGTERM) }
        for child in running where child.wait(upTo: .seconds(8)) == nil { child.kill9() }
        if keep || getenv("PARLEY_KEEP_LAB").map({ String(cString: $0) }) == "1" {
            print("lab kept: \(directory)")
            return
        }
        Self.removeTree(directory)
    }

    /// `rm -r` of a directory the lab made (no symlinks are followed: lstat).
    static func removeTree(_ path: String) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        if info.st_mode & S_IFMT == S_IFDIR, let directory = opendir(path) {
            var names: [String] = []
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
                }
                if name != "." && name != ".." { names.append(name) }
            }
            closedir(directory)
            for name in names { removeTree(path + "/" + name) }
            rmdir(path)
        } else {
            unlink(path)
        }
    }

    /// Every process's error log, for a failure message.
    public func logs(of names: [String]) -> String {
        names.map { "--- \($0)\n" + LabFiles.text("\(directory)/\($0).err").suffix(4000) }.joined(separator: "\n")
    }
}

/// What `NodeLab.node` starts.
public struct NodeSpec: Sendable {
    public var name: String
    /// `--audio-in`: `tone:HZ`, `wav:PATH`, `silence`; nil: parleyd's default (PulseAudio), and
    /// then also its default output unless `output` is given.
    public var input: String?
    /// `--audio-out`; nil: a WAV file in the lab (`NodeHandle.wav`).
    public var output: String?
    /// Added to the daemon's environment (e.g. `PULSE_SOURCE`, `PULSE_SINK`, `PULSE_SERVER`).
    public var environment: [String: String] = [:]
    public var join: String?
    public var host = false
    public var listen = "127.0.0.1:0"
    public var localAddresses = ["127.0.0.1"]
    /// `--state-dir` (identity and pins); nil: one per name in the lab.
    public var stateDirectory: String?
    public var namespace: String?
    public var logLevel = "info"
    public var arguments: [String] = []
    public var waitUntilReady = true

    public init(name: String, input: String?, join: String? = nil) {
        self.name = name
        self.input = input
        self.join = join
    }
}

public struct RendezvousHandle: Sendable {
    public let process: ChildProcess
    /// `ws://127.0.0.1:PORT/`
    public let url: String

    public var port: Int { Int(url.split(separator: ":").last?.filter(\.isNumber) ?? "") ?? 0 }
}

public struct CommandResult: Sendable {
    public let status: Int32
    public let output: String
    public let error: String
}

/// One running `parleyd`.
public final class NodeHandle: Sendable {
    public let name: String
    public let socket: String
    /// The WAV file its speaker writes (what it heard).
    public let wav: String
    public let process: ChildProcess
    private let lab: NodeLab

    init(lab: NodeLab, name: String, socket: String, wav: String, process: ChildProcess) {
        self.lab = lab
        self.name = name
        self.socket = socket
        self.wav = wav
        self.process = process
    }

    public var client: ControlClient { ControlClient(path: socket, timeoutSeconds: 10) }

    public func waitUntilReady(limit: Duration = .seconds(30)) throws {
        try LabWait.until(limit, "\(name)'s control socket") {
            if let exit = process.exitStatus {
                throw LabError("\(name) exited (\(exit)): \(process.standardError.lastLine)")
            }
            return (try? client.send(ControlRequest(.status))) != nil
        }
    }

    /// `parley status` through the control API.
    public func status() throws -> StatusReport {
        guard let status = try client.send(ControlRequest(.status)).status else { throw LabError("no status") }
        return status
    }

    /// Runs the real `parley` CLI against this daemon.
    public func parley(_ arguments: [String], limit: Duration = .seconds(20)) throws(LabError) -> CommandResult {
        try lab.run("parley", arguments + ["--socket", socket], limit: limit)
    }

    /// Starts `parley watch` (`--json`: one event per line) on this daemon and returns once it is
    /// subscribed, so that it sees every event from then on.
    public func watch(json: Bool = true, limit: Duration = .seconds(20)) throws -> ChildProcess {
        let watch = try lab.spawn("\(name)-watch", "parley", ["watch", "--socket", socket] + (json ? ["--json"] : []))
        try LabWait.until(limit, "\(name)'s `parley watch` to subscribe") {
            if let exit = watch.exitStatus {
                throw LabError("\(name)'s `parley watch` exited (\(exit)): \(watch.standardError.lastLine)")
            }
            return watch.standardError.contains("parley watch: following ")
        }
        return watch
    }

    /// `parley status --json`, decoded.
    public func statusFromCLI() throws -> StatusReport {
        let result = try parley(["status", "--json"])
        guard result.status == 0 else { throw LabError("parley status failed: \(result.error)") }
        return try ControlCodec.decode(StatusReport.self, from: Array(result.output.utf8))
    }

    /// The invite a `--host` node printed as its first line.
    public func hostedInvite(limit: Duration = .seconds(20)) throws -> String {
        var invite = ""
        try LabWait.until(limit, "\(name)'s invite") {
            guard let line = process.standardOutput.split(separator: "\n").first, line.hasPrefix("parley1:") else {
                return false
            }
            invite = String(line)
            return true
        }
        return invite
    }

    /// Waits until this node has `count` peers whose links are `up` (and only those, unless
    /// `exactly` is false).
    public func waitForPeersUp(_ count: Int, limit: Duration = .seconds(30), exactly: Bool = true) throws {
        try LabWait.until(limit, "\(name) to have \(count) peers up") {
            let peers = try status().peers
            let up = peers.filter { $0.state == .up }.count
            return up == count && (!exactly || peers.count == count)
        }
    }

    /// Samples written to the WAV output so far.
    public var samplesHeard: Int { max(0, (LabFiles.size(wav) - 44) / 2) }

    public func terminate() -> Int32 { process.terminate() }
}

extension String {
    /// The last line of a process's output (its error message, for a process that failed).
    public var lastLine: String { split(separator: "\n").last.map(String.init) ?? "" }
}
