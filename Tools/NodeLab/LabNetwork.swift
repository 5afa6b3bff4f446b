#if canImport(Glibc)
import Glibc
#endif

/// Small blocking socket helpers for labs on 127.0.0.1: a free port, whether something listens,
/// and a plain HTTP GET (Prometheus metrics).
public enum LabNetwork {
    /// Whether a TCP connection to 127.0.0.1:`port` is accepted.
    public static func accepts(port: Int) -> Bool {
        guard let fd = connected(port: port) else { return false }
        close(fd)
        return true
    }

    /// `GET path` on 127.0.0.1:`port`: the response body (HTTP/1.0, so the server closes).
    public static func get(port: Int, path: String) throws(LabError) -> String {
        guard let fd = connected(port: port) else { throw LabError("nothing listens on 127.0.0.1:\(port)") }
        defer { close(fd) }
        let request = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count
        else { throw LabError("cannot send to 127.0.0.1:\(port)") }
        var response: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = recv(fd, &chunk, chunk.count, 0)
            guard count > 0 else { break }
            response += chunk[0..<count]
        }
        let text = String(decoding: response, as: UTF8.self)
        guard text.hasPrefix("HTTP/1.1 200") || text.hasPrefix("HTTP/1.0 200"),
            let body = text.firstRange(of: "\r\n\r\n")
        else { throw LabError("GET \(path) on port \(port) answered: \(text.prefix(80))") }
        return String(text[body.upperBound...])
    }

    private static func connected(port: Int) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = loopback(port: port)
        let ok = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        guard ok else {
            close(fd)
            return nil
        }
        return fd
    }

    static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }
}

/// Prometheus text exposition: the value of each sample, by its name with labels as written
/// (`parley_rendezvous_rooms`, `parley_rendezvous_rejections_total{reason="misrouted"}`).
public enum PrometheusText {
    public static func samples(_ text: String) -> [String: Double] {
        var samples: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                continue
            }
            samples[String(line[..<space])] = value
        }
        return samples
    }
}

extension LabNetwork {
    /// A free TCP port below the kernel's ephemeral range (32768 and up by default), for a server
    /// that must get the same port again after a restart: no outgoing connection can be holding
    /// it as its source port meanwhile.
    /// - Parameter excluding: ports already chosen and not yet bound (two draws can be equal).
    public static func freePort(excluding: Set<Int> = []) throws(LabError) -> Int {
        for _ in 0..<200 {
            let port = Int.random(in: 20000..<32000)
            if excluding.contains(port) { continue }
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { break }
            var address = loopback(port: port)
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
                }
            }
            close(fd)
            if bound { return port }
        }
        throw LabError("no free port found below the ephemeral range")
    }
}

/// A network namespace of a test's own (root), so it can add addresses and iptables rules
/// without touching the host. Call `remove` after the lab's shutdown: the daemons inside must be
/// gone before their namespace.
public struct LabNamespace: Sendable {
    public let name: String

    /// `ip netns add` a fresh name with its loopback up.
    public init(_ lab: NodeLab, prefix: String) throws {
        name = "\(prefix)-\(UInt32.random(in: 0...UInt32.max))"
        for command in [["netns", "add", name], ["-n", name, "link", "set", "lo", "up"]] {
            let result = try lab.run("/usr/sbin/ip", command)
            guard result.status == 0 else {
                throw LabError("ip \(command.joined(separator: " ")): \(result.error.lastLine)")
            }
        }
    }

    /// `ip netns del`, waiting at most 10 s.
    public func remove() {
        let remove = try? ChildProcess(
            name: "netns-del", executable: "/usr/sbin/ip", arguments: ["netns", "del", name],
            stdoutPath: "/dev/null", stderrPath: "/dev/null")
        remove?.wait(upTo: .seconds(10))
    }
}
