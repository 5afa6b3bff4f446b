internal import Logging
internal import NIOCore
internal import RendezvousWire

/// Everything one server knows, confined to its one event loop: open connections, per-address
/// counts, and the rooms. One loop for all connections keeps this lock-free and relays in order
/// (docs/PROTOCOL.md §4.3: "in order per sender"); the work per message is small enough that one
/// core relays far more than small meetings need (Scripts/bench-rendezvous).
final class ServerState {
    let configuration: RendezvousServerConfiguration
    var limits: RendezvousServerConfiguration.Limits { configuration.limits }
    let logger: Logger
    let metrics: ServerMetrics
    let turnIssuer: TURNCredentialIssuer?
    let trustedProxies: TrustedProxies
    /// The bound STUN port, once the STUN listener is up (for WELCOME's default advertisement).
    var stunPort: Int?
    /// Wall-clock Unix seconds, for TURN credential expiry (injected by tests).
    let unixTime: () -> UInt64

    var rooms: RoomRegistry<RendezvousConnectionHandler>
    private var connections: [UInt64: RendezvousConnectionHandler] = [:]
    private var connectionsByAddress: [SourceAddressKey: Int] = [:]
    private var nextConnectionID: UInt64 = 1
    private(set) var isShuttingDown = false
    private var drained: EventLoopPromise<Void>?
    let loop: any EventLoop
    var random = SystemRandomNumberGenerator()

    init(
        configuration: RendezvousServerConfiguration, loop: any EventLoop, logger: Logger, metrics: ServerMetrics,
        unixTime: @escaping () -> UInt64
    ) {
        self.loop = loop
        self.configuration = configuration
        self.logger = logger
        self.metrics = metrics
        self.unixTime = unixTime
        turnIssuer = configuration.turn.map(TURNCredentialIssuer.init)
        trustedProxies = TrustedProxies(networks: configuration.trustedProxies)
        rooms = RoomRegistry(
            membersPerRoom: configuration.limits.membersPerRoom, roomsPerAddress: configuration.limits.roomsPerAddress)
    }

    var connectionCount: Int { connections.count }

    /// Registers a freshly accepted TCP connection. `nil` means close it unanswered: the server is
    /// at its global connection limit or shutting down. Over the per-address limit, the
    /// connection is still upgraded so the client gets a readable `too-many-connections` ERROR.
    /// A connection from a trusted proxy is counted once the client behind it is known
    /// (`identifyClient`, at the upgrade).
    func accept(_ channel: any Channel) -> RendezvousConnectionHandler? {
        metrics.connectionsAccepted.increment()
        guard !isShuttingDown, connections.count < limits.maxConnections else {
            metrics.rejected(.tooManyConnections)
            return nil
        }
        let id = nextConnectionID
        nextConnectionID += 1
        let peer = InternetAddress(channel.remoteAddress)
        var logger = logger
        logger[metadataKey: "connection"] = "\(id)"
        if configuration.logSourceAddresses, let remote = channel.remoteAddress {
            logger[metadataKey: "source"] = "\(remote)"
        }
        let handler = RendezvousConnectionHandler(
            id: id, channel: channel, peer: peer, fromTrustedProxy: trustedProxies.isTrusted(peer), state: self,
            logger: logger)
        if !handler.fromTrustedProxy { count(handler, as: SourceAddressKey(peer)) }
        connections[id] = handler
        channel.closeFuture.assumeIsolated().whenComplete { [self] _ in closed(handler) }
        metrics.connections.increment()
        logger.debug("connection accepted")
        return handler
    }

    /// For a connection from a trusted proxy, at the upgrade: the client is the nearest hop the
    /// proxies report that is not itself a trusted proxy (`TrustedProxies`); count it as that.
    func identifyClient(_ handler: RendezvousConnectionHandler, forwardedFor: [String]) {
        guard handler.fromTrustedProxy, !handler.isCounted, let peer = handler.peer else { return }
        let client = trustedProxies.clientAddress(
            peer: peer, proxyProtocolSource: handler.proxyProtocolSource, forwardedFor: ForwardedFor.hops(forwardedFor))
        if configuration.logSourceAddresses { handler.logger[metadataKey: "client"] = "\(client)" }
        count(handler, as: SourceAddressKey(client))
    }

    /// Counts a connection against its address's limit, marking it for refusal beyond it.
    private func count(_ handler: RendezvousConnectionHandler, as address: SourceAddressKey) {
        handler.counted(as: address)
        let count = connectionsByAddress[address, default: 0] + 1
        connectionsByAddress[address] = count
        if count > limits.connectionsPerAddress {
            handler.refusal = RendezvousError(
                .tooManyConnections, "too many connections from your address (\(limits.connectionsPerAddress))")
        }
    }

    /// Forgets a closed connection, its per-address count and its room membership.
    func closed(_ handler: RendezvousConnectionHandler) {
        guard connections.removeValue(forKey: handler.id) != nil else { return }
        metrics.connections.decrement()
        if handler.isCounted, let count = connectionsByAddress[handler.address] {
            connectionsByAddress[handler.address] = count > 1 ? count - 1 : nil
        }
        if case .admitted(let roomID, let memberID) = handler.phase {
            leave(roomID: roomID, memberID: memberID, address: handler.address)
        }
        handler.logger.debug("connection closed")
        if connections.isEmpty, let drained {
            self.drained = nil
            drained.succeed()
        }
    }

    private func leave(roomID: [UInt8], memberID: RendezvousMemberID, address: SourceAddressKey) {
        let roomsBefore = rooms.roomCount
        let remaining = rooms.leave(roomID: roomID, memberID: memberID, from: address)
        metrics.members.decrement()
        if rooms.roomCount < roomsBefore { metrics.rooms.decrement() }
        let left = RendezvousMessage.memberLeft(memberID).encoded()
        for member in remaining { member.send(left) }
    }

    /// Admits a connection whose proof verified (§4.3 step 3).
    func join(
        _ handler: RendezvousConnectionHandler, roomID: [UInt8]
    ) -> RoomRegistry<RendezvousConnectionHandler>.JoinOutcome {
        let roomsBefore = rooms.roomCount
        let outcome = rooms.join(roomID: roomID, member: handler, from: handler.address, using: &random)
        if case .admitted(let memberID, let others) = outcome {
            metrics.members.increment()
            if rooms.roomCount > roomsBefore { metrics.rooms.increment() }
            let joined = RendezvousMessage.memberJoined(memberID).encoded()
            for (_, member) in others { member.send(joined) }
        }
        return outcome
    }

    /// The services WELCOME offers this client (§4.2): STUN, and fresh TURN credentials.
    func services(forHost host: String?) -> [RendezvousService] {
        var services: [RendezvousService] = []
        if let advertised = configuration.stunAdvertise {
            services.append(.stun(advertised))
        } else if let stunPort, let host, !host.isEmpty {
            services.append(.stun(host.contains(":") ? "[\(host)]:\(stunPort)" : "\(host):\(stunPort)"))
        }
        if let turnIssuer {
            services += turnIssuer.issue(now: unixTime(), randomID: random.next()).map { .turn($0) }
        }
        return services
    }

    /// Tells every open connection GOING_AWAY and closes it (§4.3 step 6); refuses new ones.
    func goAway() {
        isShuttingDown = true
        askEveryoneToReconnect()
    }

    /// GOING_AWAY to every open connection, while still accepting new ones: the clients come back
    /// after the retry hint, each through the load balancer to its room's instance. After a
    /// failed instance is back, this moves the rooms that had failed over to a survivor home
    /// again (docs/OPERATIONS.md), so a newcomer routed to the home instance finds its room.
    func askEveryoneToReconnect() {
        let retry = limits.goingAwayRetry
        let milliseconds = UInt32(
            clamping: retry.components.seconds * 1000 + retry.components.attoseconds / 1_000_000_000_000_000)
        for handler in connections.values { handler.goAway(retryAfterMilliseconds: milliseconds) }
    }

    /// Completes once every connection has closed; closes those still open after `grace`.
    func whenDrained(within grace: TimeAmount) -> EventLoopFuture<Void> {
        if connections.isEmpty { return loop.makeSucceededVoidFuture() }
        let promise = loop.makePromise(of: Void.self)
        drained = promise
        loop.assumeIsolated().scheduleTask(in: grace) { [self] in
            for handler in connections.values { handler.channel.close(promise: nil) }
        }
        return promise.futureResult
    }
}
