public import ParleyCore
public import ParleyProtocol

/// One link's encrypted session as the meeting uses it: the `PeerSession` (docs/PROTOCOL.md
/// §7–§8) plus what the meeting needs around it — REPORTs (§10.1) with their round-trip echo,
/// the link's counters, and the translation of what arrives into `SessionFact`s. A plain value
/// with no I/O and no clock: the daemon's `PeerTransport` holds one behind a lock and sends its
/// datagrams over ICE; the meeting simulator runs the same code over simulated paths.
public struct LinkSession: Sendable {
    public private(set) var session: PeerSession
    private var echo = ReportEcho()
    /// Media payloads that authenticated (the session's replay window makes them distinct).
    public private(set) var mediaReceived: UInt64 = 0
    private var mediaReceivedAtLastReport: UInt64 = 0
    /// Media payloads sealed for this peer.
    public private(set) var mediaSent: UInt64 = 0
    /// The smoothed round-trip time from REPORT echoes.
    public private(set) var rttMs: Double?
    public private(set) var authenticationFailures = 0
    /// Authenticated packets are reported at most this often (liveness is judged in seconds).
    private let authenticatedFactInterval: Duration
    /// A REPORT that repeats the last one said is said again only this long after it.
    private let reportInterval: Duration
    /// The latest REPORT said as a fact (its times zeroed: what it says, not when), and when.
    private var reportSaid: (report: SessionControl.Report, at: Instant)?
    /// Silence after which a packet is news (said at once): two fact intervals. Kept, not
    /// multiplied per packet: `Duration * Int` is generic over the integer and costs more than
    /// the rest of the check (measured: 0.7 % of a node's CPU in an 8-node meeting).
    private let quietSpell: Duration
    private var authenticatedReportedAt: Instant?
    private var authenticatedVia: [UInt8]?
    /// Opens the peer's frames that other members pass on (§15.2); the caller keeps it when the
    /// link ends, for a later link with the same run of the peer.
    public private(set) var fanOutVerifier: FanOutVerifier
    /// The peer's passed-on frames whose signature did not verify.
    public private(set) var fanOutFailures = 0
    /// When `.mediaPassedOn` was last said.
    private var fanOutSaidAt: Instant?
    /// The sequence numbers of the peer's latest media payloads.
    private var recentFrames = RecentSequences()

    /// `timing`: how often authenticated packets and repeated REPORTs are said
    /// (`authenticatedFactInterval`, `reportInterval`). `fanOutVerifier`: the peer's, for its
    /// session epoch from its HELLO (§15.1) — the one an earlier link with the same run of the
    /// peer left (`fanOutVerifier`), or a new one (`init(peerEpoch:)`).
    public init(session: PeerSession, timing: MeetingTiming, fanOutVerifier: FanOutVerifier) {
        precondition(fanOutVerifier.originKey == session.peer.identityKey, "a verifier of another peer")
        self.session = session
        self.fanOutVerifier = fanOutVerifier
        authenticatedFactInterval = timing.authenticatedFactInterval
        reportInterval = timing.reportInterval
        quietSpell = authenticatedFactInterval * 2
    }

    /// A link with a peer whose frames passed on by others (§15) start afresh: a run of the peer
    /// this node had no link with before.
    public init(session: PeerSession, timing: MeetingTiming, peerEpoch: UInt64) {
        self.init(
            session: session, timing: timing,
            fanOutVerifier: FanOutVerifier(
                originKey: session.peer.identityKey, roomID: session.roomID, epoch: peerEpoch))
    }

    /// What one step produced: datagrams for the peer, facts for the meeting, and a media
    /// payload for the audio channel.
    public struct Output: Sendable {
        public var datagrams: [[UInt8]] = []
        public var facts: [SessionFact] = []
        /// The body of a media payload that arrived (§9), a slice of the received datagram.
        public var media: ArraySlice<UInt8>?
        /// Something the peer asked this node to relay, or relayed to it (§13.2): for the data
        /// path's relay table. (An envelope delivered over the mesh is a fact instead.)
        public var relay: RelayPacket?
        /// A signed frame the peer asked this node to pass on to the others (§15.2); its media
        /// is in `media` as well.
        public var fanOut: ArraySlice<UInt8>?
    }

    /// The path is (again) up. `rehandshake`: drop the keys first, so the pair's lead starts a
    /// fresh handshake over the new path (after an ICE restart, §6.6 step 5).
    public mutating func start(now: Instant, rehandshake: Bool) -> Output {
        if rehandshake { session.close() }
        return Self.output(of: session.start(now: now))
    }

    /// When `tick` next has work (handshake retries, rekeying, keepalives, expiry).
    public var nextDeadline: Instant? { session.nextDeadline }

    public mutating func tick(now: Instant) -> Output {
        Self.output(of: session.tick(now: now))
    }

    /// Handles one datagram from the peer. A transport packet is decrypted in place. `via`: the
    /// identity key of the member that relayed it (§13), nil when it came over the direct path.
    public mutating func receive(
        _ datagram: consuming [UInt8], now: Instant, nowMs: UInt32, via: [UInt8]? = nil
    ) -> Output {
        let isTransport = datagram.first == PacketType.transportData.rawValue
        let failuresBefore = session.statistics.authenticationFailures
        let step = session.receive(datagram, now: now)
        authenticationFailures += session.statistics.authenticationFailures - failuresBefore
        var output = Self.output(of: step)
        guard step.dropped == nil, isTransport else { return output }
        switch step.payload?.type {
        case .media?:
            noteMedia(step.payload?.body, into: &output)
        case .fanOut?:
            // Media from the peer like any other (§15.2), signed so that we can pass it on.
            guard let frame = step.payload?.body,
                (FanOutFrame.minimumLength...FanOutFrame.maximumLength).contains(frame.count)
            else { break }
            noteMedia(frame[(frame.startIndex + FanOutFrame.overhead)...], into: &output)
            output.fanOut = frame
        case .sessionControl?:
            guard let body = step.payload?.body, let control = try? SessionControl(parsing: body) else { break }
            switch control {
            case .report(let report):
                if echo.received(report, nowMs: nowMs) != nil { rttMs = echo.smoothedRTTMs }
                if saysSomething(report, now: now) {
                    output.facts.append(.report(report, rttMs: rttMs, mediaSent: mediaSent))
                }
            case .leave:
                output.facts.append(.leave)
            case .links(let links):
                output.facts.append(.links(links))
            case .relayRefused(let destination, let reason):
                output.facts.append(.relayRefused(destination: destination, reason: reason))
            case .securityCode(let message):
                output.facts.append(.securityCode(message))
            case .chat(let chat):
                output.facts.append(.chat(chat))
            case .chatAck(let cumulative):
                output.facts.append(.chatAck(cumulative: cumulative))
            case .recording(let recording):
                output.facts.append(.recording(recording))
            case .unknown:
                break
            }
        case .relay?:
            guard let body = step.payload?.body, let packet = try? RelayPacket(parsing: body) else { break }
            if packet.kind == .fanDeliver, session.protocolVersion < 4 {
                break  // an unknown relay kind below version 4 (§15.2)
            } else if packet.kind == .deliverEnvelope {
                output.facts.append(.meshEnvelope(packet.payload))
            } else {
                output.relay = packet
            }
        default:
            break
        }
        noteAuthenticated(now: now, via: via, into: &output)
        return output
    }

    /// A signed frame of the peer that another member passed on (§15.2): its media, if the peer
    /// signed it for this room and this run of it and it is new, counted as media on this link
    /// (REPORTs). It says nothing of this link's own path, so it is no sign of life for it.
    public mutating func receiveFanned(_ frame: ArraySlice<UInt8>, now: Instant) -> Output {
        var output = Output()
        guard session.protocolVersion >= 4, session.isEstablished else { return output }
        switch fanOutVerifier.open(frame) {
        case .success(let media):
            noteMedia(media, into: &output)
            if fanOutSaidAt.map({ now - $0 >= reportInterval }) ?? true {
                fanOutSaidAt = now
                output.facts.append(.mediaPassedOn)
            }
        case .failure(.badSignature): fanOutFailures += 1
        case .failure: break
        }
        return output
    }

    /// A media payload from the peer: for the audio channel, and counted for REPORTs (§10.1) —
    /// once, though it may come both directly and through a member while a route changes (§15.2).
    private mutating func noteMedia(_ body: ArraySlice<UInt8>?, into output: inout Output) {
        if let body, body.count >= 4 {
            let sequence = UInt16(body[body.startIndex + 2]) << 8 | UInt16(body[body.startIndex + 3])
            guard recentFrames.insert(sequence) else { return }
        }
        mediaReceived += 1
        if mediaReceived == 1 { output.facts.append(.firstMedia) }
        output.media = body
    }

    /// Whether a REPORT is for the meeting, or only says that the link is alive: then it counts as
    /// any authenticated packet (`.stillAuthenticated`, which a driver holds instead of waking the
    /// meeting). In a DTX pause a peer sends a REPORT every 250 ms (§10.1), and while no media
    /// flows either way each repeats the one before: the same counters, loss, jitter, flags and
    /// queue. In a paused 16-node meeting that was 60 facts a second for the meeting's task, 45 of
    /// them news to no one. Said: the first; one that says anything new; one a REPORT interval after the last
    /// said (for the round trip it measured); and every one while we have sent the peer no media,
    /// because then the meeting counts the link up as soon as the peer reports at all if our own
    /// DTX pause holds our media back (§10.1), and only the meeting knows of that pause.
    private mutating func saysSomething(_ report: SessionControl.Report, now: Instant) -> Bool {
        var content = report
        content.timestampMs = 0
        content.echoTimestampMs = 0
        content.echoDelayMs = 0
        if mediaSent > 0, let said = reportSaid, said.report == content, now - said.at < reportInterval {
            return false
        }
        reportSaid = (content, now)
        return true
    }

    /// Says that an authenticated packet arrived: `.authenticated` at once for the first packet,
    /// when its route changed and after a quiet spell (news for a link that may be lost); on the
    /// same route `.stillAuthenticated` at most every `authenticatedFactInterval`, and nothing for
    /// a REPORT (the REPORT's own fact says as much, and in a DTX pause REPORTs are all there is:
    /// one fact, not two, for each).
    private mutating func noteAuthenticated(now: Instant, via: [UInt8]?, into output: inout Output) {
        let reported = output.facts.contains { if case .report = $0 { true } else { false } }
        guard let last = authenticatedReportedAt, via == authenticatedVia, now - last <= quietSpell
        else {
            authenticatedReportedAt = now
            authenticatedVia = via
            output.facts.insert(.authenticated(via: via), at: 0)
            return
        }
        if reported {
            authenticatedReportedAt = now
        } else if now - last >= authenticatedFactInterval {
            authenticatedReportedAt = now
            output.facts.insert(.stillAuthenticated(at: now, spacing: now - last), at: 0)
        }
    }

    /// Encrypts a payload into `packet` (its storage is reused); false when there are no keys.
    public mutating func seal(
        _ type: InnerPacketType, body: UnsafeRawBufferPointer, now: Instant, into packet: inout [UInt8]
    ) -> Bool {
        guard session.seal(type, body: body, now: now, into: &packet) else { return false }
        if type == .media || type == .fanOut { mediaSent += 1 }
        return true
    }

    public mutating func seal(
        _ type: InnerPacketType, body: [UInt8], now: Instant, into packet: inout [UInt8]
    ) -> Bool {
        body.withUnsafeBytes { seal(type, body: $0, now: now, into: &packet) }
    }

    /// Seals a relay packet (§13.2) for the peer into `packet`; false when there are no keys.
    public mutating func seal(_ relay: RelayPacket, now: Instant, into packet: inout [UInt8]) -> Bool {
        seal(.relay, body: relay.encoded(), now: now, into: &packet)
    }

    /// What the receive side measured, for a REPORT.
    public struct Reception: Sendable, Hashable {
        /// Media payloads the sender's sequence numbers say were sent so far.
        public var expected: Int
        public var jitterMicroseconds: UInt32
        /// Loss over the last measurement interval (`LinkMeter`), 0–1000.
        public var lossPermille: UInt16

        /// The receive path's queueing-delay estimate of the peer's media (§10.1 `queue_delay_ms`).
        public var queueDelay: Duration?

        public init(expected: Int, jitterMicroseconds: UInt32, lossPermille: UInt16, queueDelay: Duration? = nil) {
            self.expected = expected
            self.jitterMicroseconds = jitterMicroseconds
            self.lossPermille = lossPermille
            self.queueDelay = queueDelay
        }
    }

    /// A REPORT to send at `nowMs` (§10.1): the echo of the peer's latest and what we receive.
    /// `recording`: REPORT's flag bit 1, set only on a version-3 link (§14.2).
    /// `queue_delay_ms` is sent only when media came since the previous REPORT: an estimate of a
    /// stream that stopped says nothing about the path now.
    public mutating func report(
        nowMs: UInt32, reception: Reception, muted: Bool, recording: Bool
    )
        -> SessionControl.Report
    {
        let echo = echo.echo(nowMs: nowMs)
        let mediaCame = mediaReceived != mediaReceivedAtLastReport
        mediaReceivedAtLastReport = mediaReceived
        return SessionControl.Report(
            timestampMs: nowMs, echoTimestampMs: echo.timestampMs, echoDelayMs: echo.delayMs,
            mediaReceived: UInt32(truncatingIfNeeded: mediaReceived),
            mediaExpected: UInt32(truncatingIfNeeded: max(UInt64(max(reception.expected, 0)), mediaReceived)),
            lossPermille: reception.lossPermille, jitterMicroseconds: reception.jitterMicroseconds, muted: muted,
            recording: recording,
            queueDelayMs: mediaCame
                ? reception.queueDelay.map { UInt16(clamping: ($0.nanoseconds + 500_000) / 1_000_000) } : nil)
    }

    /// Ends the session (keys zeroed).
    public mutating func close() { session.close() }

    private static func output(of step: PeerSessionOutput) -> Output {
        var output = Output()
        output.datagrams = step.datagrams
        for event in step.events {
            switch event {
            case .established: output.facts.append(.established)
            case .rekeyed: output.facts.append(.rekeyed)
            case .handshakeTimedOut: output.facts.append(.keysLost("handshake timed out"))
            case .expired: output.facts.append(.keysLost("keys expired"))
            }
        }
        return output
    }
}

/// Which of the last 64 sequence numbers (§9.1, 16 bits, wrapping) were seen: a frame that came
/// twice (directly and passed on by a member, §15.2) is one frame.
struct RecentSequences: Sendable {
    private var highest: UInt16?
    /// Bit i: `highest − i` was seen.
    private var seen: UInt64 = 0

    /// Records `sequence`; false if it was seen already (or is too old to tell, 64 or more behind).
    mutating func insert(_ sequence: UInt16) -> Bool {
        guard let top = highest else {
            highest = sequence
            seen = 1
            return true
        }
        let ahead = sequence &- top
        if ahead != 0, ahead < 0x8000 {
            seen = ahead >= 64 ? 1 : seen << UInt64(ahead) | 1
            highest = sequence
            return true
        }
        let behind = top &- sequence
        guard behind < 64 else { return false }
        let bit: UInt64 = 1 << UInt64(behind)
        guard seen & bit == 0 else { return false }
        seen |= bit
        return true
    }
}

/// The fan-out replay windows (§15.2) of the members whose links ended, for their next link with
/// the same run: a new link must not take a frame the old one took. One per member (a new run
/// replaces it); a driver keeps one of these for the meeting.
public struct FanOutVerifiers: Sendable {
    private var kept: [[UInt8]: FanOutVerifier] = [:]

    public init() {}

    /// The verifier for a new link with `peer`'s run `epoch`: the one its last link with that run
    /// left, or a new one.
    public func verifier(for peer: [UInt8], epoch: UInt64, roomID: [UInt8]) -> FanOutVerifier {
        if let verifier = kept[peer], verifier.epoch == epoch { return verifier }
        return FanOutVerifier(originKey: peer, roomID: roomID, epoch: epoch)
    }

    /// What a link that ends leaves behind.
    public mutating func keep(_ verifier: FanOutVerifier) {
        kept[verifier.originKey] = verifier
    }
}
