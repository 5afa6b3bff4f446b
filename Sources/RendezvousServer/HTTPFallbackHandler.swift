internal import NIOCore
internal import NIOHTTP1

/// Answers every HTTP request that is not an acceptable WebSocket upgrade with a plain response
/// and closes: 400 for the rendezvous listener (docs/PROTOCOL.md §4.1: a client that offered no
/// `parley.v1` learns the server does not speak its version), or whatever `respond` decides (the
/// metrics listener). Only the request head matters; bodies are ignored.
final class HTTPFallbackHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    struct Response {
        var status: HTTPResponseStatus
        var contentType = "text/plain; charset=utf-8"
        var body: [UInt8]
    }

    private let respond: (HTTPRequestHead) -> Response

    init(respond: @escaping (HTTPRequestHead) -> Response) {
        self.respond = respond
    }

    static let notParley = Response(
        status: .badRequest,
        body: Array("This is a Parley rendezvous: connect with a WebSocket offering subprotocol parley.v1.\n".utf8))

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let head) = Self.unwrapInboundIn(data) else { return }
        let response = respond(head)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: String(response.body.count))
        headers.add(name: "Connection", value: "close")
        context.write(
            Self.wrapOutboundOut(
                .head(HTTPResponseHead(version: head.version, status: response.status, headers: headers))),
            promise: nil)
        context.write(Self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: response.body)))), promise: nil)
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}
