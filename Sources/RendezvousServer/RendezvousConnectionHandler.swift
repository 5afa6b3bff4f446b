internal import Logging
internal import NIOCore
internal import NIOWebSocket
internal import ParleyCore
internal import ParleyProtocol
internal import RendezvousWire
internal import Sodium

/// One client connection of the rendezvous (docs/PROTOCOL.md §4.3): created at TCP accept (so the
/// handshake timeout covers TLS and the HTTP upgrade), added to the pipeline once the WebSocket
/// upgrade is done. Challenges, admits on a valid join proof, relays SENDs, enforces the
/// per-connection limits, and ends every refusal with an ERROR and a close. Lives on the server's
/// event loop, like `ServerState`.
final class RendezvousConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    enum Phase: Equatable {
        /// TCP (and TLS, HTTP) before the WebSocket upgrade.
        case connecting
        /// CHALLENGE sent; waiting for JOIN.
        case challenged(nonce: [UInt8])
        case admitted(roomID: [UInt8], memberID: RendezvousMemberID)
    }

    let id: UInt64
    let channel: any Channel
    /// The TCP peer's IP address (nil for a Unix socket).
    let peer: InternetAddress?
    /// Whether the peer is a trusted proxy (`--trusted-proxy`): then the client behind it is
    /// counted once the proxy has said who it is (`ServerState.identifyClient`).
    let fromTrustedProxy: Bool
    /// The client address the PROXY protocol header named, if the proxy sent one.
    var proxyProtocolSource: InternetAddress?
    /// What per-address limits count this connection as, once `isCounted`.
    private(set) var address = SourceAddressKey(bytes: [])
    private(set) var isCounted = false
    var logger: Logger
    private unowned let state: ServerState
    private(set) var phase = Phase.connecting
    /// ERROR or GOING_AWAY sent (or the close begun): input is ignored, nothing more is sent.
    private(set) var isClosing = false
    /// Set at accept when the connection must be refused right after the upgrade.
    var refusal: RendezvousError?
    /// The host the client asked for (HTTP `Host`), for WELCOME's STUN advertisement.
    var requestedHost: String?
    /// The shard key in the upgrade's path (§4.1), which JOIN's room id must match; nil for a
    /// path without one (an older client).
    var pathShardKey: Substring?
    private var context: ChannelHandlerContext?
    private var bucket: TokenBucket
    private var lastHeard: NIODeadline
    private var timer: Scheduled<Void>?

    init(
        id: UInt64, channel: any Channel, peer: InternetAddress?, fromTrustedProxy: Bool, state: ServerState,
        logger: Logger
    ) {
        self.id = id
        self.channel = channel
        self.peer = peer
        self.fromTrustedProxy = fromTrustedProxy
        self.state = state
        self.logger = logger
        let now = channel.eventLoop.now
        bucket = TokenBucket(
            rate: state.limits.messagesPerSecond, capacity: state.limits.messageBurst, now: now.uptimeNanoseconds)
        lastHeard = now
        // §4.3 step 1: the handshake timeout runs from accept, so a client that dribbles its TLS
        // or HTTP handshake (slowloris) is cut off just like one that never sends JOIN.
        schedule(after: state.limits.handshakeTimeout) { handler in
            handler.fail(RendezvousError(.timeout, "no JOIN within the handshake timeout"))
        }
    }

    /// Records what the per-address limits count this connection as (`ServerState.count`).
    func counted(as address: SourceAddressKey) {
        self.address = address
        isCounted = true
    }

    // MARK: Pipeline events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if let refusal {
            fail(refusal)
            return
        }
        // §4.3 step 1: a fresh nonce for this connection only.
        let nonce = RandomBytes.bytes(count: RendezvousMessage.nonceLength)
        phase = .challenged(nonce: nonce)
        send(RendezvousMessage.challenge(nonce: nonce).encoded())
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = Self.unwrapInboundIn(data)
        guard !isClosing else { return }
        let now = channel.eventLoop.now
        lastHeard = now
        guard bucket.take(now: now.uptimeNanoseconds) else {
            return fail(
                RendezvousError(.rateLimited, "more than \(Int(state.limits.messagesPerSecond)) messages per second"))
        }
        switch frame.opcode {
        case .binary:
            var data = frame.unmaskedData
            let message = data.withUnsafeReadableBytes { bytes in Result { try RendezvousMessage.parse(bytes) } }
            data.clear()
            switch message {
            case .success(let message): handle(message)
            case .failure(let error): fail(RendezvousError(.malformed, "\(error)"))
            }
        case .ping:
            context.writeAndFlush(
                Self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)), promise: nil)
        case .pong:
            break  // liveness only: lastHeard is updated above
        case .connectionClose:
            // The client is leaving: answer its Close (RFC 6455 §5.5.1) and close.
            var reply = context.channel.allocator.buffer(capacity: 2)
            reply.write(webSocketErrorCode: .normalClosure)
            isClosing = true
            context.writeAndFlush(
                Self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: reply))
            )
            .assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        case .text:
            fail(RendezvousError(.malformed, "text message: Parley messages are binary (§4.1)"))
        default:
            fail(RendezvousError(.malformed, "unexpected WebSocket opcode \(frame.opcode)"))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch error {
        case NIOWebSocketError.invalidFrameLength, NIOWebSocketFrameAggregator.Error.accumulatedFrameSizeIsTooLarge:
            fail(RendezvousError(.tooLarge, "message larger than \(state.limits.maxMessageBytes) bytes"))
        case let error as ClientFrameCheck.Violation:
            fail(RendezvousError(.malformed, error.description))
        case is NIOWebSocketError, is NIOWebSocketFrameAggregator.Error:
            fail(RendezvousError(.malformed, "invalid WebSocket framing (\(error))"))
        default:
            logger.debug("connection error", metadata: ["error": "\(error)"])
            context.close(promise: nil)
        }
    }

    /// The outbound queue passed its limit (the write buffer's high water mark): this client does
    /// not read fast enough. Drop it rather than let the queue grow (§4.4 `slow-reader`).
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if !context.channel.isWritable && !isClosing {
            fail(RendezvousError(.slowReader, "you did not read fast enough"), waitForFlush: false)
        }
        context.fireChannelWritabilityChanged()
    }

    // MARK: Protocol

    private func handle(_ message: RendezvousMessage) {
        switch (phase, message) {
        case (.challenged(let nonce), .join(let roomID, let proof)):
            // §4.3 step 2: a load balancer routed this connection by its path's shard key; a room
            // it is not the key of may live on another instance, so this one must not open it.
            if let pathShardKey, pathShardKey != RendezvousShard.key(roomID: roomID) {
                return fail(
                    RendezvousError(
                        .misrouted,
                        "the path's shard key r/\(pathShardKey) is not this room's: connect to the path for the room (§4.1)"
                    ))
            }
            // §3: the proof signs this connection's nonce with the room key. A wrong proof and a
            // room that does not exist get the same answer (§4.3 step 2).
            guard JoinProof.verify(proof, nonce: nonce, roomID: roomID) else {
                return fail(RendezvousError(.badProof, "the join proof does not verify"))
            }
            admit(roomID: roomID)
        case (.admitted(let roomID, let memberID), .send(let to, let payload)):
            relay(payload, roomID: roomID, from: memberID, to: to)
        default:
            let expected = if case .admitted = phase { "SEND" } else { "JOIN" }
            fail(RendezvousError(.malformed, "\(message.type) is out of sequence here (expected \(expected))"))
        }
    }

    private func admit(roomID: [UInt8]) {
        switch state.join(self, roomID: roomID) {
        case .refused(let error):
            fail(error)
        case .admitted(let memberID, let others):
            phase = .admitted(roomID: roomID, memberID: memberID)
            let welcome = RendezvousWelcome(
                memberID: memberID, members: others.map(\.0), services: state.services(forHost: requestedHost))
            send(RendezvousMessage.welcome(welcome).encoded())
            logger.debug("admitted", metadata: ["members": "\(others.count + 1)"])
            timer?.cancel()
            schedulePing()
        }
    }

    private func relay(
        _ payload: [UInt8], roomID: [UInt8], from sender: RendezvousMemberID, to recipient: RendezvousMemberID
    ) {
        state.metrics.messagesReceived.increment()
        let recipients = state.rooms.recipients(roomID: roomID, from: sender, to: recipient)
        guard !recipients.isEmpty else { return }  // §4.3 step 4: unknown recipients are dropped silently
        let deliver = RendezvousMessage.deliver(from: sender, payload: payload).encoded()
        // One buffer shared by every recipient (copy-on-write, never written).
        let buffer = channel.allocator.buffer(bytes: deliver)
        for member in recipients { member.send(buffer) }
        state.metrics.messagesRelayed.increment(by: Int64(recipients.count))
    }

    // MARK: Liveness

    /// Pings every interval; a client that sent nothing (not even a pong) for the idle timeout is
    /// dropped (§4.1, §4.4 `timeout`).
    private func schedulePing() {
        schedule(after: state.limits.pingInterval) { handler in
            guard !handler.isClosing else { return }
            if handler.channel.eventLoop.now - handler.lastHeard > TimeAmount(handler.state.limits.idleTimeout) {
                return handler.fail(RendezvousError(.timeout, "no pong within the idle timeout"))
            }
            handler.context?.writeAndFlush(
                Self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .ping, data: ByteBuffer())), promise: nil)
            handler.schedulePing()
        }
    }

    private func schedule(after delay: Duration, _ body: @escaping (RendezvousConnectionHandler) -> Void) {
        timer?.cancel()
        timer = channel.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(delay)) { [weak self] in
            if let self { body(self) }
        }
    }

    // MARK: Output

    /// Writes one Parley message (a binary frame).
    func send(_ bytes: [UInt8]) {
        send(channel.allocator.buffer(bytes: bytes))
    }

    func send(_ buffer: ByteBuffer) {
        guard let context, !isClosing else { return }
        context.writeAndFlush(
            Self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .binary, data: buffer)), promise: nil)
    }

    /// Sends GOING_AWAY and closes (server shutdown, §4.3 step 6).
    func goAway(retryAfterMilliseconds: UInt32) {
        guard context != nil else { return channel.close(promise: nil) }
        end(
            with: RendezvousMessage.goingAway(retryAfterMilliseconds: retryAfterMilliseconds).encoded(),
            closeCode: .goingAway)
    }

    /// Sends ERROR and closes (§4.4: "the server closes the connection after every ERROR").
    /// Before the upgrade there is no WebSocket to carry it, so the TCP connection just closes.
    func fail(_ error: RendezvousError, waitForFlush: Bool = true) {
        guard !isClosing else { return }
        state.metrics.rejected(error.code)
        logger.info("closing with ERROR", metadata: ["error": "\(error.code.name)"])
        guard context != nil else {
            isClosing = true
            return channel.close(promise: nil)
        }
        end(with: RendezvousMessage.error(error).encoded(), closeCode: .policyViolation, waitForFlush: waitForFlush)
    }

    /// Writes a last message and a Close frame, then half-closes so the client reads both before
    /// it sees the end (closing outright with unread input makes the kernel send a reset, which
    /// can destroy the ERROR in flight). The connection is closed fully once the client closes or
    /// after one second.
    private func end(with message: [UInt8], closeCode: WebSocketErrorCode, waitForFlush: Bool = true) {
        guard let context else { return }
        send(message)
        isClosing = true
        var code = context.channel.allocator.buffer(capacity: 2)
        code.write(webSocketErrorCode: closeCode)
        let written = context.writeAndFlush(
            Self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: code)))
        timer?.cancel()
        let channel = self.channel
        timer = channel.eventLoop.assumeIsolated().scheduleTask(in: .seconds(1)) { channel.close(promise: nil) }
        guard waitForFlush else { return channel.close(promise: nil) }
        written.assumeIsolated().whenComplete { _ in
            channel.close(mode: .output).assumeIsolated().whenFailure { _ in channel.close(promise: nil) }
        }
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}

/// Checks each frame as it arrives, before fragments are reassembled (the reassembled message no
/// longer shows them): RFC 6455 §5.1, a client masks every frame; §5.2, no extension was
/// negotiated, so the RSV bits are clear.
final class ClientFrameCheck: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame

    struct Violation: Error, CustomStringConvertible {
        let description: String
    }

    private var failed = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        let frame = Self.unwrapInboundIn(data)
        let violation: String? =
            if frame.maskKey == nil {
                "unmasked frame from a client (RFC 6455 §5.1)"
            } else if frame.rsv1 || frame.rsv2 || frame.rsv3 {
                "reserved bits set without an extension (RFC 6455 §5.2)"
            } else {
                nil
            }
        guard let violation else { return context.fireChannelRead(data) }
        failed = true
        context.fireErrorCaught(Violation(description: violation))
    }
}
