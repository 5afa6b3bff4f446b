import ICE
import MeetingCore
import ParleyAudio
import ParleyCore
import ParleyProtocol
import Synchronization

/// One peer's encrypted path: its `PeerSession` (docs/PROTOCOL.md §7–§8) over its ICE stream, fed
/// by three threads — the audio capture thread seals media, the ICE thread decrypts what
/// arrives, and the meeting's driver runs the session's timers and sends session control. The
/// session sits behind a mutex held only for the session step itself (microseconds; a
/// responder's handshake, ~0.5 ms, is the longest); sending and the audio hand-off happen
/// outside it. What the meeting must know is pushed as `SessionFact`s through `facts` as it
/// happens; counters for status are read with `metrics`.
final class PeerTransport: Sendable {
    let stream: ICEStream
    let channel: ReceiveChannel
    private let state: Mutex<State>
    private let facts: @Sendable (SessionFact) -> Void
    private let authenticatedFactInterval: Duration

    /// Counters for status and REPORTs.
    struct Metrics: Sendable {
        /// Media payloads that authenticated (the session's replay window makes them distinct).
        var mediaReceived: UInt64 = 0
        /// Media payloads sealed for this peer.
        var mediaSent: UInt64 = 0
        var rttMs: Double?
        var authenticationFailures = 0
    }

    private struct State {
        var session: PeerSession
        var metrics = Metrics()
        var echo = ReportEcho()
        var meter = LinkMeter()
        /// When an `.authenticated` fact was last pushed.
        var authenticatedReportedAt: ContinuousClock.Instant?
        /// Sealing buffer of the driver (the capture thread has its own, in `MediaFanout`).
        var controlPacket: [UInt8] = []
    }

    init(
        session: PeerSession, stream: ICEStream, channel: ReceiveChannel, authenticatedFactInterval: Duration,
        facts: @escaping @Sendable (SessionFact) -> Void
    ) {
        self.stream = stream
        self.channel = channel
        self.facts = facts
        self.authenticatedFactInterval = authenticatedFactInterval
        state = Mutex(State(session: session))
    }

    var metrics: Metrics { state.withLock { $0.metrics } }

    // MARK: Driver

    /// The ICE path is (again) up. `rehandshake`: drop the keys first, so the pair's lead starts a
    /// fresh handshake over the new path (after an ICE restart, §6.6 step 5).
    func start(now: ContinuousClock.Instant, rehandshake: Bool) {
        flush()
        let output = state.withLock { state in
            if rehandshake { state.session.close() }
            return state.session.start(now: now)
        }
        send(output.datagrams)
        report(output.events)
    }

    /// When `tick` next has work (handshake retries, rekeying, keepalives, expiry).
    var nextDeadline: ContinuousClock.Instant? { state.withLock { $0.session.nextDeadline } }

    /// Runs the session's timers.
    func tick(now: ContinuousClock.Instant) {
        let output = state.withLock { $0.session.tick(now: now) }
        send(output.datagrams)
        report(output.events)
    }

    /// Seals and sends one session control message; false if there are no keys yet.
    @discardableResult
    func sendControl(_ message: SessionControl, now: ContinuousClock.Instant) -> Bool {
        let body = message.encoded()
        let packet: [UInt8]? = state.withLock { state in
            guard state.session.seal(.sessionControl, body: body, now: now, into: &state.controlPacket) else {
                return nil
            }
            return state.controlPacket
        }
        guard let packet else { return false }
        return stream.send(packet)
    }

    /// Sends a REPORT (§10.1): the echo of the peer's latest one and what we receive from it.
    /// `closesInterval`: this REPORT ends a loss measurement interval.
    func sendReport(closesInterval: Bool, muted: Bool, now: ContinuousClock.Instant) {
        let statistics = channel.statistics
        let traffic = stream.traffic
        let nowMs = MeetingClock.milliseconds(now)
        let report = state.withLock { state in
            if closesInterval { state.meter.closeInterval(statistics: statistics, traffic: traffic, at: now) }
            let echo = state.echo.echo(nowMs: nowMs)
            let received = state.metrics.mediaReceived
            return SessionControl.Report(
                timestampMs: nowMs, echoTimestampMs: echo.timestampMs, echoDelayMs: echo.delayMs,
                mediaReceived: UInt32(truncatingIfNeeded: received),
                mediaExpected: UInt32(truncatingIfNeeded: max(UInt64(max(statistics.expected, 0)), received)),
                lossPermille: state.meter.lossPermille,
                jitterMicroseconds: UInt32(
                    clamping: statistics.jitter.components.seconds * 1_000_000
                        + statistics.jitter.components.attoseconds / 1_000_000_000_000),
                muted: muted)
        }
        sendControl(.report(report), now: now)
    }

    /// What status shows of this link's traffic: rates over the last second and loss over the
    /// last five.
    func measurements(now: ContinuousClock.Instant) -> LinkMeter.Measurements {
        let statistics = channel.statistics
        let traffic = stream.traffic
        return state.withLock { $0.meter.measurements(statistics: statistics, traffic: traffic, at: now) }
    }

    /// Ends the session (keys zeroed).
    func close() {
        state.withLock { $0.session.close() }
    }

    // MARK: ICE thread (receive)

    /// Handles one datagram from the peer: handshake answers go straight back out, media goes to
    /// the audio channel, what the meeting must know is pushed as facts.
    func receive(_ datagram: consuming [UInt8], now: ContinuousClock.Instant) {
        let isTransport = datagram.first == PacketType.transportData.rawValue
        var media: ArraySlice<UInt8>?
        var pending = datagram
        var facts: [SessionFact] = []
        let output = state.withLock { state in
            let failuresBefore = state.session.statistics.authenticationFailures
            // Moved out, so the session decrypts this array in place without copying it.
            var taken: [UInt8] = []
            swap(&taken, &pending)
            let output = state.session.receive(taken, now: now)
            state.metrics.authenticationFailures += state.session.statistics.authenticationFailures - failuresBefore
            guard output.dropped == nil, isTransport else { return output }
            if let last = state.authenticatedReportedAt, now - last < authenticatedFactInterval {
                // Reported recently enough: liveness is judged in seconds.
            } else {
                state.authenticatedReportedAt = now
                facts.append(.authenticated)
            }
            switch output.payload?.type {
            case .media?:
                state.metrics.mediaReceived += 1
                if state.metrics.mediaReceived == 1 { facts.append(.firstMedia) }
                media = output.payload?.body
            case .sessionControl?:
                guard let body = output.payload?.body, let control = try? SessionControl(parsing: body) else { break }
                switch control {
                case .report(let report):
                    if state.echo.received(report, nowMs: MeetingClock.milliseconds(now)) != nil {
                        state.metrics.rttMs = state.echo.smoothedRTTMs
                    }
                    facts.append(.report(report, rttMs: state.metrics.rttMs, mediaSent: state.metrics.mediaSent))
                case .leave:
                    facts.append(.leave)
                case .unknown:
                    break
                }
            default:
                break
            }
            return output
        }
        if let media { media.withUnsafeBytes { channel.receive($0) } }
        send(output.datagrams)
        report(output.events)
        for fact in facts { self.facts(fact) }
    }

    // MARK: Capture thread

    /// Seals one media payload into `scratch` (the capture thread's own buffer) and sends it.
    func sendMedia(_ payload: UnsafeRawBufferPointer, scratch: inout [UInt8], now: ContinuousClock.Instant) {
        let sealed = state.withLock { state in
            guard state.session.seal(.media, body: payload, now: now, into: &scratch) else { return false }
            state.metrics.mediaSent += 1
            return true
        }
        if sealed { stream.send(scratch) }
    }

    // MARK: Sending and facts

    /// The session's events as facts for the meeting.
    private func report(_ events: [PeerSessionEvent]) {
        for event in events {
            switch event {
            case .established: facts(.established)
            case .rekeyed: facts(.rekeyed)
            case .handshakeTimedOut: facts(.keysLost("handshake timed out"))
            case .expired: facts(.keysLost("keys expired"))
            case .tornDown: facts(.keysLost("torn down"))
            }
        }
    }

    /// Sends what the session produced (handshake messages, keepalives). One the ICE stream could
    /// not send — typically our handshake response, when the peer's initiation reached us over a
    /// pair our side has not selected yet — is held and sent when the path comes up (`flush`),
    /// instead of leaving the initiator to retry after REKEY_TIMEOUT (5 s).
    private func send(_ datagrams: [[UInt8]]) {
        for datagram in datagrams where !stream.send(datagram) {
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

/// The node's monotonic clock in the units REPORTs use.
enum MeetingClock {
    static let origin = ContinuousClock.now

    /// Milliseconds since the process started, mod 2^32, never 0 (§10.1).
    static func milliseconds(_ instant: ContinuousClock.Instant) -> UInt32 {
        let elapsed = origin.duration(to: instant).components
        let ms = UInt64(max(0, elapsed.seconds)) * 1000 + UInt64(max(0, elapsed.attoseconds)) / 1_000_000_000_000_000
        return ReportEcho.timestamp(milliseconds: ms + 1)
    }
}

/// Hands each encoded audio frame to every peer: encode once, encrypt per peer. Runs on the audio
/// capture thread; the peer list is swapped by the meeting's driver.
final class MediaFanout: Sendable {
    private let peers = Mutex<[PeerTransport]>([])
    // Safety: only the audio engine's capture thread calls `send`, the only user of this buffer.
    private nonisolated(unsafe) var scratch: [UInt8] = []

    func set(_ transports: [PeerTransport]) {
        peers.withLock { $0 = transports }
    }

    func send(_ payload: UnsafeRawBufferPointer) {
        // Copy the list (a retain, no allocation) so no lock is held while libnice sends.
        let transports = peers.withLock { $0 }
        let now = ContinuousClock.now
        for transport in transports { transport.sendMedia(payload, scratch: &scratch, now: now) }
    }
}
