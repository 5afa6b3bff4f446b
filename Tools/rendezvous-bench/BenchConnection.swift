import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import ParleyProtocol
import RendezvousWire
import Sodium

#if canImport(Glibc)
import Glibc
#endif

/// A minimal rendezvous client for load: one NIO channel, no tasks, so the load generator can
/// hold tens of thousands of connections. Joins on CHALLENGE, answers pings, and reports WELCOME
/// and DELIVER through callbacks on its event loop.
final class BenchConnection: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    let room: Ed25519.KeyPair
    let onWelcome: @Sendable (BenchConnection, RendezvousWelcome) -> Void
    let onDeliver: @Sendable (ByteBuffer) -> Void
    private(set) var context: ChannelHandlerContext?

    init(
        room: Ed25519.KeyPair, onWelcome: @escaping @Sendable (BenchConnection, RendezvousWelcome) -> Void,
        onDeliver: @escaping @Sendable (ByteBuffer) -> Void
    ) {
        self.room = room
        self.onWelcome = onWelcome
        self.onDeliver = onDeliver
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = Self.unwrapInboundIn(data)
        switch frame.opcode {
        case .ping:
            write(.pong, frame.data)
        case .binary:
            var data = frame.data
            // DELIVER is the hot path: skip the type and sender, hand over the payload.
            if data.getInteger(at: data.readerIndex, as: UInt8.self) == RendezvousMessageType.deliver.rawValue {
                data.moveReaderIndex(forwardBy: RendezvousMessage.relayHeaderLength)
                return onDeliver(data)
            }
            switch try? data.withUnsafeReadableBytes({ try RendezvousMessage.parse($0) }) {
            case .challenge(let nonce):
                let join = RendezvousMessage.join(
                    roomID: room.publicKey, proof: JoinProof.make(nonce: nonce, roomKey: room))
                write(.binary, ByteBuffer(bytes: join.encoded()))
            case .welcome(let welcome):
                onWelcome(self, welcome)
            default:
                break
            }
        default:
            break
        }
    }

    /// Writes a SEND without flushing (the caller flushes a batch).
    func send(to: RendezvousMemberID, payload: ByteBuffer, flush: Bool) {
        guard let context else { return }
        var buffer = context.channel.allocator.buffer(capacity: payload.readableBytes + 5)
        buffer.writeInteger(RendezvousMessageType.send.rawValue)
        buffer.writeInteger(to)
        buffer.writeImmutableBuffer(payload)
        let frame = WebSocketFrame(fin: true, opcode: .binary, maskKey: .random(), data: buffer)
        if flush {
            context.writeAndFlush(Self.wrapOutboundOut(frame), promise: nil)
        } else {
            context.write(Self.wrapOutboundOut(frame), promise: nil)
        }
    }

    func flush() { context?.flush() }

    var isWritable: Bool { context?.channel.isWritable ?? false }

    private func write(_ opcode: WebSocketOpcode, _ data: ByteBuffer) {
        context?.writeAndFlush(
            Self.wrapOutboundOut(WebSocketFrame(fin: true, opcode: opcode, maskKey: .random(), data: data)),
            promise: nil)
    }

    /// Connects to `url` (plain `ws://`), from `source` if given, requesting the room's shard
    /// path (docs/PROTOCOL.md §4.1) as the node does, and upgrades; the handler joins by itself.
    static func connect(
        _ url: RendezvousURL, room: Ed25519.KeyPair, source: String?, on loop: any EventLoop,
        onWelcome: @escaping @Sendable (BenchConnection, RendezvousWelcome) -> Void = { _, _ in },
        onDeliver: @escaping @Sendable (ByteBuffer) -> Void = { _ in }
    ) -> EventLoopFuture<any Channel> {
        let handler: @Sendable () -> BenchConnection = {
            BenchConnection(room: room, onWelcome: onWelcome, onDeliver: onDeliver)
        }
        var bootstrap = ClientBootstrap(group: loop)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                let upgrader = NIOWebSocketClientUpgrader(maxFrameSize: 1 << 16) { channel, _ in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler()) }
                }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers(
                        leftOverBytesStrategy: .forwardBytes,
                        withClientUpgrade: (upgraders: [upgrader], completionHandler: { _ in }))
                }
            }
        if let source, let address = try? SocketAddress(ipAddress: source, port: 0) {
            // IP_BIND_ADDRESS_NO_PORT (Linux, <linux/in.h>): bind() takes the address only and
            // connect() picks the port, which it may share with connections to other places.
            // Otherwise bind() reserves the port outright, for every address: tens of thousands of
            // them would leave a load balancer on the same host no ports for its own connections
            // to the rendezvous instances.
            let bindAddressNoPort: SocketOptionName = 24
            bootstrap = bootstrap.channelOption(.socket(SocketOptionLevel(IPPROTO_IP), bindAddressNoPort), value: 1)
                .bind(to: address)
        }
        return bootstrap.connect(host: url.host, port: Int(url.port))
            .flatMap { channel in
                var headers = HTTPHeaders()
                headers.add(name: "Host", value: url.hostHeader)
                headers.add(name: "Sec-WebSocket-Protocol", value: RendezvousWire.subprotocol)
                let path = RendezvousShard.path(invitePath: url.path, roomID: room.publicKey)
                let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers)
                channel.write(HTTPClientRequestPart.head(head), promise: nil)
                return channel.writeAndFlush(HTTPClientRequestPart.end(nil)).map { channel }
            }
    }
}
