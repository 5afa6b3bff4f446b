import ArgumentParser
import Logging
import ParleyCommandLine
import ParleyCore
import RendezvousServer
import RendezvousWire
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

@main
struct ParleyRendezvous: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "parley-rendezvous",
        abstract: "The Parley rendezvous: passes sealed signaling between nodes and learns nothing else.",
        discussion: """
            Prints one line 'parley-rendezvous listening on ws://HOST:PORT/' (wss:// with TLS) once it \
            accepts connections. SIGTERM or SIGINT shut it down gracefully: clients are told to reconnect. \
            SIGHUP tells every client to reconnect and goes on serving: behind a load balancer, after a failed \
            instance is back, it sends the rooms that failed over to a survivor home again (docs/OPERATIONS.md).
            """,
        version: ParleyVersion.string
    )

    /// Every error is one clear line on stderr and a non-zero exit (`OneLineErrors`).
    static func main() async {
        await mainWithOneLineErrors()
    }

    @Option(help: "Where to accept WebSocket connections (HOST:PORT, [IPv6]:PORT; port 0 picks one).")
    var listen = "0.0.0.0:7777"
    @Option(help: "PEM certificate chain for built-in TLS (wss://); needs --tls-key.")
    var tlsCert: String?
    @Option(help: "PEM private key for --tls-cert.")
    var tlsKey: String?
    @Option(help: "Also answer STUN Binding requests (RFC 8489) on this UDP HOST:PORT.")
    var stunListen: String?
    @Option(help: "The STUN host:port to advertise (default: the host clients connected to, STUN port).")
    var stunAdvertise: String?
    @Option(help: "coturn static-auth-secret, to hand out TURN credentials (visible in ps: prefer --turn-secret-file).")
    var turnSecret: String?
    @Option(help: "File holding the coturn static-auth-secret (trailing newline ignored).")
    var turnSecretFile: String?
    @Option(help: "TURN URL to hand out with credentials, e.g. turn:rv.example.org:3478?transport=udp (repeatable).")
    var turnURL: [String] = []
    @Option(parsing: .unconditional, help: "Lifetime of TURN credentials in seconds.")
    var turnTTL: UInt32 = 86_400
    @Option(help: "Serve Prometheus text metrics at http://HOST:PORT/metrics.")
    var metricsListen: String?
    @Flag(help: "Include clients' source addresses in logs (off: addresses are personal data).")
    var logSourceAddresses = false
    @Option(
        help: ArgumentHelp(
            "A load balancer's address or network (CIDR) whose client address is believed (repeatable).",
            discussion: """
                Connections from it are counted by the per-address limits under the client address its PROXY \
                protocol header or X-Forwarded-For names, not its own.
                """))
    var trustedProxy: [String] = []
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Option(parsing: .unconditional, help: "Members per room, 2 to 16 (each talker sends a copy to every other).")
    var maxMembers = 8
    @Option(parsing: .unconditional, help: "Largest message in bytes (at least 16384).") var maxMessageBytes = 16_384
    @Option(parsing: .unconditional, help: "Messages per second per connection (token bucket rate).")
    var messagesPerSecond = 100.0
    @Option(parsing: .unconditional, help: "Message burst per connection (token bucket size).") var messageBurst = 200.0
    @Option(parsing: .unconditional, help: "Connections at once per source address (IPv6: per /64).")
    var maxConnectionsPerAddress = 64
    @Option(parsing: .unconditional, help: "Rooms at once per source address.") var maxRoomsPerAddress = 16
    @Option(parsing: .unconditional, help: "Connections at once in all.") var maxConnections = 50_000
    @Option(parsing: .unconditional, help: "Bytes queued for a slow client before it is dropped.")
    var outboundQueueBytes = 256 * 1024
    @Option(parsing: .unconditional, help: "Seconds from TCP accept to JOIN.") var handshakeTimeout = 10.0
    @Option(parsing: .unconditional, help: "Seconds between pings.") var pingInterval = 15.0
    @Option(parsing: .unconditional, help: "Seconds of silence (no pong) before a client is dropped.") var idleTimeout =
        45.0
    @Option(parsing: .unconditional, help: "Milliseconds clients are told to wait before reconnecting after shutdown.")
    var goingAwayRetryMs =
        1000

    func validate() throws {
        if (tlsCert == nil) != (tlsKey == nil) { throw ValidationError("--tls-cert and --tls-key go together") }
        if turnSecret != nil && turnSecretFile != nil {
            throw ValidationError("give --turn-secret or --turn-secret-file")
        }
        if (turnSecret != nil || turnSecretFile != nil) != !turnURL.isEmpty {
            throw ValidationError("--turn-url and --turn-secret (or --turn-secret-file) go together")
        }
        if Logger.Level(rawValue: logLevel) == nil { throw ValidationError("unknown --log-level \(logLevel)") }
        for network in trustedProxy where IPNetwork(parsing: network) == nil {
            throw ValidationError("--trusted-proxy wants an IP address or network such as 10.0.0.0/8, got \(network)")
        }
        if goingAwayRetryMs < 0 {
            throw ValidationError("--going-away-retry-ms must be 0 or more, got \(goingAwayRetryMs)")
        }
        if turnTTL == 0 { throw ValidationError("--turn-ttl must be at least 1 second") }
    }

    func run() async throws {
        var configuration = RendezvousServerConfiguration()
        configuration.listen = try hostAndPort(listen, "--listen")
        configuration.stunListen = try stunListen.map { try hostAndPort($0, "--stun-listen") }
        configuration.stunAdvertise = stunAdvertise
        configuration.metricsListen = try metricsListen.map { try hostAndPort($0, "--metrics-listen") }
        configuration.logSourceAddresses = logSourceAddresses
        configuration.trustedProxies = trustedProxy.compactMap(IPNetwork.init(parsing:))
        if let tlsCert, let tlsKey {
            configuration.tls = .init(certificateChainPath: tlsCert, privateKeyPath: tlsKey)
        }
        if let secret = try turnSecret ?? turnSecretFile.map(readSecret) {
            configuration.turn = .init(secret: Array(secret.utf8), urls: turnURL, ttlSeconds: turnTTL)
        }
        var limits = RendezvousServerConfiguration.Limits()
        limits.membersPerRoom = maxMembers
        limits.maxMessageBytes = maxMessageBytes
        limits.messagesPerSecond = messagesPerSecond
        limits.messageBurst = messageBurst
        limits.connectionsPerAddress = maxConnectionsPerAddress
        limits.roomsPerAddress = maxRoomsPerAddress
        // One descriptor per connection: raise the soft open-file limit, and serve no more
        // connections than it allows (refusing the extra ones beats failing accept() for all).
        var logger = Logger(label: "parley.rendezvous")
        logger.logLevel = Logger.Level(rawValue: logLevel)!
        let files = OpenFileLimit.apply(maxConnections: maxConnections)
        limits.maxConnections = files.maxConnections
        limits.outboundQueueBytes = outboundQueueBytes
        limits.handshakeTimeout = .seconds(handshakeTimeout)
        limits.pingInterval = .seconds(pingInterval)
        limits.idleTimeout = .seconds(idleTimeout)
        limits.goingAwayRetry = .milliseconds(goingAwayRetryMs)
        do { try limits.validate() } catch { throw ValidationError("\(error)") }
        configuration.limits = limits

        let server = RendezvousServer(configuration: configuration, logger: logger)
        let addresses = try await server.start()
        // Said once serving, so that a configuration error stays the only line of a failed start.
        if files.isCapped {
            logger.warning(
                """
                the open-file limit (\(files.softLimit)) allows \(files.maxConnections) connections, fewer than \
                --max-connections \(maxConnections): serving at most \(files.maxConnections) (raise it: LimitNOFILE= \
                in the systemd unit, or ulimit -n)
                """)
        }
        // One line, on stdout, flushed: scripts wait for it and parse the URL.
        print("parley-rendezvous listening on \(addresses.url)")
        if let stun = addresses.stun { print("parley-rendezvous STUN on udp \(stun)") }
        if let metrics = addresses.metrics { print("parley-rendezvous metrics on http://\(metrics)/metrics") }
        fflush(nil)  // all streams: stdout may be a pipe (block-buffered)
        let group = ServiceGroup(
            configuration: .init(services: [server], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                for await _ in await UnixSignalsSequence(trapping: .sighup) { await server.askEveryoneToReconnect() }
            }
            try await group.run()
            tasks.cancelAll()  // the server stopped: stop listening for SIGHUP too
        }
    }

    private func hostAndPort(_ text: String, _ flag: String) throws -> RendezvousServerConfiguration.HostAndPort {
        guard let value = RendezvousServerConfiguration.HostAndPort(parsing: text) else {
            throw ValidationError("\(flag) wants HOST:PORT or [IPv6]:PORT, got \(text)")
        }
        return value
    }

    private func readSecret(_ path: String) throws -> String {
        guard let file = fopen(path, "r") else { throw ValidationError("cannot read --turn-secret-file \(path)") }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1024)
        while case let count = fread(&chunk, 1, chunk.count, file), count > 0 { bytes += chunk[0..<count] }
        while bytes.last == 0x0A || bytes.last == 0x0D { bytes.removeLast() }
        guard !bytes.isEmpty else { throw ValidationError("--turn-secret-file \(path) is empty") }
        return String(decoding: bytes, as: UTF8.self)
    }
}
