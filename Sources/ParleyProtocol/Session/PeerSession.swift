public import ParleyCore
public import Sodium

/// What happened to a session that the node should know about (docs/PROTOCOL.md §8.6).
public enum PeerSessionEvent: Sendable, Hashable {
    /// The first keys of this session are usable in both directions.
    case established
    /// A new handshake replaced the keys without interrupting traffic.
    case rekeyed
    /// Nobody answered our initiations for `rekeyAttemptTime`: the path is probably dead.
    case handshakeTimedOut
    /// The keys expired with no replacement: no traffic until a new handshake completes.
    case expired
}

/// Why a received datagram was dropped (for counters and debugging; never sent anywhere).
public enum PeerSessionDrop: Sendable, Hashable {
    case malformed
    case unknownPacketType
    case handshake(HandshakeRejection)
    /// An initiation arriving within `minimumInitiationInterval` of the last accepted one, or
    /// beyond the budget of initiations that may cost Diffie-Hellman (§7.3).
    case initiationFlood
    /// A byte-for-byte copy of an initiation already processed: a replay, dropped before any
    /// Diffie-Hellman.
    case repeatedInitiation
    /// The peer's initiation crossed ours and we are the pair's preferred initiator (§7.5).
    case glareLostByPeer
    case unknownIndex
    case expiredKeys
    case replayed
    case authenticationFailed
    case unknownInnerType(UInt8)
}

/// A decrypted transport payload: its inner type and body (a slice of the received datagram).
public struct InnerPayload: Sendable, Hashable {
    public let type: InnerPacketType
    public let body: ArraySlice<UInt8>
}

/// What one step of a `PeerSession` asks the caller to do. Empty arrays do not allocate.
public struct PeerSessionOutput: Sendable {
    /// Datagrams to send to the peer over the ICE path, in order.
    public var datagrams: [[UInt8]] = []
    /// A payload that arrived.
    public var payload: InnerPayload?
    public var events: [PeerSessionEvent] = []
    /// Set when the input datagram was dropped, and why.
    public var dropped: PeerSessionDrop?
}

/// Running counts, for `parley status` and tests.
public struct PeerSessionStatistics: Sendable, Hashable {
    public var packetsSent = 0
    public var packetsReceived = 0
    public var handshakesCompleted = 0
    public var authenticationFailures = 0
    public var replaysRejected = 0
    public var datagramsDropped = 0
}

/// The encrypted session with one peer over its ICE path (docs/PROTOCOL.md §7–§8): a plain state
/// machine. Feed it received datagrams, outgoing payloads and clock ticks, all with the current
/// monotonic time; it returns datagrams to send, payloads that arrived and events. It never reads
/// a clock itself (the TAI64N timestamp comes from the injected wall clock), never sleeps and
/// never does I/O, so every timer is testable.
///
/// Keys: `current` sends and receives; `previous` still receives for packets in flight after a
/// rekey; `next` holds the responder's fresh keys until the initiator's first packet under them
/// confirms them, so traffic never gaps during a rekey.
public struct PeerSession: Sendable {
    public let peer: PeerIdentity
    /// Whether we are the pair's preferred initiator: our identity key is lexicographically
    /// smaller (§7.5).
    public let isPreferredInitiator: Bool
    public private(set) var statistics = PeerSessionStatistics()

    private let local: NodeIdentity
    private let keys: RoomKeys
    private let version: UInt8
    private let wallClock: WallClock
    /// mac1 keys of messages to the peer and to us.
    private let peerMAC1Key: SecureBytes
    private let ourMAC1Key: SecureBytes

    var previous: TransportKeypair?
    var current: TransportKeypair?
    var next: TransportKeypair?
    private var pending: (initiation: ParleyHandshake.Initiation, sentAt: Instant)?
    /// The path just came up: the first initiation over it is resent sooner.
    private var retrySoon = false
    private var retryInterval: Duration {
        retrySoon ? SessionTimers.firstRetryAfterPathUp : SessionTimers.rekeyTimeout
    }
    /// When the current series of initiation attempts began (for `rekeyAttemptTime`).
    private var attemptsStartedAt: Instant?
    /// After giving up, no new attempt until `start` or a message from the peer.
    private var gaveUp = false
    private var startedAt: Instant?
    private var lastOwnTimestamp: TAI64N?
    private var lastPeerTimestamp: TAI64N?
    private var lastInitiationAcceptedAt: Instant?
    private var lastDataReceivedAt: Instant?
    private var lastSentAt: Instant?
    /// Initiations that may still cost Diffie-Hellman (§7.3), timed from `budgetOrigin`.
    private var initiationBudget: TokenBucket?
    private var budgetOrigin: Instant?
    /// mac1 of the initiations we did Diffie-Hellman for: a copy of one is a replay.
    private var processedInitiations = RecentValues(capacity: SessionTimers.rememberedInitiations)

    /// A session with `peer`, whose identity came from a verified HELLO. `protocolVersion` is the
    /// version both HELLOs share (§12).
    public init(
        local: NodeIdentity, peer: PeerIdentity, keys: RoomKeys, protocolVersion: UInt8 = 1,
        wallClock: WallClock = .system
    ) {
        self.local = local
        self.peer = peer
        self.keys = keys
        version = protocolVersion
        self.wallClock = wallClock
        isPreferredInitiator = local.publicKey.lexicographicallyPrecedes(peer.identityKey)
        peerMAC1Key = HandshakePacket.mac1Key(macKey: keys.macKey, receiverStatic: peer.staticKey)
        ourMAC1Key = HandshakePacket.mac1Key(macKey: keys.macKey, receiverStatic: local.peerIdentity.staticKey)
    }

    /// Whether payloads can be sent now.
    public var isEstablished: Bool { current != nil }

    /// The protocol version of the link (§12).
    public var protocolVersion: UInt8 { version }

    /// The room these sessions belong to (§3.2).
    public var roomID: [UInt8] { keys.roomID }

    // MARK: Inputs

    /// The ICE path to the peer is up (again): the preferred initiator starts a handshake unless
    /// the session already has keys (they outlive a path change).
    public mutating func start(now: Instant) -> PeerSessionOutput {
        startedAt = now
        gaveUp = false
        attemptsStartedAt = nil
        retrySoon = true
        return tick(now: now)
    }

    /// Drops every key and any handshake in progress (zeroing them), e.g. when the peer leaves.
    public mutating func close() {
        previous = nil
        current = nil
        next = nil
        pending = nil
        startedAt = nil
    }

    /// Encrypts a payload for the peer into `packet` (its storage is reused: keep one buffer per
    /// sending thread). Returns false, leaving `packet` unspecified, when there are no usable keys:
    /// drop the payload (audio) or retry after `.established`.
    public mutating func seal(
        _ type: InnerPacketType, body: some ReadableBytes, now: Instant, into packet: inout [UInt8]
    ) -> Bool {
        guard current != nil else { return false }
        // In place, so the hot path copies no keypair. Expired keys are removed (with an
        // `.expired` event) by `tick`; here they just do not send.
        let sealed = withKeypair(in: .current) { keypair in
            guard keypair.canSend, !keypair.isExpired(at: now) else { return false }
            keypair.seal(innerType: type.rawValue, body: body, into: &packet)
            return true
        }
        guard sealed else { return false }
        lastSentAt = now
        statistics.packetsSent += 1
        return true
    }

    /// Handles one datagram received from the peer's ICE path. A transport packet is decrypted in
    /// place, so pass an array nothing else holds to avoid a copy.
    public mutating func receive(_ datagram: consuming [UInt8], now: Instant) -> PeerSessionOutput {
        var output = PeerSessionOutput()
        switch datagram.first.flatMap(PacketType.init(rawValue:)) {
        case .handshakeInitiation: receiveInitiation(datagram, now: now, output: &output)
        case .handshakeResponse: receiveResponse(datagram, now: now, output: &output)
        case .transportData: receiveTransport(&datagram, now: now, output: &output)
        case nil: output.dropped = datagram.isEmpty ? .malformed : .unknownPacketType
        }
        if output.dropped != nil { statistics.datagramsDropped += 1 }
        return output
    }

    /// Runs the timers: key expiry, initiation retries, rekeying, keepalives. Call it at least at
    /// `nextDeadline` (calling more often is harmless).
    public mutating func tick(now: Instant) -> PeerSessionOutput {
        var output = PeerSessionOutput()
        expireKeys(now: now, output: &output)
        if let pending, now - pending.sentAt >= retryInterval {
            retrySoon = false
            if let started = attemptsStartedAt, now - started >= SessionTimers.rekeyAttemptTime {
                self.pending = nil
                attemptsStartedAt = nil
                gaveUp = true
                output.events.append(.handshakeTimedOut)
            } else {
                output.datagrams.append(initiate(now: now))
            }
        }
        if pending == nil, !gaveUp, wantsHandshake(now: now) {
            output.datagrams.append(initiate(now: now))
        }
        if let received = lastDataReceivedAt, current != nil, lastSentAt.map({ $0 < received }) ?? true,
            now - received >= SessionTimers.keepaliveTimeout
        {
            var packet: [UInt8] = []
            if seal(.keepalive, body: [UInt8](), now: now, into: &packet) { output.datagrams.append(packet) }
        }
        return output
    }

    /// The latest time by which `tick` should run next, or nil if no timer is pending.
    public var nextDeadline: Instant? {
        // Called after every input the meeting handles, for every link: no allocation. Each
        // deadline is exactly when `tick` would act, so a tick at it always moves it on (a
        // deadline that stays put would wake the node over and over).
        var earliest: Instant?
        func consider(_ deadline: Instant?) {
            guard let deadline else { return }
            if earliest.map({ deadline < $0 }) ?? true { earliest = deadline }
        }
        if let previous { consider(previous.createdAt + SessionTimers.rejectAfterTime) }
        if let current { consider(current.createdAt + SessionTimers.rejectAfterTime) }
        if let next { consider(next.createdAt + SessionTimers.rejectAfterTime) }
        if let pending { consider(pending.sentAt + retryInterval) }
        consider(handshakeDeadline)
        if let received = lastDataReceivedAt, current != nil, lastSentAt.map({ $0 < received }) ?? true {
            consider(received + SessionTimers.keepaliveTimeout)
        }
        return earliest
    }

    /// When `wantsHandshake` turns true without any other input, if it will.
    private var handshakeDeadline: Instant? {
        guard pending == nil, !gaveUp, let startedAt else { return nil }
        if let current {
            if current.sendCounter >= SessionTimers.rekeyAfterMessages { return current.createdAt }
            let rekeyAge = current.isInitiator ? SessionTimers.rekeyAfterTime : SessionTimers.responderRekeyAfterTime
            let due = current.createdAt + rekeyAge
            return next.map { max(due, $0.createdAt + SessionTimers.rekeyTimeout) } ?? due
        }
        if next != nil { return nil }
        if isPreferredInitiator { return startedAt }
        return max(startedAt, lastInitiationAcceptedAt ?? startedAt) + SessionTimers.rekeyTimeout
    }

    // MARK: Handshake

    /// Whether a new handshake should start now (§7.5, §8.6).
    private func wantsHandshake(now: Instant) -> Bool {
        guard let startedAt else { return false }
        if let current {
            if current.sendCounter >= SessionTimers.rekeyAfterMessages { return true }
            let rekeyAge = current.isInitiator ? SessionTimers.rekeyAfterTime : SessionTimers.responderRekeyAfterTime
            // A responder waiting for its new keys to be confirmed leaves the rekey to the initiator.
            return current.age(at: now) >= rekeyAge && (next == nil || next!.age(at: now) >= SessionTimers.rekeyTimeout)
        }
        if next != nil { return false }
        if isPreferredInitiator { return true }
        // The other side initiates only if the preferred initiator has not managed to for a while.
        let quietSince = max(startedAt, lastInitiationAcceptedAt ?? startedAt)
        return now - quietSince >= SessionTimers.rekeyTimeout
    }

    /// Starts (or retries) a handshake: a new index, ephemeral and timestamp each time.
    private mutating func initiate(now: Instant) -> [UInt8] {
        var timestamp = TAI64N(unixNanoseconds: wallClock.unixNanoseconds())
        if let last = lastOwnTimestamp, timestamp <= last { timestamp = last.successor }
        lastOwnTimestamp = timestamp
        let initiation = ParleyHandshake.initiate(
            local: local, peer: peer, keys: keys, version: version, localIndex: freshIndex(), timestamp: timestamp)
        pending = (initiation, now)
        if attemptsStartedAt == nil { attemptsStartedAt = now }
        return initiation.packet
    }

    private mutating func receiveInitiation(
        _ datagram: [UInt8], now: Instant, output: inout PeerSessionOutput
    ) {
        let accepted: ParleyHandshake.AcceptedInitiation
        do throws(HandshakeRejection) {
            try ParleyHandshake.checkInitiation(datagram, mac1Key: ourMAC1Key)
            // Before any Diffie-Hellman (§7.3 steps 3–4): a captured initiation keeps a valid
            // mac1, so copies of it, and a flood of others, must cost no more than a hash.
            let fingerprint = Array(datagram.suffix(HandshakePacket.mac1Length))
            guard !processedInitiations.contains(fingerprint) else {
                output.dropped = .repeatedInitiation
                return
            }
            guard takeInitiationToken(now: now) else {
                output.dropped = .initiationFlood
                return
            }
            processedInitiations.insert(fingerprint)
            accepted = try ParleyHandshake.readInitiation(
                datagram, local: local, peer: peer, keys: keys, version: version)
            guard lastPeerTimestamp.map({ accepted.timestamp > $0 }) ?? true else {
                throw HandshakeRejection.replayedTimestamp
            }
        } catch {
            output.dropped = .handshake(error)
            return
        }
        if let last = lastInitiationAcceptedAt, now - last < SessionTimers.minimumInitiationInterval {
            output.dropped = .initiationFlood
            return
        }
        if pending != nil {
            // Glare (§7.5): both sides initiated at once. The preferred initiator keeps its own
            // handshake and ignores the peer's; the other side abandons its own and answers.
            if isPreferredInitiator {
                output.dropped = .glareLostByPeer
                return
            }
            pending = nil
            attemptsStartedAt = nil
            retrySoon = false
        }
        let response: (packet: [UInt8], keys: TransportKeys)
        let localIndex = freshIndex()
        do {
            response = try ParleyHandshake.respond(to: accepted, peer: peer, keys: keys, localIndex: localIndex)
        } catch {
            output.dropped = .handshake(error)
            return
        }
        lastPeerTimestamp = accepted.timestamp
        lastInitiationAcceptedAt = now
        gaveUp = false
        next = TransportKeypair(
            localIndex: localIndex, remoteIndex: accepted.remoteIndex, keys: response.keys, isInitiator: false,
            createdAt: now)
        output.datagrams.append(response.packet)
    }

    private mutating func receiveResponse(
        _ datagram: [UInt8], now: Instant, output: inout PeerSessionOutput
    ) {
        guard let pending else {
            output.dropped = .handshake(.unknownIndex)
            return
        }
        let result: (remoteIndex: UInt32, keys: TransportKeys)
        do {
            result = try ParleyHandshake.acceptResponse(datagram, initiation: pending.initiation, mac1Key: ourMAC1Key)
        } catch {
            // The pending handshake stays as it was: a forged response cannot cancel it.
            output.dropped = .handshake(error)
            return
        }
        self.pending = nil
        attemptsStartedAt = nil
        gaveUp = false
        retrySoon = false
        let keypair = TransportKeypair(
            localIndex: pending.initiation.localIndex, remoteIndex: result.remoteIndex, keys: result.keys,
            isInitiator: true, createdAt: now)
        // An unconfirmed responder keypair from a crossed handshake is superseded.
        next = nil
        install(keypair, output: &output)
        // Confirm the keys to the responder at once (§8.6), so it can start sending with them.
        var packet: [UInt8] = []
        if seal(.keepalive, body: [UInt8](), now: now, into: &packet) { output.datagrams.append(packet) }
    }

    /// Makes `keypair` current; the old current becomes previous (the old previous is zeroed).
    private mutating func install(_ keypair: TransportKeypair, output: inout PeerSessionOutput) {
        output.events.append(current == nil ? .established : .rekeyed)
        previous = current
        current = keypair
        statistics.handshakesCompleted += 1
    }

    // MARK: Transport

    private mutating func receiveTransport(
        _ packet: inout [UInt8], now: Instant, output: inout PeerSessionOutput
    ) {
        guard let header = TransportHeader(packet: packet) else {
            output.dropped = .malformed
            return
        }
        guard let slot = slot(forLocalIndex: header.receiverIndex) else {
            output.dropped = .unknownIndex
            return
        }
        // All in place on the slot's keypair, so its replay window is never copied.
        let drop: PeerSessionDrop? = withKeypair(in: slot) { keypair in
            guard !keypair.isExpired(at: now) else { return .expiredKeys }
            // Cheap check first; the window only records after authentication (§8.4).
            guard keypair.replayWindow.wouldAccept(header.counter) else { return .replayed }
            guard keypair.open(&packet, counter: header.counter) else { return .authenticationFailed }
            _ = keypair.acceptCounter(header.counter)
            return nil
        }
        // A packet that fails to authenticate is only counted: anyone who learns the index (it is
        // in clear) and can spoof the peer's address could send it, so it must not change any
        // authenticated state (§8.7, as WireGuard).
        switch drop {
        case .replayed?: statistics.replaysRejected += 1
        case .authenticationFailed?: statistics.authenticationFailures += 1
        default: break
        }
        if let drop {
            output.dropped = drop
            return
        }
        statistics.packetsReceived += 1
        gaveUp = false
        if slot == .next, let confirmed = next {
            // The initiator used the new keys: they are confirmed (§8.6).
            next = nil
            install(confirmed, output: &output)
        }
        let type = InnerPacketType(rawValue: packet[TransportHeader.length])
        let body = packet[(TransportHeader.length + 1)..<(packet.count - ChaCha20Poly1305.tagLength)]
        switch type {
        case .keepalive:
            if !body.isEmpty { output.dropped = .malformed }
        case _ where type.isKnown(in: version):
            lastDataReceivedAt = now
            output.payload = InnerPayload(type: type, body: body)
        default:
            output.dropped = .unknownInnerType(type.rawValue)
        }
    }

    enum Slot { case previous, current, next }

    private func slot(forLocalIndex index: UInt32) -> Slot? {
        if current?.localIndex == index { return .current }
        if next?.localIndex == index { return .next }
        if previous?.localIndex == index { return .previous }
        return nil
    }

    /// Runs `body` on the keypair in `slot` in place (the slot must hold one).
    private mutating func withKeypair<R>(in slot: Slot, _ body: (inout TransportKeypair) -> R) -> R {
        switch slot {
        case .previous: body(&previous!)
        case .current: body(&current!)
        case .next: body(&next!)
        }
    }

    /// Drops keys older than `rejectAfterTime` (zeroing them).
    private mutating func expireKeys(now: Instant, output: inout PeerSessionOutput) {
        if previous?.isExpired(at: now) == true { previous = nil }
        if next?.isExpired(at: now) == true { next = nil }
        if current?.isExpired(at: now) == true {
            current = nil
            output.events.append(.expired)
        }
    }

    /// Takes one of the initiations that may cost Diffie-Hellman now (§7.3), if any is left.
    private mutating func takeInitiationToken(now: Instant) -> Bool {
        let origin = budgetOrigin ?? now
        budgetOrigin = origin
        let elapsed = (now - origin).components
        let nanoseconds =
            UInt64(max(0, elapsed.seconds)) * 1_000_000_000 + UInt64(max(0, elapsed.attoseconds) / 1_000_000_000)
        var budget =
            initiationBudget
            ?? TokenBucket(
                rate: SessionTimers.initiationsPerSecond, capacity: SessionTimers.initiationBurst, now: nanoseconds)
        defer { initiationBudget = budget }
        return budget.take(now: nanoseconds)
    }

    /// A random non-zero index different from every index this session uses.
    private func freshIndex() -> UInt32 {
        let used = Set(
            [previous?.localIndex, current?.localIndex, next?.localIndex, pending?.initiation.localIndex].compactMap {
                $0
            })
        while true {
            let candidate = UInt32(RandomBytes.uniform(UInt32.max)) + 1
            if !used.contains(candidate) { return candidate }
        }
    }
}

/// The last `capacity` distinct values inserted, oldest forgotten first.
struct RecentValues: Sendable {
    let capacity: Int
    private var members: Set<[UInt8]> = []
    private var order: [[UInt8]] = []
    private var next = 0

    init(capacity: Int) { self.capacity = capacity }

    func contains(_ value: [UInt8]) -> Bool { members.contains(value) }

    mutating func insert(_ value: [UInt8]) {
        guard members.insert(value).inserted else { return }
        if order.count < capacity {
            order.append(value)
        } else {
            members.remove(order[next])
            order[next] = value
            next = (next + 1) % capacity
        }
    }
}
