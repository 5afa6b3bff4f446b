import ICE
import MeetingCore
import ParleyAudio
import ParleyCore
import ParleyProtocol
import Synchronization

/// One peer's encrypted path: its `LinkSession` (the session of docs/PROTOCOL.md §7–§8 with its
/// REPORTs and facts) over its ICE stream, fed by three threads — the audio capture thread seals media, the ICE thread decrypts what
/// arrives, and the meeting's driver runs the session's timers and sends session control. The
/// session sits behind a mutex held only for the session step itself (microseconds; a
/// responder's handshake, ~0.5 ms, is the longest); sending and the audio hand-off happen
/// outside it. What the meeting must know is pushed as `SessionFact`s through `facts` as it
/// happens; counters for status are read with `metrics`.
final class PeerTransport: Sendable {
    let stream: ICEStream
    let channel: ReceiveChannel
    /// The peer's identity key (relayed packets name it).
    let peerKey: [UInt8]
    private let state: Mutex<State>
    private let facts: @Sendable (SessionFact) -> Void
    private let router: RelayRouter
    /// The transport of the member our datagrams to this peer go through (§13), nil: over ICE.
    private let relay = Mutex<PeerTransport?>(nil)

    /// Counters for status.
    struct Metrics: Sendable {
        var mediaReceived: UInt64
        var mediaSent: UInt64
        var rttMs: Double?
        var authenticationFailures: Int
        var forgedPassedOn: Int
    }

    private struct State {
        var link: LinkSession
        var meter = LinkMeter()
        /// Sealing buffers of the driver and of relayed packets (the capture thread has its own,
        /// in `MediaFanout`).
        var controlPacket: [UInt8] = []
        var relayPacket: [UInt8] = []
        /// This session's datagrams that went through a member (§13): the ICE stream toward
        /// the peer never sees them, the member's stream counts them among its own.
        var relayed = ICETrafficCounts()
    }

    init(
        session: PeerSession, fanOutVerifier: FanOutVerifier, stream: ICEStream, channel: ReceiveChannel,
        timing: MeetingTiming, router: RelayRouter, facts: @escaping @Sendable (SessionFact) -> Void
    ) {
        self.stream = stream
        self.channel = channel
        self.facts = facts
        self.router = router
        peerKey = session.peer.identityKey
        state = Mutex(State(link: LinkSession(session: session, timing: timing, fanOutVerifier: fanOutVerifier)))
    }

    var metrics: Metrics {
        state.withLock {
            Metrics(
                mediaReceived: $0.link.mediaReceived, mediaSent: $0.link.mediaSent, rttMs: $0.link.rttMs,
                authenticationFailures: $0.link.authenticationFailures, forgedPassedOn: $0.link.fanOutFailures)
        }
    }

    // MARK: Driver

    /// The ICE path is (again) up: send what was held for it and start the session over it.
    func start(now: Instant, rehandshake: Bool) {
        flush()
        deliver(state.withLock { $0.link.start(now: now, rehandshake: rehandshake) })
    }

    /// When `tick` next has work (handshake retries, rekeying, keepalives, expiry).
    var nextDeadline: Instant? { state.withLock { $0.link.nextDeadline } }

    /// Runs the session's timers.
    func tick(now: Instant) {
        deliver(state.withLock { $0.link.tick(now: now) })
    }

    /// Seals and sends one session control message; false if there are no keys yet.
    @discardableResult
    func sendControl(_ message: SessionControl, now: Instant) -> Bool {
        let body = message.encoded()
        let packet: [UInt8]? = state.withLock { state in
            guard state.link.seal(.sessionControl, body: body, now: now, into: &state.controlPacket) else {
                return nil
            }
            return state.controlPacket
        }
        guard let packet else { return false }
        return transmit(packet)
    }

    /// Sends the peer a relay packet (§13.2) sealed under this session: something we ask it to
    /// carry, or something we carry for others to it. False without keys or a path.
    @discardableResult
    func sendRelay(_ relayed: RelayPacket, now: Instant) -> Bool {
        let packet: [UInt8]? = state.withLock { state in
            guard state.link.seal(relayed, now: now, into: &state.relayPacket) else { return nil }
            return state.relayPacket
        }
        guard let packet else { return false }
        return transmit(packet)
    }

    /// Sends datagrams through `transport`'s member from now on (nil: over ICE again).
    func setRoute(through transport: PeerTransport?) {
        relay.withLock { $0 = transport }
    }

    /// One datagram of this link's session to the peer: over ICE, or through the member (§13.2).
    @discardableResult
    private func transmit(_ datagram: [UInt8]) -> Bool {
        guard let through = relay.withLock({ $0 }) else { return stream.send(datagram) }
        guard through.sendRelay(RelayPacket(kind: .forward, peer: peerKey, payload: datagram), now: .now) else {
            return false
        }
        state.withLock {
            $0.relayed.packetsSent += 1
            $0.relayed.bytesSent += UInt64(datagram.count)
        }
        return true
    }

    /// What went to and came from the peer: over ICE and through a member.
    var traffic: ICETrafficCounts {
        let relayed = state.withLock { $0.relayed }
        var total = stream.traffic
        total.packetsSent += relayed.packetsSent
        total.bytesSent += relayed.bytesSent
        total.packetsReceived += relayed.packetsReceived
        total.bytesReceived += relayed.bytesReceived
        return total
    }

    /// Sends a REPORT (§10.1). `closesInterval`: this REPORT ends a loss measurement interval.
    func sendReport(closesInterval: Bool, muted: Bool, recording: Bool, now: Instant) {
        let statistics = channel.statistics
        let counts = Self.counts(statistics, traffic)
        let report = state.withLock { state in
            if closesInterval { state.meter.closeInterval(counts, at: now) }
            let reception = LinkSession.Reception(
                expected: statistics.expected,
                jitterMicroseconds: UInt32(
                    clamping: statistics.jitter.components.seconds * 1_000_000
                        + statistics.jitter.components.attoseconds / 1_000_000_000_000),
                lossPermille: state.meter.lossPermille, queueDelay: statistics.queueDelay)
            return state.link.report(
                nowMs: MeetingClock.milliseconds(now), reception: reception, muted: muted, recording: recording)
        }
        sendControl(.report(report), now: now)
    }

    /// What status shows of this link's traffic: rates over the last second or two and loss
    /// over the last five.
    func measurements(now: Instant) -> LinkMeter.Measurements {
        let counts = Self.counts(channel.statistics, traffic)
        return state.withLock { $0.meter.measurements(counts, at: now) }
    }

    private static func counts(_ statistics: ReceiveStatistics, _ traffic: ICETrafficCounts) -> LinkMeter.Counts {
        LinkMeter.Counts(
            expected: statistics.expected, received: statistics.received, bytesSent: traffic.bytesSent,
            bytesReceived: traffic.bytesReceived)
    }

    /// Ends the session (keys zeroed).
    func close() {
        state.withLock { $0.link.close() }
    }

    /// What the peer's frames passed on by others have used of their counters (§15.2).
    var fanOutVerifier: FanOutVerifier { state.withLock { $0.link.fanOutVerifier } }

    // MARK: ICE thread (receive)

    /// Handles one datagram from the peer: handshake answers go straight back out, media goes to
    /// the audio channel, what the meeting must know is pushed as facts.
    /// `via`: the member that relayed it (§13), nil when it came over ICE.
    func receive(_ datagram: consuming [UInt8], now: Instant, via: [UInt8]? = nil) {
        var pending = datagram
        let output = state.withLock { state in
            // Moved out, so the session decrypts this array in place without copying it.
            var taken: [UInt8] = []
            swap(&taken, &pending)
            if via != nil {
                state.relayed.packetsReceived += 1
                state.relayed.bytesReceived += UInt64(taken.count)
            }
            return state.link.receive(taken, now: now, nowMs: MeetingClock.milliseconds(now), via: via)
        }
        play(output)
        if let frame = output.fanOut { router.fanOut(frame, from: self, now: now) }
        if let relayed = output.relay { router.handle(relayed, from: self, now: now) }
    }

    /// A signed frame of this peer that another member passed on (§15.2).
    func receiveFanned(_ frame: ArraySlice<UInt8>, now: Instant) {
        play(state.withLock { $0.link.receiveFanned(frame, now: now) })
    }

    /// Media to the audio channel, the rest to the meeting.
    private func play(_ output: LinkSession.Output) {
        if let media = output.media { media.withUnsafeBytes { channel.receive($0) } }
        deliver(output)
        if channel.takeQueueReachedBackOff() { facts(.queueRising) }
    }

    // MARK: Capture thread

    /// Seals one media payload into `scratch` (the capture thread's own buffer) and sends it;
    /// `.fanOut`: a signed frame for the peer to play and pass on (§15.2).
    func sendMedia(
        _ payload: UnsafeRawBufferPointer, as type: InnerPacketType = .media, scratch: inout [UInt8],
        now: Instant
    ) {
        if state.withLock({ $0.link.seal(type, body: payload, now: now, into: &scratch) }) { transmit(scratch) }
    }

    // MARK: Sending and facts

    /// Sends a step's datagrams and pushes its facts.
    private func deliver(_ output: LinkSession.Output) {
        send(output.datagrams)
        for fact in output.facts { facts(fact) }
    }

    /// Sends what the session produced (handshake messages, keepalives). One the ICE stream could
    /// not send — typically our handshake response, when the peer's initiation reached us over a
    /// pair our side has not selected yet — is held and sent when the path comes up (`flush`),
    /// instead of leaving the initiator to retry after REKEY_TIMEOUT (5 s).
    private func send(_ datagrams: [[UInt8]]) {
        for datagram in datagrams where !transmit(datagram) {
            held.withLock { held in
                held.append(datagram)
                if held.count > Self.heldLimit { held.removeFirst() }
            }
        }
    }

    /// Sends the held session datagrams (call when ICE reports the path up).
    func flush() {
        let datagrams = held.withLock { held in
            defer { held = [] }
            return held
        }
        send(datagrams)
    }

    private static let heldLimit = 4
    private let held = Mutex<[[UInt8]]>([])
}

/// The node's relay data path (docs/PROTOCOL.md §13): the transport toward each member, and the
/// table of what this node carries for others. Every relayed packet passes through `handle` on
/// the ICE thread; the lock is held for the table's decision only, never while sending.
final class RelayRouter: Sendable {
    private struct State {
        var transports: [[UInt8]: PeerTransport] = [:]
        var table = RelayTable()
        var fanOutVerifiers = FanOutVerifiers()
    }

    private let state = Mutex(State())

    func register(_ transport: PeerTransport) {
        state.withLock { $0.transports[transport.peerKey] = transport }
    }

    func unregister(_ transport: PeerTransport) {
        let verifier = transport.fanOutVerifier
        state.withLock { state in
            if state.transports[transport.peerKey] === transport { state.transports[transport.peerKey] = nil }
            state.fanOutVerifiers.keep(verifier)
        }
    }

    /// The verifier of `peer`'s frames passed on by others for its run `epoch`: the one its last
    /// link with that run left, so that no frame of it is taken twice, or a new one.
    func fanOutVerifier(for peer: [UInt8], epoch: UInt64, roomID: [UInt8]) -> FanOutVerifier {
        state.withLock { $0.fanOutVerifiers.verifier(for: peer, epoch: epoch, roomID: roomID) }
    }

    func update(_ policy: RelayPolicy) {
        state.withLock { $0.table.update(policy) }
    }

    /// The pairs this node carries now (each as two identity keys).
    func activePairs(at now: Instant) -> [[[UInt8]]] {
        state.withLock { $0.table.activePairs(at: now) }
    }

    /// A relay packet `origin`'s peer sent us over `origin`.
    func handle(_ packet: RelayPacket, from origin: PeerTransport, now: Instant) {
        let source = origin.peerKey
        switch packet.kind {
        case .forward:
            let (decision, destination) = state.withLock { state in
                (state.table.decide(from: source, to: packet.peer, at: now), state.transports[packet.peer])
            }
            switch decision {
            case .forward:
                destination?.sendRelay(RelayPacket(kind: .deliver, peer: source, payload: packet.payload), now: now)
            case .refuse(let reason, let tell):
                if tell { origin.sendControl(.relayRefused(destination: packet.peer, reason: reason), now: now) }
            }
        case .deliver:
            // A datagram of our own session with `packet.peer`, carried by `origin`'s member: that
            // session authenticates it; the member could only drop or delay it.
            let target = state.withLock { $0.transports[packet.peer] }
            target?.receive(packet.payload, now: now, via: source)
        case .forwardEnvelope:
            let targets: [PeerTransport] = state.withLock { state in
                guard state.table.acceptEnvelope(from: source, at: now) else { return [] }
                if packet.peer == RelayPacket.everyone {
                    return state.table.policy.linked.filter { $0 != source }.compactMap { state.transports[$0] }
                }
                return state.table.policy.linked.contains(packet.peer)
                    ? [state.transports[packet.peer]].compactMap { $0 } : []
            }
            for target in targets {
                target.sendRelay(RelayPacket(kind: .deliverEnvelope, peer: source, payload: packet.payload), now: now)
            }
        case .deliverEnvelope:
            break  // a fact for the meeting (LinkSession)
        case .fanDeliver:
            // A frame of `packet.peer` that `origin`'s member passes on: its signature, checked
            // by our session with that peer, is what makes it the peer's (§15.2). A member's own
            // frames come from it as FAN_OUT or media, never as passed on by itself.
            guard packet.peer != source else { return }
            let target = state.withLock { state in
                state.table.acceptFanDelivery(from: source, at: now) ? state.transports[packet.peer] : nil
            }
            target?.receiveFanned(packet.payload[...], now: now)
        }
    }

    /// A signed frame `origin`'s peer asked us to pass on to the others (§15.2; we played it
    /// already, it is media from that peer).
    func fanOut(_ frame: ArraySlice<UInt8>, from origin: PeerTransport, now: Instant) {
        let source = origin.peerKey
        let (decision, transports) = state.withLock { state in
            (state.table.decideFanOut(from: source, at: now), state.transports)
        }
        switch decision {
        case .forward(let targets):
            let payload = Array(frame)
            for target in targets {
                transports[target]?.sendRelay(RelayPacket(kind: .fanDeliver, peer: source, payload: payload), now: now)
            }
        case .refuse(let reason, let tell):
            if tell { origin.sendControl(.relayRefused(destination: RelayPacket.everyone, reason: reason), now: now) }
        }
    }
}

/// The node's monotonic clock in the units REPORTs use.
enum MeetingClock {
    static let origin = Instant.now

    /// Milliseconds since the process started, mod 2^32, never 0 (§10.1).
    static func milliseconds(_ instant: Instant) -> UInt32 {
        let elapsed = origin.duration(to: instant).components
        let ms = UInt64(max(0, elapsed.seconds)) * 1000 + UInt64(max(0, elapsed.attoseconds)) / 1_000_000_000_000_000
        return ReportEcho.timestamp(milliseconds: ms + 1)
    }
}

/// Hands each encoded audio frame to every peer: encode once, encrypt per peer — or, while one
/// copy goes up (§15), sign once for the member that passes it on and encrypt for the peers it
/// does not cover. Runs on the audio capture thread; the targets are swapped by the meeting's
/// driver.
final class MediaFanout: Sendable {
    private struct Targets {
        var direct: [PeerTransport] = []
        var fanOutVia: PeerTransport?
    }

    private let targets = Mutex(Targets())
    // Safety: only the audio engine's capture thread calls `send`, the only user of these; the
    // signer is set before the audio engine starts.
    private nonisolated(unsafe) var scratch: [UInt8] = []
    private nonisolated(unsafe) var signed: [UInt8] = []
    private nonisolated(unsafe) var signer: FanOutSigner?
    private nonisolated(unsafe) var order = CopyOrder()

    /// Signs with this node's identity for this room and run (call before audio starts).
    func prepareSigning(_ signer: FanOutSigner) {
        self.signer = signer
        signed.reserveCapacity(FanOutFrame.maximumLength)
    }

    /// A copy to each of `direct`; the signed frame to `fanOutVia` (nil: none).
    func set(direct: [PeerTransport], fanOutVia: PeerTransport?) {
        targets.withLock { $0 = Targets(direct: direct, fanOutVia: fanOutVia) }
    }

    func send(_ payload: UnsafeRawBufferPointer) {
        // Copy the lists (retains, no allocation) so no lock is held while libnice sends.
        let targets = targets.withLock { $0 }
        let now = Instant.now
        // The member's copy first: it reaches most listeners, and an uplink that overfills (a
        // probe for a copy per peer, §15.3) drops what comes last.
        if let via = targets.fanOutVia, signer != nil {
            signer!.sign(payload, into: &signed)
            signed.withUnsafeBytes { via.sendMedia($0, as: .fanOut, scratch: &scratch, now: now) }
        }
        order.forEach(targets.direct) { $0.sendMedia(payload, scratch: &scratch, now: now) }
    }
}
