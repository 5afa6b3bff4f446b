internal import NIOCore
internal import RendezvousWire

/// First in the pipeline of a connection from a trusted proxy (`--trusted-proxy`): reads the
/// PROXY protocol header (v1 or v2) the proxy may send before the client's bytes, reports the
/// client address it names, and steps aside, passing everything after the header on (TLS or
/// HTTP). A stream that starts otherwise passes through untouched; a malformed header closes the
/// connection (the proxy is misconfigured, and nothing after it can be framed).
final class ProxyProtocolHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private var buffered: ByteBuffer?
    private let found: (InternetAddress?) -> Void
    private let failed: (String) -> Void

    /// `found` gets the header's source address (nil: none given, the peer is the client);
    /// `failed` a malformed header's description, before the connection closes.
    init(found: @escaping (InternetAddress?) -> Void, failed: @escaping (String) -> Void) {
        self.found = found
        self.failed = failed
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = Self.unwrapInboundIn(data)
        if buffered == nil {
            buffered = incoming
        } else {
            buffered!.writeBuffer(&incoming)
        }
        let head = Array(buffered!.readableBytesView.prefix(ProxyProtocolHeader.v2MaxLength))
        do {
            switch try ProxyProtocolHeader.parse(head) {
            case .needMoreBytes:
                return
            case .absent:
                break
            case .header(let length, let source):
                buffered!.moveReaderIndex(forwardBy: length)
                found(source)
            }
        } catch {
            buffered = nil
            failed(error.description)
            context.close(promise: nil)
            return
        }
        let rest = buffered!
        buffered = nil
        if rest.readableBytes > 0 { context.fireChannelRead(Self.wrapInboundOut(rest)) }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
