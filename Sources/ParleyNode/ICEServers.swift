import ICE
import NIOPosix
import NIOSSL
import ParleyCore
import ParleyProtocol
import RendezvousWire

#if canImport(Glibc)
import Glibc
#endif

/// The node's own ICE settings (parleyd's flags). Servers given here override what the
/// rendezvous offers in WELCOME.
public struct ICESettings: Sendable {
    /// `--stun HOST:PORT`.
    public var stun: String?
    /// `--turn URL --turn-user U --turn-pass P`.
    public var turn: TURNFlag?
    /// `--relay-only`.
    public var relayOnly = false
    /// `--local-address` (repeatable, as given): host candidates only on these addresses.
    public var localAddresses: [String] = []
    /// `--turn-ca FILE`: PEM certificates that `turns:` servers are verified against, instead of
    /// the system's CAs (a TURN server with a private CA or a self-signed certificate).
    public var turnCA: String?

    /// The local addresses as IP addresses (`validate()` refuses the others).
    var localIPAddresses: [IPAddress] { localAddresses.compactMap(IPAddress.init) }

    public struct TURNFlag: Sendable {
        public var url: String
        public var username: String
        public var password: String
        public init(url: String, username: String, password: String) {
            self.url = url
            self.username = username
            self.password = password
        }
    }

    public init() {}

    /// Refuses the flags' own mistakes at start, one line each (a server that is merely
    /// unreachable shows only when ICE uses it).
    public func validate() throws(NodeError) {
        for address in localAddresses where IPAddress(address) == nil {
            throw NodeError("--local-address wants an IP address, got \(address)")
        }
        if let stun, ICEServerPlan.hostAndPort(stun, defaultPort: 3478) == nil {
            throw NodeError("--stun wants HOST:PORT or [IPv6]:PORT, got \(stun)")
        }
        if let turn {
            do {
                _ = try TURNHint(uri: turn.url, username: turn.username, password: turn.password)
            } catch {
                throw NodeError("--turn \(turn.url): \(error)")
            }
        }
        if let turnCA {
            do {
                guard !(try NIOSSLCertificate.fromPEMFile(turnCA)).isEmpty else {
                    throw NodeError("--turn-ca \(turnCA): no PEM certificate in it")
                }
            } catch let error as NodeError {
                throw error
            } catch {
                throw NodeError("--turn-ca \(turnCA): \(error)")
            }
        }
    }
}

/// A STUN or TURN server before name resolution.
struct PlannedServer: Sendable, Hashable {
    var host: String
    var port: UInt16
    /// TURN only: `udp` or `tcp`, and the long-term credentials.
    var transport: TURNServer.Transport = .udp
    /// A `turns:` server: TCP inside TLS, which libnice reaches through a tunnel (`TURNTLSTunnels`).
    var tls = false
    var username = ""
    var password = ""
}

/// Which STUN and TURN servers a node uses (pure: table-tested). Flags win; otherwise the
/// rendezvous' WELCOME services (§4.2), plus TURN hints that carry their own credentials from the
/// invite (§2.4; hints without credentials name a server whose credentials WELCOME brings, so
/// they add nothing). `turns:` servers are reached through a local TLS tunnel (`TURNTLSTunnels`).
enum ICEServerPlan {
    struct Plan: Sendable, Hashable {
        var stun: PlannedServer?
        var turn: [PlannedServer]
        /// Servers left out, and why (logged).
        var skipped: [String]
    }

    static func plan(settings: ICESettings, services: [RendezvousService], hints: [TURNHint]) -> Plan {
        var plan = Plan(stun: nil, turn: [], skipped: [])
        if let stun = settings.stun {
            plan.stun = hostAndPort(stun, defaultPort: 3478).map { PlannedServer(host: $0.host, port: $0.port) }
            if plan.stun == nil { plan.skipped.append("--stun \(stun): not HOST:PORT") }
        } else {
            for case .stun(let text) in services where plan.stun == nil {
                plan.stun = hostAndPort(text, defaultPort: 3478).map { PlannedServer(host: $0.host, port: $0.port) }
            }
        }
        if let flag = settings.turn {
            add(uri: flag.url, username: flag.username, password: flag.password, to: &plan)
        } else {
            for case .turn(let credential) in services {
                add(uri: credential.url, username: credential.username, password: credential.password, to: &plan)
            }
            for hint in hints where hint.hasCredentials {
                add(uri: hint.uri, username: hint.username, password: hint.password, to: &plan)
            }
        }
        return plan
    }

    private static func add(uri: String, username: String, password: String, to plan: inout Plan) {
        guard let hint = try? TURNHint(uri: uri, username: username, password: password) else {
            plan.skipped.append("TURN \(uri): not a turn: URI")
            return
        }
        let server = PlannedServer(
            host: hint.host, port: hint.port, transport: hint.isTLS || hint.transport == "tcp" ? .tcp : .udp,
            tls: hint.isTLS, username: username, password: password)
        if !plan.turn.contains(server) { plan.turn.append(server) }
    }

    /// `host:port`, `[v6]:port` or a bare host (`defaultPort`).
    static func hostAndPort(_ text: String, defaultPort: UInt16) -> (host: String, port: UInt16)? {
        guard let (host, portText) = HostPortText.split(text), !host.isEmpty else { return nil }
        guard let portText else { return (String(host), defaultPort) }
        guard let port = UInt16(portText), port != 0 else { return nil }
        return (String(host), port)
    }

    /// The ICE configuration for a plan, with host names resolved (libnice takes literals only);
    /// `tunnel` gives the local end of a tunnel to a `turns:` server (host, address, port).
    static func configuration(
        _ plan: Plan, settings: ICESettings, resolve: (String) async throws -> IPAddress,
        tunnel: (String, IPAddress, UInt16) async throws -> ICEServerEndpoint = { host, _, _ in
            throw NodeError("TURN over TLS to \(host): no tunnel")
        }
    ) async throws -> ICEConfiguration {
        var configuration = ICEConfiguration(relayOnly: settings.relayOnly, localAddresses: settings.localIPAddresses)
        // Consent comes from the session instead: a link with no authenticated packet for 2 s is
        // lost, restarted, and after 8 s removed (no more media to it) — sooner than RFC 7675's
        // 30 s. libnice's consent checks, on top, expired working paths under sustained 10–20 %
        // loss (measured: speech cut off mid-call in Scripts/bench's NAT-lab PESQ runs).
        configuration.consentFreshness = false
        if let stun = plan.stun {
            configuration.stunServer = ICEServerEndpoint(address: try await resolve(stun.host), port: stun.port)
        }
        for turn in plan.turn.prefix(8) {
            let address = try await resolve(turn.host)
            let endpoint =
                turn.tls
                ? try await tunnel(turn.host, address, turn.port) : ICEServerEndpoint(address: address, port: turn.port)
            configuration.turnServers.append(
                TURNServer(
                    endpoint: endpoint, transport: turn.transport, username: turn.username, password: turn.password))
        }
        try configuration.validate()
        return configuration
    }
}

/// Resolves a host name to one IP address (IPv4 preferred) with getaddrinfo, on NIO's blocking
/// pool so no concurrency thread waits on DNS. IP literals are returned as they are.
func resolveHost(_ host: String) async throws -> IPAddress {
    if let literal = IPAddress(host) { return literal }
    let found: [IPAddress] = try await NIOThreadPool.singleton.runIfActive {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &list)
        guard status == 0 else {
            throw NodeError("cannot resolve \(host): \(String(cString: gai_strerror(status)))")
        }
        defer { freeaddrinfo(list) }
        var addresses: [IPAddress] = []
        var entry = list
        while let current = entry {
            if let address = current.pointee.ai_addr {
                var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
                let family = Int32(address.pointee.sa_family)
                if family == AF_INET {
                    address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { v4 in
                        var raw = v4.pointee.sin_addr
                        _ = inet_ntop(AF_INET, &raw, &text, socklen_t(text.count))
                    }
                } else if family == AF_INET6 {
                    address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { v6 in
                        var raw = v6.pointee.sin6_addr
                        _ = inet_ntop(AF_INET6, &raw, &text, socklen_t(text.count))
                    }
                }
                let length = text.firstIndex(of: 0) ?? text.count
                let string = String(decoding: text[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if let parsed = IPAddress(string) { addresses.append(parsed) }
            }
            entry = current.pointee.ai_next
        }
        return addresses
    }
    guard let best = found.first(where: \.isIPv4) ?? found.first else {
        throw NodeError("cannot resolve \(host): no address")
    }
    return best
}

/// A node error with one clear line for the user.
public struct NodeError: Error, CustomStringConvertible, Sendable, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
