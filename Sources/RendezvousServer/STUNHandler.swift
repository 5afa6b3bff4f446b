internal import NIOCore
internal import RendezvousWire

/// The UDP side of `--stun-listen`: answers STUN Binding requests (RFC 8489) with the source
/// address they came from, via the pure `STUNBindingResponder`. Stateless; anything else is
/// dropped unanswered. A response is at most as large as its request plus 44 bytes, so the
/// responder is no useful amplifier.
final class STUNHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    private let metrics: ServerMetrics

    init(metrics: ServerMetrics) {
        self.metrics = metrics
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = Self.unwrapInboundIn(data)
        guard let source = STUNTransportAddress(envelope.remoteAddress),
            let response = envelope.data.withUnsafeReadableBytes({ STUNBindingResponder.response(to: $0, from: source) }
            )
        else { return }
        let reply = AddressedEnvelope(
            remoteAddress: envelope.remoteAddress, data: context.channel.allocator.buffer(bytes: response))
        context.writeAndFlush(Self.wrapOutboundOut(reply), promise: nil)
        metrics.stunResponses.increment()
    }
}

extension STUNTransportAddress {
    /// The IP address and port of a NIO socket address (`nil` for a Unix socket).
    init?(_ address: SocketAddress) {
        guard let port = address.port, let ip = InternetAddress(address) else { return nil }
        self.init(address: ip.bytes, port: UInt16(port))
    }
}
