import ICE
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ParleyCore
import Synchronization

/// `turns:` servers, for networks that let only HTTPS out. libnice's TURN client speaks TCP but
/// not TLS (its TLS relay type is Google's old pseudo-TLS framing, which a TURN server such as
/// coturn refuses), while a TURN server speaks the same messages over TLS as over TCP (RFC 6062,
/// RFC 7065). So for each `turns:` server the node listens on a loopback port, gives libnice that
/// port as a `turn:…?transport=tcp` server, and carries each of libnice's connections inside TLS
/// to the real server, whose certificate is verified (the system's CAs, or `--turn-ca`). Only TURN
/// messages cross a tunnel; the media in them is sealed by each pair's session anyway.
final class TURNTLSTunnels: Sendable {
    private let context: NIOSSLContext
    private let logger: Logger
    private let open = Mutex<[Tunnel]>([])

    /// `caFile`: PEM certificates to trust instead of the system's CAs (`--turn-ca`).
    init(caFile: String?, logger: Logger) throws(NodeError) {
        var tls = TLSConfiguration.makeClientConfiguration()
        if let caFile { tls.trustRoots = .file(caFile) }
        do {
            context = try NIOSSLContext(configuration: tls)
        } catch {
            throw NodeError(
                "TURN over TLS: cannot load \(caFile.map { "--turn-ca \($0)" } ?? "the system's CAs"): \(error)")
        }
        self.logger = logger
    }

    /// Starts a tunnel to the `turns:` server `host` (at `address`), and returns where libnice
    /// connects to reach it.
    func open(host: String, address: IPAddress, port: UInt16) async throws -> ICEServerEndpoint {
        let tunnel = try await Tunnel.start(
            to: SocketAddress(ipAddress: address.description, port: Int(port)),
            serverName: IPAddress(host) == nil ? host : nil, context: context, logger: logger)
        open.withLock { $0.append(tunnel) }
        guard let loopback = IPAddress("127.0.0.1") else { throw NodeError("127.0.0.1 is not an address") }
        return ICEServerEndpoint(address: loopback, port: tunnel.localPort)
    }

    /// Stops listening and ends every connection (after the ICE agent released its allocations).
    func close() async {
        for tunnel in open.withLock({ tunnels in
            defer { tunnels = [] }; return tunnels
        }) { await tunnel.close() }
    }

    /// One listener on 127.0.0.1 for one server; each accepted connection gets its own TLS one.
    private struct Tunnel: Sendable {
        let localPort: UInt16
        let listener: any Channel
        let accepting: Task<Void, Never>

        static func start(
            to server: SocketAddress, serverName: String?, context: NIOSSLContext, logger: Logger
        ) async throws -> Tunnel {
            let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                .bind(host: "127.0.0.1", port: 0) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
            let serverChannel = listener.channel
            let accepting = Task<Void, Never> {
                _ = try? await listener.executeThenClose { connections in
                    try await withThrowingDiscardingTaskGroup { group in
                        for try await connection in connections {
                            group.addTask {
                                await carry(
                                    connection, to: server, serverName: serverName, context: context, logger: logger)
                            }
                        }
                    }
                }
            }
            return Tunnel(
                localPort: UInt16(serverChannel.localAddress?.port ?? 0), listener: serverChannel, accepting: accepting)
        }

        func close() async {
            accepting.cancel()
            try? await listener.close()
            await accepting.value
        }

        /// Copies bytes both ways until either side closes; then both close.
        private static func carry(
            _ local: NIOAsyncChannel<ByteBuffer, ByteBuffer>, to server: SocketAddress, serverName: String?,
            context: NIOSSLContext, logger: Logger
        ) async {
            let remote: NIOAsyncChannel<ByteBuffer, ByteBuffer>
            do {
                remote = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                    .connectTimeout(.seconds(5))
                    .connect(to: server) { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(
                                NIOSSLClientHandler(context: context, serverHostname: serverName))
                            return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                        }
                    }
            } catch {
                logger.notice(
                    "TURN over TLS: cannot reach the server", metadata: ["server": "\(server)", "error": "\(error)"])
                try? await local.channel.close()
                return
            }
            do {
                try await local.executeThenClose { fromICE, toICE in
                    try await remote.executeThenClose { fromServer, toServer in
                        try await withThrowingTaskGroup(of: Void.self) { group in
                            group.addTask { for try await bytes in fromICE { try await toServer.write(bytes) } }
                            group.addTask { for try await bytes in fromServer { try await toICE.write(bytes) } }
                            try await group.next()
                            group.cancelAll()
                        }
                    }
                }
            } catch {
                // The certificate is checked in the TLS handshake, on the first bytes carried.
                logger.notice(
                    "TURN over TLS: connection ended", metadata: ["server": "\(server)", "error": "\(error)"])
            }
        }
    }
}
