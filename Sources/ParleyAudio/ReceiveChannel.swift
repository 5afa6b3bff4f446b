public import Opus
public import ParleyCore
import ParleyProtocol
import Synchronization

/// What one peer's receive path has seen; read from any thread with `ReceiveChannel.statistics`.
public struct ReceiveStatistics: Sendable, Hashable {
    /// Primary frames received (not duplicates or copies) and the frames the sequence numbers say
    /// were sent (RFC 3550 §6.4.1): `expected − received` is the network's loss before recovery.
    public var received = 0
    public var expected = 0
    public var duplicates = 0
    /// Payloads that came after their playout time.
    public var late = 0
    /// Frames missing at their playout time (neither primary nor copy arrived).
    public var lost = 0
    /// Frames played from an RFC 2198 copy because their own payload was missing.
    public var recoveredByRedundancy = 0
    /// Lost frames decoded from the next packet's in-band FEC.
    public var recoveredByFEC = 0
    /// Frames synthesized by packet-loss concealment.
    public var concealed = 0
    /// Frames skipped to shrink the delay.
    public var dropped = 0
    /// Payloads that failed to parse or to decode.
    public var malformed = 0
    /// Payloads dropped because the queue from the network thread was full.
    public var overflowed = 0
    /// RFC 3550 interarrival jitter, target and current jitter-buffer delay.
    public var jitter: Duration = .zero
    public var targetDelay: Duration = .zero
    public var currentDelay: Duration = .zero
    /// How long the peer's frames wait in queues on the way (PROTOCOL §10.1 `queue_delay_ms`).
    public var queueDelay: Duration = .zero
    /// Smoothed speaking level in dBFS, and whether it counts as speaking.
    public var level = LevelMeter.floor
    public var isSpeaking = false

    public init() {}
}

/// One peer's receive path: payloads from the network → jitter buffer → RFC 2198 copies → Opus
/// in-band FEC → packet-loss concealment → decoder → PCM for the mixer.
///
/// Threads: `receive` is called by the network side (one thread at a time: it is the single
/// producer of a lock-free ring), `render` by the playback thread only, `statistics` by anyone.
/// After `init`, `receive` and `render` never allocate and never wait on a lock: statistics are
/// published with a try-lock the playback thread skips when a reader holds it.
public final class ReceiveChannel: Sendable {
    public let name: String
    let clock: any MediaClock
    private let ring: PacketRing
    // Safety: everything below is touched only by the playback thread (`render`), or before the
    // channel is handed to it; the ring and the statistics mutex are the only shared state.
    private nonisolated(unsafe) let state: PlaybackState
    private let published = Mutex(ReceiveStatistics())
    let detached = Atomic<Bool>(false)
    private let queueReachedBackOff = Atomic<Bool>(false)
    /// How loud this node plays the peer, in percent of its own level (see `setVolume`).
    private let volumePercent = Atomic<Int>(100)

    /// - Parameter name: for logs and statistics (e.g. the peer's short id).
    public init(
        name: String, clock: any MediaClock = MonotonicClock(), jitterBuffer: JitterBuffer.Configuration = .init()
    )
        throws(OpusError)
    {
        self.name = name
        self.clock = clock
        ring = PacketRing(slotCount: 64, slotSize: MediaPayload.maximumSize)
        state = try PlaybackState(jitterBuffer: jitterBuffer)
    }

    /// Queues one media payload (the plaintext after `inner_type = 0x01`) that just arrived.
    /// Never blocks or allocates; the payload is parsed on the playback thread.
    public func receive(_ payload: UnsafeRawBufferPointer) {
        ring.push(payload, arrival: clock.now())
    }

    public func receive(_ payload: [UInt8]) {
        payload.withUnsafeBytes { receive($0) }
    }

    /// This node's volume for the peer, in percent: a gain on its samples in the mix (50 % halves
    /// the amplitude, −6 dB; 0 takes the peer out of the mix). Local only: the peer sends the same
    /// as before. What a person may choose is the control API's rule (`PeerVolume.range`); here a
    /// negative volume counts as 0. Takes effect from the next mixed frame.
    public func setVolume(_ percent: Int) {
        volumePercent.store(max(0, percent), ordering: .relaxed)
    }

    public var volume: Int { volumePercent.load(ordering: .relaxed) }

    /// Playback thread: the mixer's gain for this peer.
    var gain: Float { Float(volumePercent.load(ordering: .relaxed)) / 100 }

    /// Playback thread: whether the peer counts as speaking after the latest `render`.
    var isSpeakingNow: Bool { state.meter.isSpeaking }

    /// Whether the peer's media started to queue on the way (its queue estimate reached
    /// `QueueDelayEstimate.backOffMilliseconds`) since the last call: the peer should hear it in a
    /// REPORT now. A relaxed load per call while nothing happened.
    public func takeQueueReachedBackOff() -> Bool {
        guard queueReachedBackOff.load(ordering: .relaxed) else { return false }
        return queueReachedBackOff.exchange(false, ordering: .relaxed)
    }

    /// The latest counters (published once per rendered frame).
    public var statistics: ReceiveStatistics { published.withLock { $0 } }

    /// Playback thread: fills `output` with this peer's next samples at `now` (media clock
    /// nanoseconds), decoding, recovering or concealing as the jitter buffer decides.
    public func render(into output: UnsafeMutableBufferPointer<Int16>, now: UInt64) {
        ring.drain { bytes, arrival in state.accept(bytes, arrival: arrival) }
        if state.buffer.queueReachedBackOff {
            state.buffer.queueReachedBackOff = false
            queueReachedBackOff.store(true, ordering: .relaxed)
        }
        state.render(into: output, now: now)
        var snapshot = state.snapshot
        snapshot.overflowed = ring.dropped
        _ = published.withLockIfAvailable { $0 = snapshot }
    }
}

/// The playback-thread side of a receive channel.
final class PlaybackState {
    let buffer: JitterBuffer
    let decoder: OpusDecoder
    var meter = LevelMeter()
    var malformed = 0
    /// Decoded samples not yet rendered (a peer's frames need not match our frame size).
    let pending: UnsafeMutableBufferPointer<Int16>
    var pendingStart = 0
    var pendingEnd = 0
    /// Loss measured over windows of payloads, to decide how long to wait for copies and FEC.
    var windowExpected = 0
    var windowReceived = 0
    var copiesSeen = 0
    var windowCopies = 0
    var recentLoss = 0.0
    var frameSamples = 960

    static let maximumFrame = 5760  // 120 ms, the longest Opus packet (RFC 6716 §3.2.1)

    init(jitterBuffer: JitterBuffer.Configuration) throws(OpusError) {
        buffer = JitterBuffer(configuration: jitterBuffer)
        decoder = try OpusDecoder(sampleRate: AudioFormat.sampleRate, channels: 1)
        pending = .allocate(capacity: 2 * Self.maximumFrame)
        pending.initialize(repeating: 0)
    }

    deinit {
        pending.deallocate()
    }

    var snapshot: ReceiveStatistics {
        let counters = buffer.statistics
        var result = ReceiveStatistics()
        result.received = counters.received
        result.expected = counters.expected
        result.duplicates = counters.duplicates
        result.late = counters.late
        result.lost = counters.lost
        result.recoveredByRedundancy = counters.recoveredByRedundancy
        result.recoveredByFEC = counters.recoveredByFEC
        result.concealed = counters.concealed
        result.dropped = counters.dropped
        result.malformed = malformed
        result.jitter = AudioFormat.duration(samples: counters.jitter)
        result.targetDelay = AudioFormat.duration(samples: Double(counters.targetDelay))
        result.currentDelay = AudioFormat.duration(samples: Double(counters.currentDelay))
        result.queueDelay = AudioFormat.duration(samples: counters.queueDelay)
        result.level = meter.level
        result.isSpeaking = meter.isSpeaking
        return result
    }

    /// Parses one payload and files its copies (oldest first) and its primary in the jitter buffer.
    func accept(_ bytes: UnsafeRawBufferPointer, arrival: UInt64) {
        guard let payload = try? MediaPayload(parsing: bytes) else {
            malformed += 1
            return
        }
        for index in 0..<payload.redundantCount {
            let block = payload.redundantBlock(index, in: bytes)
            buffer.insert(
                sequence: block.sequence, timestamp: block.timestamp, duration: block.duration,
                payload: UnsafeRawBufferPointer(rebasing: bytes[block.range]), arrival: arrival, isCopy: true)
        }
        let primary = payload.primary
        buffer.insert(
            sequence: primary.sequence, timestamp: primary.timestamp, duration: primary.duration,
            payload: UnsafeRawBufferPointer(rebasing: bytes[primary.range]), arrival: arrival)
        frameSamples = primary.duration
        windowCopies = max(windowCopies, payload.redundantCount)
        if payload.redundantCount > copiesSeen {
            // The sender adds copies because it hears of loss: make room for them at once.
            copiesSeen = payload.redundantCount
            setDepth()
        }
        adaptDelay()
    }

    /// Keeps enough delay for copies and FEC to arrive when the network loses packets: one frame
    /// for FEC or one copy, one more per extra copy the sender adds (a burst of n losses needs the
    /// copy in packet n+1). With no loss the minimum falls back to zero and the buffer shrinks slowly.
    private func adaptDelay() {
        let counters = buffer.statistics
        let expected = counters.expected - windowExpected
        guard expected >= 50 else { return }
        let loss = Double(max(0, expected - (counters.received - windowReceived))) / Double(expected)
        recentLoss = loss > recentLoss ? loss : 0.7 * recentLoss + 0.3 * loss
        copiesSeen = windowCopies
        windowExpected = counters.expected
        windowReceived = counters.received
        windowCopies = 0
        setDepth()
    }

    private func setDepth() {
        let depth = recentLoss >= 0.005 || copiesSeen > 0 ? max(1, copiesSeen) : 0
        buffer.setMinimumDelay(.microseconds(depth * frameSamples * 1_000_000 / AudioFormat.sampleRate))
    }

    func render(into output: UnsafeMutableBufferPointer<Int16>, now: UInt64) {
        var filled = 0
        var active = false
        while filled < output.count {
            if pendingStart == pendingEnd {
                pendingStart = 0
                pendingEnd = 0
                // Frames after the first in this call play later: ask for them at their own time.
                let offset = UInt64(filled) * 1_000_000_000 / UInt64(AudioFormat.sampleRate)
                let produced = decodeNext(now: now + offset)
                if produced == 0 { break }
                pendingEnd = produced
            }
            active = true
            let count = min(pendingEnd - pendingStart, output.count - filled)
            for index in 0..<count { output[filled + index] = pending[pendingStart + index] }
            pendingStart += count
            filled += count
        }
        for index in filled..<output.count { output[index] = 0 }
        if active { meter.measure(UnsafeBufferPointer(output)) } else { meter.measureSilence(samples: output.count) }
    }

    /// Decodes the jitter buffer's next action into `pending`; returns the samples produced (0: idle).
    private func decodeNext(now: UInt64) -> Int {
        switch buffer.next(now: now) {
        case .idle:
            return 0
        case .play(let frame):
            let room = UnsafeMutableBufferPointer(rebasing: pending[0..<Self.maximumFrame])
            if let count = try? decoder.decode(buffer.payload(of: frame), into: room), count > 0 {
                return count
            }
            malformed += 1
            return conceal(frame.duration)
        case .recover(let duration, let next):
            let room = UnsafeMutableBufferPointer(rebasing: pending[0..<duration])
            if let count = try? decoder.decode(buffer.payload(of: next), into: room, recoverFromFEC: true) {
                return count
            }
            return conceal(duration)
        case .conceal(let duration), .silence(let duration):
            return conceal(duration)
        }
    }

    private func conceal(_ duration: Int) -> Int {
        let room = UnsafeMutableBufferPointer(rebasing: pending[0..<min(duration, Self.maximumFrame)])
        if let count = try? decoder.decode(nil, into: room) { return count }
        room.update(repeating: 0)
        return room.count
    }
}
