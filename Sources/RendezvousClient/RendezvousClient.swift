public import Logging
internal import NIOConcurrencyHelpers
public import NIOCore
internal import NIOHTTP1
internal import NIOPosix
internal import NIOSSL
internal import NIOWebSocket
public import ParleyProtocol
public import RendezvousWire
public import ServiceLifecycle
public import Sodium

/// A client of the Parley rendezvous (docs/PROTOCOL.md §4), for the node daemon: connects over
/// `ws://` or `wss://` (optionally pinning the server's key), answers the CHALLENGE with a join
/// proof from the room key, reports what happens in the room as `events`, relays payloads with
/// `send(to:payload:)`, and reconnects with jittered exponential backoff after a loss or
/// GOING_AWAY (reporting each reconnect, since member ids change and the node must re-announce).
public final class RendezvousClient: Service, Sendable {
    public struct Configuration: Sendable {
        public var url: RendezvousURL
        /// SHA-256 of the DER SubjectPublicKeyInfo of the server's leaf certificate (the invite's
        /// pin). With a pin, the certificate is trusted by its key alone (self-signed is fine);
        /// without one, `wss://` verifies it against the system's trust roots and the host name.
        public var certificatePin: [UInt8]?
        public var reconnect = ReconnectPolicy()
        /// How often the client pings, and how long a silent server is tolerated (§4.1).
        public var pingInterval: Duration = .seconds(15)
        public var idleTimeout: Duration = .seconds(45)
        /// Connection, TLS, upgrade and CHALLENGE/JOIN/WELCOME must all fit in this.
        public var handshakeTimeout: Duration = .seconds(10)
        /// The largest message the server accepts and the client takes (§4.1's guaranteed minimum).
        public var maxMessageBytes = RendezvousWire.minimumMessageLimit

        public init(url: RendezvousURL, certificatePin: [UInt8]? = nil) {
            self.url = url
            self.certificatePin = certificatePin
        }
    }

    /// Delays between reconnection attempts (§4.3 step 6): attempt k waits a uniformly random time
    /// in [b/2, b] with b = min(maximum, initial · 2^k); k restarts at 0 after a WELCOME.
    public struct ReconnectPolicy: Sendable {
        public var initial: Duration = .milliseconds(500)
        public var maximum: Duration = .seconds(30)

        public init(initial: Duration = .milliseconds(500), maximum: Duration = .seconds(30)) {
            self.initial = initial
            self.maximum = maximum
        }

        func delay(attempt: Int, using generator: inout some RandomNumberGenerator) -> Duration {
            let exponent = min(attempt, 30)
            let base = min(maximum, initial * (1 << exponent))
            return base * Double.random(in: 0.5...1.0, using: &generator)
        }

        /// After GOING_AWAY: the server's hint plus up to the same again, so a restarted server is
        /// not hit by every client at once.
        func delay(goingAwayHint milliseconds: UInt32, using generator: inout some RandomNumberGenerator) -> Duration {
            .milliseconds(Int64(milliseconds)) * Double.random(in: 1.0...2.0, using: &generator)
        }
    }

    /// Who a payload is for.
    public enum Recipient: Sendable, Hashable {
        case member(RendezvousMemberID)
        case everyone
    }

    public enum Event: Sendable, Hashable {
        /// Admitted to the room (again, when `reconnected`): own member id, the members already
        /// present, and the services offered. Member ids from before a reconnect are void.
        case joined(RendezvousWelcome, reconnected: Bool)
        case memberJoined(RendezvousMemberID)
        case memberLeft(RendezvousMemberID)
        case delivered(from: RendezvousMemberID, payload: [UInt8])
        /// The connection ended; the client tries again after `retryIn`.
        case disconnected(reason: String, retryIn: Duration)
    }

    public let configuration: Configuration
    /// Everything that happens in the room, in order. Finishes when `run()` returns.
    public let events: AsyncStream<Event>
    private let continuation: AsyncStream<Event>.Continuation
    private let roomKey: Ed25519.KeyPair
    private let group: any EventLoopGroup
    private let logger: Logger
    private let session = NIOLockedValueBox<Session?>(nil)

    /// The live, admitted connection.
    private struct Session: Sendable {
        let memberID: RendezvousMemberID
        let outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>
    }

    /// - Parameters:
    ///   - roomKey: the room's Ed25519 key pair (§3); its public key is the room id.
    ///   - eventLoopGroup: defaults to NIO's shared singleton group.
    public init(
        configuration: Configuration, roomKey: Ed25519.KeyPair,
        eventLoopGroup: (any EventLoopGroup)? = nil,
        logger: Logger = Logger(label: "parley.rendezvous.client")
    ) {
        self.configuration = configuration
        self.roomKey = roomKey
        group = eventLoopGroup ?? MultiThreadedEventLoopGroup.singleton
        self.logger = logger
        (events, continuation) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .unbounded)
    }

    /// This connection's member id while admitted.
    public var memberID: RendezvousMemberID? { session.withLockedValue { $0?.memberID } }

    /// Relays `payload` to one member or to every other member (SEND, §4.2). Throws
    /// `notConnected` between connections: the node re-sends after the next `.joined`.
    public func send(to recipient: Recipient, payload: [UInt8]) async throws {
        guard payload.count + RendezvousMessage.relayHeaderLength <= configuration.maxMessageBytes else {
            throw RendezvousClientError.payloadTooLarge(payload.count)
        }
        guard let outbound = session.withLockedValue({ $0?.outbound }) else { throw RendezvousClientError.notConnected }
        let to: RendezvousMemberID =
            switch recipient {
            case .member(let id): id
            case .everyone: RendezvousMessage.everyone
            }
        try await outbound.write(Self.frame(.binary, RendezvousMessage.send(to: to, payload: payload).encoded()))
    }

    /// Connects, and reconnects after losses, until cancelled or the service group shuts down.
    /// Throws (and finishes `events`) on what retrying cannot fix: a refusal such as `room-full`
    /// or `bad-proof`, an unsupported version, or a certificate that does not match the pin.
    public func run() async throws {
        defer { continuation.finish() }
        var generator = SystemRandomNumberGenerator()
        var attempt = 0
        var hasJoined = false
        while !Task.isCancelled {
            let end: SessionEnd
            let reconnected = hasJoined
            joinedThisSession.withLockedValue { $0 = false }
            do {
                end = try await cancelWhenGracefulShutdown { [self] in
                    try await connectAndServe(reconnected: reconnected)
                }
            } catch let error as RendezvousClientError {
                throw error
            } catch is CancellationError {
                return
            } catch {
                end = .lost("\(error)")
            }
            session.withLockedValue { $0 = nil }
            if joinedThisSession.withLockedValue({ $0 }) {
                hasJoined = true
                // A connection the server throttled was no success: keep backing off.
                if case .throttled = end {} else { attempt = 0 }
            }
            if Task.isCancelled || Task.isShuttingDownGracefully { return }
            let delay: Duration
            switch end {
            case .goingAway(let milliseconds):
                delay = configuration.reconnect.delay(goingAwayHint: milliseconds, using: &generator)
                attempt = 1
            case .lost:
                delay = configuration.reconnect.delay(attempt: attempt, using: &generator)
                attempt += 1
            case .throttled:
                // Sending slower is the node's business; the client waits at least one step.
                attempt = max(attempt, 1)
                delay = configuration.reconnect.delay(attempt: attempt, using: &generator)
                attempt += 1
            }
            logger.info("rendezvous connection ended; retrying", metadata: ["reason": "\(end)", "retryIn": "\(delay)"])
            continuation.yield(.disconnected(reason: end.description, retryIn: delay))
            do { try await Task.sleep(for: delay) } catch { return }
        }
    }

    /// Whether the current connection got as far as WELCOME (resets the backoff).
    private let joinedThisSession = NIOLockedValueBox(false)

    /// How one connection ended, when retrying may help.
    enum SessionEnd: Error, CustomStringConvertible {
        case goingAway(retryAfterMilliseconds: UInt32)
        case lost(String)
        /// ERROR `rate-limited` (§4.4): we sent faster than the server allows.
        case throttled(String)

        var description: String {
            switch self {
            case .goingAway(let milliseconds): "the rendezvous is going away (retry after \(milliseconds) ms)"
            case .lost(let reason), .throttled(let reason): reason
            }
        }
    }

    // MARK: One connection

    private typealias WebSocketChannel = NIOAsyncChannel<WebSocketFrame, WebSocketFrame>

    /// Connects, joins and serves one connection; returns how it ended.
    private func connectAndServe(reconnected: Bool) async throws -> SessionEnd {
        let pinFailed = NIOLockedValueBox(false)
        let channel: WebSocketChannel
        do {
            channel = try await withThrowingTimeout(configuration.handshakeTimeout, "connecting") { [self] in
                try await connect(pinFailed: pinFailed)
            }
        } catch {
            if pinFailed.withLockedValue({ $0 }) { throw RendezvousClientError.certificatePinMismatch }
            if error is RendezvousClientError { throw error }
            if error is NIOSSLError, pinFailed.withLockedValue({ $0 }) {
                throw RendezvousClientError.certificatePinMismatch
            }
            return .lost("cannot connect to \(configuration.url): \(error)")
        }
        return try await channel.executeThenClose { inbound, outbound in
            let lastHeard = NIOLockedValueBox(ContinuousClock.now)
            return try await withThrowingTaskGroup(of: SessionEnd.self) { group in
                group.addTask { [self] in
                    try await read(inbound, outbound, lastHeard: lastHeard, reconnected: reconnected)
                }
                group.addTask { [self] in
                    try await keepAlive(outbound, lastHeard: lastHeard)
                }
                defer { group.cancelAll() }
                return try await group.next()!
            }
        }
    }

    /// The CHALLENGE → JOIN → WELCOME handshake, then events until the connection ends.
    private func read(
        _ inbound: NIOAsyncChannelInboundStream<WebSocketFrame>,
        _ outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>,
        lastHeard: NIOLockedValueBox<ContinuousClock.Instant>, reconnected: Bool
    ) async throws -> SessionEnd {
        var admitted = false
        let deadline = ContinuousClock.now + configuration.handshakeTimeout
        for try await frame in inbound {
            lastHeard.withLockedValue { $0 = ContinuousClock.now }
            if !admitted && ContinuousClock.now > deadline { return .lost("no WELCOME within the handshake timeout") }
            switch frame.opcode {
            case .ping:
                try await outbound.write(Self.frame(.pong, frame.unmaskedData))
                continue
            case .pong:
                continue
            case .connectionClose:
                return .lost("the rendezvous closed the connection")
            case .binary:
                break
            default:
                return .lost("unexpected WebSocket frame \(frame.opcode) from the rendezvous")
            }
            let message: RendezvousMessage
            do {
                message = try frame.unmaskedData.withUnsafeReadableBytes { try RendezvousMessage.parse($0) }
            } catch {
                return .lost("malformed message from the rendezvous: \(error)")
            }
            switch message {
            case .challenge(let nonce) where !admitted:
                let proof = JoinProof.make(nonce: nonce, roomKey: roomKey)
                try await outbound.write(
                    Self.frame(.binary, RendezvousMessage.join(roomID: roomKey.publicKey, proof: proof).encoded()))
            case .welcome(let welcome) where !admitted:
                admitted = true
                session.withLockedValue { $0 = Session(memberID: welcome.memberID, outbound: outbound) }
                joinedThisSession.withLockedValue { $0 = true }
                logger.info("joined the room", metadata: ["members": "\(welcome.members.count + 1)"])
                continuation.yield(.joined(welcome, reconnected: reconnected))
            case .memberJoined(let id) where admitted:
                continuation.yield(.memberJoined(id))
            case .memberLeft(let id) where admitted:
                continuation.yield(.memberLeft(id))
            case .deliver(let from, let payload) where admitted:
                continuation.yield(.delivered(from: from, payload: payload))
            case .goingAway(let milliseconds):
                return .goingAway(retryAfterMilliseconds: milliseconds)
            case .error(let error):
                logger.info("rendezvous error", metadata: ["code": "\(error.code.name)", "reason": "\(error.reason)"])
                if error.code == .rateLimited { return .throttled("the rendezvous throttled this node: \(error)") }
                guard error.code.isRetryable else { throw RendezvousClientError.rejected(error) }
                return .lost("the rendezvous closed the connection: \(error)")
            default:
                return .lost("\(message.type) from the rendezvous out of sequence")
            }
        }
        return .lost("the rendezvous closed the connection")
    }

    /// Pings the server every interval, and ends the session when it has been silent for the
    /// idle timeout (a dead server or path that TCP alone would notice only after minutes).
    private func keepAlive(
        _ outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>, lastHeard: NIOLockedValueBox<ContinuousClock.Instant>
    ) async throws -> SessionEnd {
        while true {
            try await Task.sleep(for: configuration.pingInterval)
            if ContinuousClock.now - lastHeard.withLockedValue({ $0 }) > configuration.idleTimeout {
                return .lost("the rendezvous stopped answering")
            }
            try await outbound.write(Self.frame(.ping, ByteBuffer()))
        }
    }

    /// A client frame: masked with a fresh random key, as RFC 6455 §5.3 requires.
    private static func frame(_ opcode: WebSocketOpcode, _ bytes: [UInt8]) -> WebSocketFrame {
        frame(opcode, ByteBuffer(bytes: bytes))
    }

    private static func frame(_ opcode: WebSocketOpcode, _ data: ByteBuffer) -> WebSocketFrame {
        WebSocketFrame(fin: true, opcode: opcode, maskKey: .random(), data: data)
    }

    // MARK: Connecting

    private enum UpgradeResult: Sendable {
        case upgraded(WebSocketChannel)
        case refused
    }

    private func connect(pinFailed: NIOLockedValueBox<Bool>) async throws -> WebSocketChannel {
        let url = configuration.url
        let tls = try url.usesTLS ? makeTLSContext() : nil
        let pin = configuration.certificatePin
        let maxMessageBytes = configuration.maxMessageBytes
        // §4.1: the invite's path plus the room's shard key, so a load balancer that hashes the
        // path sends every member of the room to the same instance.
        let path = RendezvousShard.path(invitePath: url.path, roomID: roomKey.publicKey)
        let status = NIOLockedValueBox<Int?>(nil)
        let upgrade = try await ClientBootstrap(group: group)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .connectTimeout(TimeAmount(configuration.handshakeTimeout))
            .connect(host: url.host, port: Int(url.port)) { channel in
                channel.eventLoop.makeCompletedFuture {
                    // Connecting to a loopback port in the ephemeral range where nothing listens can
                    // be given that same port as source: TCP simultaneous open connects the socket
                    // to itself, and it would hold the port the restarting server needs.
                    if let local = channel.localAddress, local == channel.remoteAddress {
                        throw SessionEnd.lost("connected to itself (nothing listens at \(url.hostHeader))")
                    }
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(
                            Self.tlsHandler(tls, host: url.host, pin: pin, pinFailed: pinFailed))
                    }
                    var headers = HTTPHeaders()
                    headers.add(name: "Host", value: url.hostHeader)
                    headers.add(name: "Sec-WebSocket-Protocol", value: RendezvousWire.subprotocol)
                    let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers)
                    let upgrader = NIOTypedWebSocketClientUpgrader<UpgradeResult>(
                        maxFrameSize: maxMessageBytes, enableAutomaticErrorHandling: true
                    ) { channel, response in
                        channel.eventLoop.makeCompletedFuture {
                            // §4.1: the server must have selected our version.
                            guard response.headers["Sec-WebSocket-Protocol"] == [RendezvousWire.subprotocol] else {
                                return .refused
                            }
                            try channel.pipeline.syncOperations.addHandler(
                                NIOWebSocketFrameAggregator(
                                    minNonFinalFragmentSize: 1, maxAccumulatedFrameCount: 64,
                                    maxAccumulatedFrameSize: maxMessageBytes))
                            return .upgraded(try WebSocketChannel(wrappingChannelSynchronously: channel))
                        }
                    }
                    var configuration = NIOUpgradableHTTPClientPipelineConfiguration(
                        upgradeConfiguration: .init(
                            upgradeRequestHead: head, upgraders: [upgrader],
                            notUpgradingCompletionHandler: { channel in channel.eventLoop.makeSucceededFuture(.refused)
                            }))
                    // The server sends CHALLENGE right behind its 101 response, often in the same read.
                    configuration.leftOverBytesStrategy = .forwardBytes
                    let upgraded = try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(
                        configuration: configuration)
                    let upgradeHandler = try channel.pipeline.syncOperations.handler(
                        type: NIOTypedHTTPClientUpgradeHandler<UpgradeResult>.self)
                    try channel.pipeline.syncOperations.addHandler(
                        ResponseStatusRecorder(status), position: .before(upgradeHandler))
                    return upgraded
                }
            }
        let result: UpgradeResult
        do {
            result = try await upgrade.get()
        } catch is NIOHTTPClientUpgradeError {
            throw RendezvousClientError.unsupportedVersion
        }
        switch result {
        case .upgraded(let channel):
            return channel
        case .refused:
            // §4.1: a proxy in front of the rendezvous answers 502, 503 or 504 while no server
            // behind it is available (one is restarting, or failing over): retry like a lost
            // connection. Any other answer means this is no Parley rendezvous.
            if let code = status.withLockedValue({ $0 }), code == 408 || code == 429 || (500...599).contains(code) {
                throw SessionEnd.lost("the rendezvous answered HTTP \(code)")
            }
            throw RendezvousClientError.unsupportedVersion
        }
    }

    /// With a pin the certificate's names do not matter (§4.1: the key alone decides, so an invite
    /// may point at an address the certificate does not name): NIOSSL must not check the host
    /// name, which it would do after the handshake even when the pin callback accepted the key.
    private func makeTLSContext() throws -> NIOSSLContext {
        var tls = TLSConfiguration.makeClientConfiguration()
        if configuration.certificatePin != nil {
            // The pin alone decides (§4.1): no host name check, and no system CA bundle either (a
            // machine without one, such as a minimal Debian root, failed every handshake loading it).
            tls.certificateVerification = .noHostnameVerification
            tls.trustRoots = .certificates([])
        }
        return try NIOSSLContext(configuration: tls)
    }

    /// With a pin, the only check is that the leaf certificate's key hashes to it (RFC 7469's
    /// SPKI pin, as the invite carries it); without, NIOSSL's normal verification applies.
    private static func tlsHandler(
        _ context: NIOSSLContext, host: String, pin: [UInt8]?, pinFailed: NIOLockedValueBox<Bool>
    ) throws -> NIOSSLClientHandler {
        // SNI must be a name, not an IP literal (RFC 6066 §3).
        let serverName = host.allSatisfy { $0.isNumber || $0 == "." || $0 == ":" } ? nil : host
        guard let pin else { return try NIOSSLClientHandler(context: context, serverHostname: serverName) }
        return try NIOSSLClientHandler(context: context, serverHostname: serverName) { certificates, promise in
            let matches = certificates.first.flatMap { try? $0.extractPublicKey().toSPKIBytes() }.map {
                SPKIPin.sha256($0).elementsEqual(pin)
            }
            if matches == true {
                promise.succeed(.certificateVerified)
            } else {
                pinFailed.withLockedValue { $0 = true }
                promise.succeed(.failed)
            }
        }
    }
}

/// Notes the status of the upgrade request's response (which NIO's upgrade handler does not pass
/// on when it is not 101) and steps out of the pipeline.
private final class ResponseStatusRecorder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias InboundOut = HTTPClientResponsePart
    private let status: NIOLockedValueBox<Int?>

    init(_ status: NIOLockedValueBox<Int?>) {
        self.status = status
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = Self.unwrapInboundIn(data) {
            status.withLockedValue { $0 = Int(head.status.code) }
            context.fireChannelRead(data)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        context.fireChannelRead(data)
    }
}

/// The certificate pin of an invite: SHA-256 of a DER SubjectPublicKeyInfo.
public enum SPKIPin {
    public static func sha256(_ subjectPublicKeyInfo: [UInt8]) -> [UInt8] {
        SHA256.hash(subjectPublicKeyInfo)
    }

    /// The pin of the first certificate in a PEM file (for `parley invite` and tests).
    public static func ofCertificate(pemFile path: String) throws -> [UInt8] {
        guard let leaf = try NIOSSLCertificate.fromPEMFile(path).first else {
            throw RendezvousClientError.invalidCertificate("no certificate in \(path)")
        }
        return sha256(try leaf.extractPublicKey().toSPKIBytes())
    }
}

/// Runs `operation`, cancelling it after `limit`.
func withThrowingTimeout<T: Sendable>(
    _ limit: Duration, _ what: String, operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: limit)
            throw RendezvousClient.SessionEnd.lost("\(what) timed out after \(limit)")
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}
