import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Several `parley-rendezvous` instances behind the real nginx or HAProxy on 127.0.0.1, set up
/// with the very files operators install (`Scripts/deploy/`), rendered with this lab's ports and
/// certificate. Each instance trusts the balancer's report of client addresses and serves
/// Prometheus metrics, so a test can see which rooms live where.
public final class BalancedRendezvous: Sendable {
    public enum Balancer: String, Sendable, CaseIterable {
        case nginx, haproxy

        public var executable: String { self == .nginx ? "/usr/sbin/nginx" : "/usr/sbin/haproxy" }
        public var isInstalled: Bool { access(executable, X_OK) == 0 }
    }

    public struct Options: Sendable {
        public var instances = 3
        /// PEM certificate and key: TLS at the balancer (`wss://`); nil: plain `ws://`.
        public var certificate: String?
        public var privateKey: String?
        /// More `parley-rendezvous` flags for every instance.
        public var instanceArguments: [String] = []
        /// nginx worker processes and their connection (HAProxy: `maxconn`) and open-file limits
        /// (nil: nginx's own).
        public var workers = 2
        public var workerConnections = 4096
        public var workerOpenFiles: Int?
        /// Scheduling priority of the instances and the balancer (`nice -n`; nil: as this process).
        public var niceness: Int?

        public init() {}
    }

    public struct Instance: Sendable {
        public let process: ChildProcess
        public let port: Int
        public let metricsPort: Int
    }

    public let balancer: Balancer
    public let process: ChildProcess
    public let port: Int
    /// `wss://127.0.0.1:PORT` with a certificate, else `ws://…`: what invites name.
    public let url: String
    /// `ws://127.0.0.1:PORT`: the same balancer without TLS (with a certificate, a second
    /// listener), for load that would otherwise measure TLS handshakes (in a debug build, tens of
    /// milliseconds of CPU each).
    public let plainURL: String
    private let lab: NodeLab
    private let options: Options
    private let running: Mutex<[Instance]>
    private let restarts = Mutex(0)

    /// Where the shipped configurations are (this checkout's `Scripts/deploy`).
    public static let deployDirectory: String = {
        // Tools/NodeLab/BalancedRendezvous.swift → package root.
        var path = "\(#filePath)".split(separator: "/", omittingEmptySubsequences: false)
        path.removeLast(3)
        return path.joined(separator: "/") + "/Scripts/deploy"
    }()

    public init(lab: NodeLab, balancer: Balancer, options: Options = Options()) throws {
        self.lab = lab
        self.balancer = balancer
        self.options = options
        var instances: [Instance] = []
        for index in 0..<options.instances {
            let instancePort = try LabNetwork.freePort()
            instances.append(
                try Self.startInstance(
                    lab, name: "rendezvous-\(index + 1)", port: instancePort,
                    metricsPort: try LabNetwork.freePort(excluding: [instancePort]), options: options))
        }
        running = Mutex(instances)
        port = try LabNetwork.freePort()
        let tls = options.certificate != nil
        // nginx's two listeners are bound together: equal draws made it refuse to start.
        let plainPort = tls ? try LabNetwork.freePort(excluding: [port]) : port
        url = "\(tls ? "wss" : "ws")://127.0.0.1:\(port)"
        plainURL = "ws://127.0.0.1:\(plainPort)"
        let listeners = Listeners(tls: tls ? port : nil, plain: plainPort)
        let ports = instances.map(\.port)
        switch balancer {
        case .nginx:
            let site = try Self.renderNginx(
                try Self.read("\(Self.deployDirectory)/nginx-rendezvous.conf"), listeners: listeners,
                instancePorts: ports, certificate: options.certificate, key: options.privateKey)
            try Self.write("\(lab.directory)/parley-rendezvous.conf", site)
            try Self.write("\(lab.directory)/nginx.conf", Self.nginxMain(lab.directory, options))
            process = try lab.spawn(
                "nginx", balancer.executable,
                ["-p", lab.directory, "-c", "\(lab.directory)/nginx.conf", "-e", "\(lab.directory)/nginx-error.log"],
                niceness: options.niceness)
        case .haproxy:
            var pem: String?
            if let certificate = options.certificate, let key = options.privateKey {
                pem = "\(lab.directory)/haproxy.pem"
                try Self.write(pem!, try Self.read(certificate) + Self.read(key))
            }
            let configuration = try Self.renderHAProxy(
                try Self.read("\(Self.deployDirectory)/haproxy-rendezvous.cfg"), listeners: listeners,
                instancePorts: ports, pem: pem, maxConnections: options.workerConnections)
            try Self.write("\(lab.directory)/haproxy.cfg", configuration)
            process = try lab.spawn(
                "haproxy", balancer.executable, ["-f", "\(lab.directory)/haproxy.cfg", "-db"],
                niceness: options.niceness)
        }
        let (process, name) = (process, balancer.rawValue)
        try LabWait.until(.seconds(20), "\(name) to listen on \(port)") {
            if let status = process.exitStatus {
                throw LabError("\(name) exited (\(status)): \(process.standardError.lastLine)")
            }
            return [listeners.tls, listeners.plain].compactMap { $0 }.allSatisfy { LabNetwork.accepts(port: $0) }
        }
    }

    public var instances: [Instance] { running.withLock { $0 } }

    /// `kill -9` of instance `index` (a crash: its clients see their connections drop).
    public func kill9(_ index: Int) {
        running.withLock { $0[index] }.process.kill9()
    }

    /// Starts instance `index` again on its ports (after `kill9`).
    public func restart(_ index: Int) throws {
        let old = instances[index]
        let count = restarts.withLock { count in
            count += 1
            return count
        }
        let instance = try Self.startInstance(
            lab, name: "rendezvous-\(index + 1)-restart-\(count)", port: old.port, metricsPort: old.metricsPort,
            options: options)
        running.withLock { $0[index] = instance }
    }

    /// Instance `index`'s Prometheus samples.
    public func metrics(_ index: Int) throws -> [String: Double] {
        PrometheusText.samples(try LabNetwork.get(port: instances[index].metricsPort, path: "/metrics"))
    }

    /// Rooms (with at least one member) on each instance; a dead one counts 0.
    public func roomsPerInstance() -> [Int] {
        instances.indices.map { index in
            guard instances[index].process.isRunning, let samples = try? metrics(index) else { return 0 }
            return Int(samples["parley_rendezvous_rooms"] ?? 0)
        }
    }

    /// Members on each instance; a dead one counts 0.
    public func membersPerInstance() -> [Int] {
        instances.indices.map { index in
            guard instances[index].process.isRunning, let samples = try? metrics(index) else { return 0 }
            return Int(samples["parley_rendezvous_members"] ?? 0)
        }
    }

    // MARK: Instances

    private static func startInstance(
        _ lab: NodeLab, name: String, port: Int, metricsPort: Int, options: Options
    ) throws -> Instance {
        let handle = try lab.rendezvous(
            name: name, port: port,
            arguments: ["--metrics-listen", "127.0.0.1:\(metricsPort)", "--trusted-proxy", "127.0.0.1"]
                + options.instanceArguments, niceness: options.niceness)
        return Instance(process: handle.process, port: handle.port, metricsPort: metricsPort)
    }

    // MARK: Rendering the shipped configurations

    /// Where the balancer listens: with TLS (if a certificate is given) and without.
    struct Listeners {
        let tls: Int?
        let plain: Int
    }

    /// Lines of a shipped configuration to change: every line that starts (after its indentation)
    /// with `prefix` becomes `replace(indentation, line, isFirst)`. A lab that finds no such line
    /// fails: a test of a file that no longer has the lines it looks for would test nothing.
    struct Rewrite {
        let prefix: String
        var required = true
        let replace: (_ indent: String, _ text: Substring, _ isFirst: Bool) -> [String]
    }

    static func render(_ template: String, named name: String, _ rewrites: [Rewrite]) throws -> String {
        var seen: Set<String> = []
        var lines: [String] = []
        for line in template.split(separator: "\n", omittingEmptySubsequences: false) {
            let indent = String(line.prefix { $0 == " " })
            let text = line.drop { $0 == " " }
            guard let rewrite = rewrites.first(where: { text.hasPrefix($0.prefix) }) else {
                lines.append(String(line))
                continue
            }
            lines += rewrite.replace(indent, text, seen.insert(rewrite.prefix).inserted)
        }
        let missing = rewrites.filter { $0.required && !seen.contains($0.prefix) }.map(\.prefix)
        guard missing.isEmpty else { throw LabError("Scripts/deploy/\(name) has no line starting \(missing)") }
        return lines.joined(separator: "\n")
    }

    /// The shipped nginx site with this lab's listen ports, certificate and instances.
    static func renderNginx(
        _ template: String, listeners: Listeners, instancePorts: [Int], certificate: String?, key: String?
    ) throws -> String {
        try render(
            template, named: "nginx-rendezvous.conf",
            [
                Rewrite(prefix: "listen 443 ssl;") { indent, _, _ in
                    (listeners.tls.map { ["\(indent)listen 127.0.0.1:\($0) ssl reuseport;"] } ?? [])
                        + ["\(indent)listen 127.0.0.1:\(listeners.plain) reuseport;"]
                },
                Rewrite(prefix: "listen [::]:443", required: false) { _, _, _ in [] },
                Rewrite(prefix: "ssl_certificate ") { indent, _, _ in
                    certificate.map { ["\(indent)ssl_certificate \($0);"] } ?? []
                },
                Rewrite(prefix: "ssl_certificate_key ") { indent, _, _ in
                    key.map { ["\(indent)ssl_certificate_key \($0);"] } ?? []
                },
                Rewrite(prefix: "server 127.0.0.1:770") { indent, text, isFirst in
                    let flags = text.drop { $0 != " " }.dropFirst().drop { $0 != " " }  // after the address
                    return isFirst ? instancePorts.map { "\(indent)server 127.0.0.1:\($0)\(flags)" } : []
                },
            ])
    }

    /// The main nginx configuration around the site: everything in the lab directory.
    static func nginxMain(_ directory: String, _ options: Options) -> String {
        let temporary = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map {
            "    \($0)_temp_path \(directory)/nginx-\($0);"
        }
        return """
            daemon off;
            worker_processes \(options.workers);
            \(options.workerOpenFiles.map { "worker_rlimit_nofile \($0);" } ?? "")
            pid \(directory)/nginx.pid;
            events { worker_connections \(options.workerConnections); }
            http {
            \(temporary.joined(separator: "\n"))
                include \(directory)/parley-rendezvous.conf;
            }

            """
    }

    /// The shipped HAProxy configuration with this lab's ports, certificate and instances, logging
    /// to standard error (there is no syslog in a lab), and a `maxconn` the lab's open-file limit
    /// allows (HAProxy refuses to start otherwise).
    static func renderHAProxy(
        _ template: String, listeners: Listeners, instancePorts: [Int], pem: String?, maxConnections: Int
    ) throws -> String {
        try render(
            template, named: "haproxy-rendezvous.cfg",
            [
                Rewrite(prefix: "log /dev/log") { indent, _, _ in ["\(indent)log stderr format raw local0 notice"] },
                Rewrite(prefix: "maxconn ") { indent, _, _ in ["\(indent)maxconn \(maxConnections)"] },
                Rewrite(prefix: "bind :443 ssl crt ") { indent, _, _ in
                    var binds: [String] = []
                    if let tls = listeners.tls, let pem {
                        binds.append("\(indent)bind 127.0.0.1:\(tls) ssl crt \(pem) alpn http/1.1")
                    }
                    return binds + ["\(indent)bind 127.0.0.1:\(listeners.plain)"]
                },
                Rewrite(prefix: "server rv") { indent, _, isFirst in
                    guard isFirst else { return [] }
                    return instancePorts.enumerated().map {
                        "\(indent)server rv\($0.offset + 1) 127.0.0.1:\($0.element)"
                    }
                },
            ])
    }

    static func read(_ path: String) throws -> String {
        guard let bytes = LabFiles.bytes(path) else { throw LabError("cannot read \(path)") }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func write(_ path: String, _ text: String) throws {
        guard let file = fopen(path, "wb") else { throw LabError("cannot create \(path)") }
        defer { fclose(file) }
        let bytes = Array(text.utf8)
        guard fwrite(bytes, 1, bytes.count, file) == bytes.count else { throw LabError("cannot write \(path)") }
    }
}
