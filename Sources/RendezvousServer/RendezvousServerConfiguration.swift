import ParleyCore
public import RendezvousWire

/// Everything a rendezvous server is told: where to listen, which helpers to offer, and every
/// limit (docs/PROTOCOL.md §4). Defaults suit a small self-hosted server; every limit is a flag
/// of `parley-rendezvous`.
public struct RendezvousServerConfiguration: Sendable {
    /// Where the WebSocket listener binds. Port 0 picks a free port (`RendezvousServer.addresses`).
    public var listen: HostAndPort = HostAndPort(host: "0.0.0.0", port: 7777)
    /// PEM certificate chain and private key for built-in TLS (`wss://`); `nil` serves `ws://`
    /// (put a TLS reverse proxy in front, or run on a trusted network).
    public var tls: TLSFiles?
    /// Where the STUN Binding responder (RFC 8489) binds, if at all.
    public var stunListen: HostAndPort?
    /// The `host:port` WELCOME advertises for STUN. `nil`: the host the client connected to (its
    /// HTTP `Host`) with the STUN listener's port.
    public var stunAdvertise: String?
    /// TURN REST credentials for coturn `use-auth-secret`, if offered.
    public var turn: TURNConfiguration?
    /// Where Prometheus text metrics are served (`GET /metrics`), if at all.
    public var metricsListen: HostAndPort?
    /// Whether logs may name clients' source addresses (off by default: addresses are personal data).
    public var logSourceAddresses = false
    /// Load balancers or reverse proxies whose report of a client's address is believed: for a
    /// connection from one of these networks, the per-address limits count the address the PROXY
    /// protocol header or the upgrade's `X-Forwarded-For` names (the nearest hop that is not
    /// itself trusted), not the proxy's. Empty: every peer is the client.
    public var trustedProxies: [IPNetwork] = []
    public var limits = Limits()

    public init() {}

    /// A host (name or IP literal, IPv6 without brackets) and a port.
    public struct HostAndPort: Sendable, Hashable, CustomStringConvertible {
        public var host: String
        public var port: Int

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        /// Parses `HOST:PORT`, `[IPv6]:PORT` or `:PORT` (all interfaces).
        public init?(parsing text: String) {
            guard let (host, portText) = HostPortText.split(text), let portText, let port = Int(portText),
                (0...65535).contains(port)
            else { return nil }
            self.host = host.isEmpty ? "0.0.0.0" : String(host)
            self.port = port
        }

        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    public struct TLSFiles: Sendable, Hashable {
        public var certificateChainPath: String
        public var privateKeyPath: String

        public init(certificateChainPath: String, privateKeyPath: String) {
            self.certificateChainPath = certificateChainPath
            self.privateKeyPath = privateKeyPath
        }
    }

    public struct TURNConfiguration: Sendable {
        /// The secret shared with coturn (`static-auth-secret`). Never logged.
        public var secret: [UInt8]
        /// `turn:` / `turns:` URLs handed out (RFC 7065), e.g. `turn:rv.example.org:3478?transport=udp`.
        public var urls: [String]
        /// How long each credential is valid (coturn checks the expiry in the user name).
        public var ttlSeconds: UInt32 = 86_400

        public init(secret: [UInt8], urls: [String], ttlSeconds: UInt32 = 86_400) {
            self.secret = secret
            self.urls = urls
            self.ttlSeconds = ttlSeconds
        }
    }

    /// Every limit of the server. Each closes the offending connection with an ERROR (§4.4).
    public struct Limits: Sendable, Hashable {
        /// Members per room (`room-full`), 2 to `largestRoom`.
        public var membersPerRoom = 8
        /// A meeting is a full mesh: every talking member sends one copy to each other member
        /// (about 60 kb/s each at the default bitrate), and every member decodes all who talk.
        /// 16 is what Scripts/bench measures working (README, "Meetings of more than 8"); past it
        /// neither uplinks nor CPUs keep up. (WELCOME's u8 member count would allow 256.)
        public static let largestRoom = 16
        /// Largest message (type byte included) after WebSocket reassembly (`too-large`).
        public var maxMessageBytes = RendezvousWire.minimumMessageLimit
        /// Token bucket per connection: sustained messages per second (WebSocket frames of any
        /// kind, control frames included) ...
        public var messagesPerSecond = 100.0
        /// ... and the burst it allows (`rate-limited`).
        public var messageBurst = 200.0
        /// Connections at once from one source address (`too-many-connections`). IPv6 addresses
        /// count per /64, what one host or home network usually gets.
        public var connectionsPerAddress = 64
        /// Rooms with members from one source address at once (`too-many-connections`).
        public var roomsPerAddress = 16
        /// Connections at once in all; beyond it new connections are closed unanswered.
        public var maxConnections = 50_000
        /// Bytes queued for one slow client before it is dropped (`slow-reader`), rather than the
        /// queue growing.
        public var outboundQueueBytes = 256 * 1024
        /// From TCP accept to a valid JOIN, TLS and HTTP upgrade included (`timeout`): slowloris.
        public var handshakeTimeout: Duration = .seconds(10)
        /// How often the server pings an admitted client.
        public var pingInterval: Duration = .seconds(15)
        /// A client that sends nothing at all (not even a pong) for this long is dropped (`timeout`).
        public var idleTimeout: Duration = .seconds(45)
        /// GOING_AWAY's `retry_after_ms` on shutdown.
        public var goingAwayRetry: Duration = .seconds(1)
        /// On shutdown, how long clients get to close after GOING_AWAY before they are cut off.
        public var shutdownGrace: Duration = .seconds(2)

        public init() {}

        /// Throws a readable error for a limit no server could honour.
        public func validate() throws(RendezvousServerError) {
            func check(_ ok: Bool, _ what: String) throws(RendezvousServerError) {
                if !ok { throw .invalidConfiguration(what) }
            }
            try check(
                (2...Self.largestRoom).contains(membersPerRoom), "members per room must be 2…\(Self.largestRoom)")
            try check(
                (RendezvousWire.minimumMessageLimit...(1 << 24)).contains(maxMessageBytes),
                "message size limit must be \(RendezvousWire.minimumMessageLimit)…16777216 bytes (§4.1)")
            try check(messagesPerSecond > 0 && messageBurst >= 1, "message rate and burst must be positive")
            try check(connectionsPerAddress >= 1 && roomsPerAddress >= 1, "per-address limits must be at least 1")
            try check(maxConnections >= 1, "connection limit must be at least 1")
            try check(outboundQueueBytes >= 2 * maxMessageBytes, "outbound queue must hold two messages")
            try check(handshakeTimeout > .zero && pingInterval > .zero, "timeouts must be positive")
            try check(idleTimeout > pingInterval, "idle timeout must be longer than the ping interval")
        }
    }
}

/// Errors of the rendezvous server's own setup (not protocol errors, which are `RendezvousError`).
public enum RendezvousServerError: Error, CustomStringConvertible, Equatable {
    case invalidConfiguration(String)
    case notStarted

    public var description: String {
        switch self {
        case .invalidConfiguration(let what): "invalid rendezvous configuration: \(what)"
        case .notStarted: "the rendezvous server has not been started"
        }
    }
}
