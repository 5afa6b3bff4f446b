public import ControlAPI
public import Logging
public import NIOCore
import NIOPosix
public import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// What the daemon does with control requests. `ControlServer` handles sockets and framing only.
public protocol ControlHandler: Sendable {
    func handle(_ request: ControlRequest) async -> ControlResponse
    /// A fresh stream of live events for one `watch` client; finishing it ends the watch.
    func events() async -> AsyncStream<ControlEvent>
}

/// The daemon's side of the control API: a Unix socket (0600) accepting newline-delimited JSON
/// requests (see `ControlAPI`). A `Service`: it stops accepting on graceful shutdown and removes
/// its socket file.
public final class ControlServer: Service {
    public let path: String
    private let handler: any ControlHandler
    private let group: any EventLoopGroup
    private let logger: Logger

    public init(path: String, handler: any ControlHandler, group: any EventLoopGroup, logger: Logger) {
        self.path = path
        self.handler = handler
        self.group = group
        self.logger = logger
    }

    /// Binds the socket; returns once it accepts connections (so callers can report readiness).
    public func bind() async throws -> BoundControlServer {
        // The check may connect to another daemon and wait for its answer: blocking I/O, so it
        // runs on NIO's blocking-I/O pool rather than on a concurrency-pool thread.
        let path = self.path
        try await NIOThreadPool.singleton.runIfActive { try ControlSocketPath.prepareForListening(path) }
        // bind(2) creates the socket file with the process umask. Changing the umask would affect
        // every thread of the process, so instead bind inside a private 0700 directory next to the
        // final path, make the file 0600 there, and rename(2) it into place: the socket appears at
        // `path` only ever as 0600, and nobody can reach it before that.
        let directory = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        var template = Array("\(directory)/.parleyd-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw ControlError.system(
                "cannot create a private directory in \(directory): \(String(cString: strerror(errno)))")
        }
        let privateDirectory = String(cString: made)
        defer { rmdir(privateDirectory) }
        let privatePath = privateDirectory + "/s"
        let channel = try await ServerBootstrap(group: group)
            .bind(unixDomainSocketPath: privatePath) { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(LineFrameDecoder(maximumLength: ControlCodec.maximumLineLength)))
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: child)
                }
            }
        guard chmod(privatePath, 0o600) == 0, rename(privatePath, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(privatePath)
            try? await channel.channel.close()
            throw ControlError.system("cannot place the control socket at \(path): \(reason)")
        }
        return BoundControlServer(channel: channel, path: path, handler: handler, logger: logger)
    }

    public func run() async throws {
        let bound = try await bind()
        try await bound.serve()
    }
}

/// A bound control socket, serving until graceful shutdown or cancellation.
public struct BoundControlServer: Sendable {
    let channel: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>
    public let path: String
    let handler: any ControlHandler
    let logger: Logger

    public func serve() async throws {
        defer { unlink(path) }
        try await withGracefulShutdownHandler {
            try await channel.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in inbound {
                        group.addTask { await self.serve(connection) }
                    }
                }
            }
        } onGracefulShutdown: {
            channel.channel.close(promise: nil)
        }
    }

    private func serve(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>) async {
        do {
            try await connection.executeThenClose { inbound, outbound in
                for try await var line in inbound {
                    let bytes = line.readBytes(length: line.readableBytes) ?? []
                    let request: ControlRequest
                    do {
                        request = try ControlCodec.decode(ControlRequest.self, from: bytes)
                    } catch {
                        try await outbound.write(Self.buffer(ControlResponse.failure("malformed request")))
                        return
                    }
                    guard request.version == controlAPIVersion else {
                        let message =
                            "parley speaks control API v\(request.version) but this parleyd speaks v\(controlAPIVersion); "
                            + "use matching versions"
                        try await outbound.write(Self.buffer(ControlResponse.failure(message)))
                        return
                    }
                    if request.method == .watch {
                        let events = await handler.events()
                        try await outbound.write(Self.buffer(ControlResponse.success()))
                        for await event in events { try await outbound.write(Self.buffer(event)) }
                        return
                    }
                    let response = await handler.handle(request)
                    try await outbound.write(Self.buffer(response))
                }
            }
        } catch {
            logger.debug("control connection ended", metadata: ["error": "\(error)"])
        }
    }

    private static func buffer(_ value: some Encodable) -> ByteBuffer {
        // Encoding our own Codable types cannot fail; fall back to a generic error line if it does.
        let line = (try? ControlCodec.line(value)) ?? Array("{\"ok\":false,\"error\":\"internal error\"}\n".utf8)
        return ByteBuffer(bytes: line)
    }
}

/// Splits a byte stream at `\n`, refusing lines longer than `maximumLength` (closing the
/// connection) so a misbehaving client cannot make the daemon buffer without bound.
struct LineFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    let maximumLength: Int

    struct LineTooLong: Error {}

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else {
            if buffer.readableBytes > maximumLength { throw LineTooLong() }
            return .needMoreData
        }
        let length = newline - buffer.readerIndex
        let line = buffer.readSlice(length: length)!
        buffer.moveReaderIndex(forwardBy: 1)
        context.fireChannelRead(wrapInboundOut(line))
        return .continue
    }
}
