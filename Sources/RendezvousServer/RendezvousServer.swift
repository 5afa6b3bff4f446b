public import Logging
public import NIOCore
internal import NIOHTTP1
internal import NIOPosix
internal import NIOSSL
internal import NIOWebSocket
internal import ParleyCore
internal import ParleyProtocol
internal import RendezvousWire
public import ServiceLifecycle
internal import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The Parley rendezvous server (docs/PROTOCOL.md §4): rooms keyed by room id, admission by join
/// proof, relay of sealed blobs, presence; optionally a STUN Binding responder, TURN REST
/// credentials and Prometheus metrics. Embeddable: it runs on a given event loop group (or its
/// own), reports the addresses it bound (port 0 works), keeps no global state, and is a
/// swift-service-lifecycle `Service` whose graceful shutdown sends GOING_AWAY.
public final class RendezvousServer: Service, Sendable {
    /// Where the server's listeners are bound (real ports, also when port 0 was asked for).
    public struct BoundAddresses: Sendable, Hashable {
        public let rendezvous: RendezvousServerConfiguration.HostAndPort
        public let stun: RendezvousServerConfiguration.HostAndPort?
        public let metrics: RendezvousServerConfiguration.HostAndPort?
        public let usesTLS: Bool

        /// The URL clients (and invites) use: `ws://host:port/` or `wss://host:port/`.
        public var url: String { "\(usesTLS ? "wss" : "ws")://\(rendezvous)/" }
    }

    private struct Running: Sendable {
        let addresses: BoundAddresses
        let channels: [any Channel]
        let state: NIOLoopBound<ServerState>
    }

    private enum Lifecycle: Sendable {
        case idle
        case running(Running)
        case stopped
    }

    public let configuration: RendezvousServerConfiguration
    private let group: any EventLoopGroup
    private let ownsGroup: Bool
    /// Every connection of this server lives on this one loop (see `ServerState`).
    private let loop: any EventLoop
    private let logger: Logger
    private let unixTime: @Sendable () -> UInt64
    private let lifecycle = Mutex(Lifecycle.idle)
    let metrics = ServerMetrics()

    /// - Parameters:
    ///   - eventLoopGroup: the group to run on (the node daemon passes its own); `nil` makes a
    ///     one-thread group that `shutdown()` stops.
    ///   - unixTime: wall-clock seconds for TURN credential expiry (tests inject a fixed time).
    public init(
        configuration: RendezvousServerConfiguration, eventLoopGroup: (any EventLoopGroup)? = nil,
        logger: Logger = Logger(label: "parley.rendezvous"),
        unixTime: @escaping @Sendable () -> UInt64 = RendezvousServer.systemUnixTime
    ) {
        self.configuration = configuration
        ownsGroup = eventLoopGroup == nil
        group = eventLoopGroup ?? MultiThreadedEventLoopGroup(numberOfThreads: 1)
        loop = group.next()
        self.logger = logger
        self.unixTime = unixTime
        metrics.maxConnections.set(Int64(configuration.limits.maxConnections))
    }

    /// Seconds since 1970 from the system clock.
    public static let systemUnixTime: @Sendable () -> UInt64 = { UInt64(time(nil)) }

    /// The bound addresses once `start()` has returned.
    public var addresses: BoundAddresses? {
        lifecycle.withLock { if case .running(let running) = $0 { running.addresses } else { nil } }
    }

    /// Binds every listener and returns their addresses; the server serves from then on.
    /// Calling it again returns the same addresses.
    @discardableResult
    public func start() async throws -> BoundAddresses {
        if let addresses { return addresses }
        try configuration.limits.validate()
        let tls = try configuration.tls.map { try $0.makeServerContext() }
        let loop = self.loop
        let (configuration, logger, metrics, unixTime) = (configuration, logger, metrics, unixTime)
        let state = try await loop.submit {
            NIOLoopBound(
                ServerState(
                    configuration: configuration, loop: loop, logger: logger, metrics: metrics, unixTime: unixTime),
                eventLoop: loop)
        }.get()
        var channels: [any Channel] = []
        do {
            let queue = configuration.limits.outboundQueueBytes
            let listener = try await ServerBootstrap(group: loop)
                // Room for a stampede: when an instance behind a load balancer dies, its clients
                // all reconnect to the others within a second (the kernel caps it at somaxconn).
                .serverChannelOption(.backlog, value: 4096)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                // At IPPROTO_TCP: as a socketOption, TCP_NODELAY's number means SO_DEBUG, which
                // only root may set, and every connection of an unprivileged server failed.
                .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                .childChannelOption(.writeBufferWaterMark, value: .init(low: queue / 2, high: queue))
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try Self.configureConnection(channel, state: state.value, tls: tls)
                    }
                }
                .bind(host: configuration.listen.host, port: configuration.listen.port).get()
            channels.append(listener)
            var stunAddress: RendezvousServerConfiguration.HostAndPort?
            if let stunListen = configuration.stunListen {
                let stun = try await DatagramBootstrap(group: loop)
                    .channelOption(.socketOption(.so_reuseaddr), value: 1)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(STUNHandler(metrics: metrics))
                        }
                    }
                    .bind(host: stunListen.host, port: stunListen.port).get()
                channels.append(stun)
                stunAddress = Self.hostAndPort(stun.localAddress)
                let port = stunAddress?.port
                try await loop.submit { state.value.stunPort = port }.get()
            }
            var metricsAddress: RendezvousServerConfiguration.HostAndPort?
            if let metricsListen = configuration.metricsListen {
                let metricsChannel = try await Self.bindMetrics(metricsListen, metrics: metrics, loop: loop)
                channels.append(metricsChannel)
                metricsAddress = Self.hostAndPort(metricsChannel.localAddress)
            }
            let addresses = BoundAddresses(
                rendezvous: Self.hostAndPort(listener.localAddress)!, stun: stunAddress, metrics: metricsAddress,
                usesTLS: tls != nil)
            let running = Running(addresses: addresses, channels: channels, state: state)
            let started = lifecycle.withLock { lifecycle in
                guard case .idle = lifecycle else { return false }
                lifecycle = .running(running)
                return true
            }
            guard started else { throw RendezvousServerError.invalidConfiguration("server started twice concurrently") }
            logger.info("rendezvous listening", metadata: ["url": "\(addresses.url)"])
            return addresses
        } catch {
            for channel in channels { try? await channel.close() }
            throw error
        }
    }

    /// Serves until the service group's graceful shutdown (or task cancellation), then shuts down
    /// gracefully: GOING_AWAY to every client, listeners closed (`Service`).
    public func run() async throws {
        try await start()
        try? await gracefulShutdown()
        await shutdown()
    }

    /// Stops accepting, sends GOING_AWAY to every connection, waits up to the shutdown grace for
    /// clients to close, closes the rest, and stops the event loop group if the server made it.
    public func shutdown() async {
        let previous = lifecycle.withLock { lifecycle in
            defer { lifecycle = .stopped }
            return lifecycle
        }
        if case .stopped = previous { return }
        if case .running(let running) = previous {
            for channel in running.channels { try? await channel.close() }
            let grace = TimeAmount(configuration.limits.shutdownGrace)
            try? await loop.flatSubmit {
                let state = running.state.value
                state.goAway()
                return state.whenDrained(within: grace)
            }.get()
            logger.info("rendezvous stopped")
        }
        if ownsGroup { try? await group.shutdownGracefully() }
    }

    /// Sends GOING_AWAY to every client while going on serving (SIGHUP of `parley-rendezvous`):
    /// each comes back after the retry hint, through the load balancer to its room's instance.
    /// After a failed instance is back, this moves the rooms that had failed over home again.
    public func askEveryoneToReconnect() async {
        guard case .running(let running) = lifecycle.withLock({ $0 }) else { return }
        try? await loop.submit { running.state.value.askEveryoneToReconnect() }.get()
        logger.info("asked every client to reconnect")
    }

    /// Adds TLS (if configured), HTTP with the WebSocket upgrade, and the connection's handler.
    private static func configureConnection(_ channel: any Channel, state: ServerState, tls: NIOSSLContext?) throws {
        guard let handler = state.accept(channel) else {
            channel.close(promise: nil)
            return
        }
        let pipeline = channel.pipeline.syncOperations
        let boundHandler = NIOLoopBound(handler, eventLoop: channel.eventLoop)
        let boundState = NIOLoopBound(state, eventLoop: channel.eventLoop)
        if handler.fromTrustedProxy {
            try pipeline.addHandler(
                ProxyProtocolHandler(
                    found: { boundHandler.value.proxyProtocolSource = $0 },
                    failed: { reason in
                        boundHandler.value.logger.info("bad PROXY protocol header", metadata: ["reason": "\(reason)"])
                    }))
        }
        if let tls { try pipeline.addHandler(NIOSSLServerHandler(context: tls)) }
        let fallback = HTTPFallbackHandler { _ in HTTPFallbackHandler.notParley }
        let boundFallback = NIOLoopBound(fallback, eventLoop: channel.eventLoop)
        let maxMessageBytes = state.limits.maxMessageBytes
        let upgrader = NIOWebSocketServerUpgrader(
            maxFrameSize: maxMessageBytes, automaticErrorHandling: false,
            shouldUpgrade: { channel, head in
                // §4.1: select parley.v1 if offered; otherwise refuse (the fallback answers 400).
                guard Self.offeredProtocols(head.headers).contains(where: { $0 == RendezvousWire.subprotocol }) else {
                    return channel.eventLoop.makeSucceededFuture(nil)
                }
                let handler = boundHandler.value
                handler.requestedHost = head.headers.first(name: "Host").flatMap(Self.hostname)
                handler.pathShardKey = RendezvousShard.key(inRequestTarget: head.uri)
                boundState.value.identifyClient(handler, forwardedFor: head.headers["X-Forwarded-For"])
                return channel.eventLoop.makeSucceededFuture(
                    HTTPHeaders([("Sec-WebSocket-Protocol", RendezvousWire.subprotocol)]))
            },
            upgradePipelineHandler: { channel, _ in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    pipeline.removeHandler(boundFallback.value, promise: nil)
                    try pipeline.addHandler(ClientFrameCheck())
                    // RFC 6455 §5.4 lets clients fragment; the limit applies to the whole message.
                    try pipeline.addHandler(
                        NIOWebSocketFrameAggregator(
                            minNonFinalFragmentSize: 1, maxAccumulatedFrameCount: 64,
                            maxAccumulatedFrameSize: maxMessageBytes))
                    try pipeline.addHandler(boundHandler.value)
                }
            })
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldSize = 8 * 1024
        limits.maxHeaderListSize = 16 * 1024
        limits.maxHeaderFieldCount = 64
        try pipeline.configureHTTPServerPipeline(
            withServerUpgrade: (upgraders: [upgrader], completionHandler: { _ in }),
            withErrorHandling: true, withOutboundHeaderValidation: true, withEncoderConfiguration: .init(),
            withDecoderLimitConfiguration: limits)
        try pipeline.addHandler(fallback)
    }

    /// The `Sec-WebSocket-Protocol` tokens a client offered (RFC 6455 §4.1: a comma-separated list,
    /// possibly over several header lines).
    static func offeredProtocols(_ headers: HTTPHeaders) -> [Substring] {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        return headers["Sec-WebSocket-Protocol"].flatMap { $0.split(separator: ",") }.map { token in
            let start = token.firstIndex { !isSpace($0) } ?? token.endIndex
            let end = token.lastIndex { !isSpace($0) }.map(token.index(after:)) ?? start
            return token[start..<max(start, end)]
        }
    }

    /// The host part of an HTTP `Host` header (`name:port`, `[v6]:port`, `name`).
    static func hostname(_ hostHeader: String) -> String? {
        HostPortText.split(hostHeader).map { String($0.host) }
    }

    private static func bindMetrics(
        _ address: RendezvousServerConfiguration.HostAndPort, metrics: ServerMetrics, loop: any EventLoop
    ) async throws -> any Channel {
        try await ServerBootstrap(group: loop)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.configureHTTPServerPipeline(withErrorHandling: true)
                    try pipeline.addHandler(
                        HTTPFallbackHandler { head in
                            guard head.uri == "/metrics" else {
                                return .init(status: .notFound, body: Array("GET /metrics\n".utf8))
                            }
                            return .init(status: .ok, contentType: "text/plain; version=0.0.4", body: metrics.render())
                        })
                }
            }
            .bind(host: address.host, port: address.port).get()
    }

    static func hostAndPort(_ address: SocketAddress?) -> RendezvousServerConfiguration.HostAndPort? {
        guard let address, let ip = address.ipAddress, let port = address.port else { return nil }
        return .init(host: ip, port: port)
    }
}
