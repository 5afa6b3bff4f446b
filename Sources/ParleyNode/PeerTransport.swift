import ICE
import ParleyAudio
import ParleyCore
import ParleyProtocol
import Synchronization

/// One peer's encrypted path: its `PeerSession` (docs/PROTOCOL.md §7–§8) over its ICE stream, fed
/// by three threads — the audio capture thread seals media, the ICE thread decrypts what
/// arrives, and the meeting loop runs timers and sends session control. The session sits behind a
/// mutex held only for the session step itself (microseconds; a responder's handshake, ~0.5 ms,
/// is the longest); sending and the audio hand-off happen outside it.
final class PeerTransport: Sendable {
    let stream: ICEStream
    let channel: ReceiveChannel
    private let state: Mutex<State>

    /// What the ICE thread learned from one datagram, for the meeting loop.
    struct Received: Sendable {
        var events: [PeerSessionEvent] = []
        var report: SessionControl.Report?
        var leave = false
        /// The first media payload from this peer on this link: answer with an early REPORT (§10.1).
        var firstMedia = false
    }

    /// Counters and the latest REPORT, for status, REPORTs and the link state machine.
    struct Metrics: Sendable {
        var isEstablished = false
        /// When the last authenticated packet (any inner type) arrived.
        var lastAuthenticated: ContinuousClock.Instant?
        /// Media payloads that authenticated (the session's replay window makes them distinct).
        var mediaReceived: UInt64 = 0
        /// Media payloads sealed for this peer.
        var mediaSent: UInt64 = 0
        var reportsReceived = 0
        var lastReport: SessionControl.Report?
        var rttMs: Double?
        var authenticationFailures = 0
    }

    private struct State {
        var session: PeerSession
        var metrics = Metrics()
        var echo = ReportEcho()
        /// Sealing buffer of the meeting loop (the capture thread has its own, in `MediaFanout`).
        var controlPacket: [UInt8] = []
    }

    init(session: PeerSession, stream: ICEStream, channel: ReceiveChannel) {
        self.stream = stream
        self.channel = channel
        state = Mutex(State(session: session))
    }

    var metrics: Metrics { state.withLock { $0.metrics } }

    // MARK: Meeting loop

    /// The ICE path is (again) up. `rehandshake`: drop the keys first, so the pair's lead starts a
    /// fresh handshake over the new path (after an ICE restart; the issue asks links to re-key).
    func start(now: ContinuousClock.Instant, rehandshake: Bool) -> [PeerSessionEvent] {
        let output = state.withLock { state in
            if rehandshake { state.session.close() }
            let output = state.session.start(now: now)
            state.metrics.isEstablished = state.session.isEstablished
            return output
        }
        send(output.datagrams)
        return output.events
    }

    /// Runs the session's timers (handshake retries, rekeying, keepalives, expiry).
    func tick(now: ContinuousClock.Instant) -> [PeerSessionEvent] {
        let output = state.withLock { state in
            let output = state.session.tick(now: now)
            state.metrics.isEstablished = state.session.isEstablished
            return output
        }
        send(output.datagrams)
        return output.events
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

    /// A REPORT (§10.1) to send now: the echo of the peer's latest report, and what we receive.
    func makeReport(
        nowMs: UInt32, statistics: ReceiveStatistics, lossPermille: UInt16, muted: Bool
    ) -> SessionControl.Report {
        let (echo, received) = state.withLock { ($0.echo.echo(nowMs: nowMs), $0.metrics.mediaReceived) }
        return SessionControl.Report(
            timestampMs: nowMs, echoTimestampMs: echo.timestampMs, echoDelayMs: echo.delayMs,
            mediaReceived: UInt32(truncatingIfNeeded: received),
            mediaExpected: UInt32(truncatingIfNeeded: max(UInt64(max(statistics.expected, 0)), received)),
            lossPermille: lossPermille,
            jitterMicroseconds: UInt32(
                clamping: statistics.jitter.components.seconds * 1_000_000
                    + statistics.jitter.components.attoseconds / 1_000_000_000_000),
            muted: muted)
    }

    /// Ends the session (keys zeroed).
    func close() {
        state.withLock { $0.session.close() }
    }

    // MARK: ICE thread (receive)

    /// Handles one datagram from the peer: handshake answers go straight back out, media goes to
    /// the audio channel, session control is returned for the meeting loop.
    func receive(_ datagram: consuming [UInt8], now: ContinuousClock.Instant) -> Received {
        let isTransport = datagram.first == PacketType.transportData.rawValue
        var received = Received()
        var media: ArraySlice<UInt8>?
        var pending = datagram
        let output = state.withLock { state in
            let failuresBefore = state.session.statistics.authenticationFailures
            // Moved out, so the session decrypts this array in place without copying it.
            var taken: [UInt8] = []
            swap(&taken, &pending)
            let output = state.session.receive(taken, now: now)
            state.metrics.isEstablished = state.session.isEstablished
            state.metrics.authenticationFailures += state.session.statistics.authenticationFailures - failuresBefore
            if output.dropped == nil, isTransport { state.metrics.lastAuthenticated = now }
            switch output.payload?.type {
            case .media?:
                state.metrics.mediaReceived += 1
                received.firstMedia = state.metrics.mediaReceived == 1
                media = output.payload?.body
            case .sessionControl?:
                guard let body = output.payload?.body, let control = try? SessionControl(parsing: body) else { break }
                switch control {
                case .report(let report):
                    if state.echo.received(report, nowMs: MeetingClock.milliseconds(now)) != nil {
                        state.metrics.rttMs = state.echo.smoothedRTTMs
                    }
                    state.metrics.reportsReceived += 1
                    state.metrics.lastReport = report
                    received.report = report
                case .leave:
                    received.leave = true
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
        received.events = output.events
        return received
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

/// Hands each encoded audio frame to every peer: encode once, encrypt per peer (DESIGN §4).
/// Runs on the audio capture thread; the peer list is swapped by the meeting loop.
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
