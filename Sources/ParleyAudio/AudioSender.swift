public import Opus
public import ParleyCore
import Synchronization

/// Settings the daemon changes while the engine runs. Lock-free: the control side stores, the
/// capture thread loads once per frame and applies changes to the encoder on its own thread.
public final class SenderControls: Sendable {
    let muted = Atomic<Bool>(false)
    /// Measured loss in tenths of a percent (0...1000).
    let lossPermille = Atomic<Int>(0)
    let bitrate: Atomic<Int>

    init(bitrate: Int) {
        self.bitrate = Atomic(bitrate)
    }
}

/// The send path after capture and processing: encodes each frame ONCE, wraps it in a media
/// payload (docs/PROTOCOL.md §9) with as many copies of previous frames as the measured loss calls
/// for, and hands the payload to the caller, who encrypts it for each peer. Owned by the capture
/// thread; `process` does not allocate.
public final class AudioSender {
    public let frameSamples: Int
    public let policy: RedundancyPolicy
    let controls: SenderControls
    private let encoder: OpusEncoder
    private let history = FrameHistory()
    private let dtx: Bool
    private let packet: UnsafeMutableRawBufferPointer
    private let payload: UnsafeMutableRawBufferPointer
    private let silence: UnsafeMutableBufferPointer<Int16>
    private var sequence: UInt16
    private var timestamp: UInt32
    private var appliedLoss = -1
    private var appliedBitrate = -1
    private var copies = 0
    public private(set) var framesEncoded = 0
    public private(set) var payloadsSent = 0
    public private(set) var bytesSent = 0

    /// - Parameters:
    ///   - complexity: Opus complexity 0...10 (10: best quality; ~260 µs per 20 ms frame here).
    ///   - initialSequence, initialTimestamp: random by default, as RFC 3550 §5.1 advises.
    public init(
        frameDuration: AudioFrameDuration, bitrate: Int = 32_000, complexity: Int = 10, dtx: Bool = false,
        policy: RedundancyPolicy = RedundancyPolicy(), initialSequence: UInt16 = .random(in: .min ... .max),
        initialTimestamp: UInt32 = .random(in: .min ... .max)
    ) throws(OpusError) {
        frameSamples = frameDuration.samples
        self.policy = policy
        self.dtx = dtx
        controls = SenderControls(bitrate: bitrate)
        encoder = try OpusEncoder(sampleRate: AudioFormat.sampleRate, channels: 1, application: .voip)
        try encoder.setFrameDuration(frameDuration.opus)
        try encoder.set(.complexity, to: complexity)
        try encoder.set(.signal, to: Self.signalVoice)
        try encoder.set(.inbandFEC, to: 1)
        try encoder.set(.dtx, to: dtx ? 1 : 0)
        sequence = initialSequence
        timestamp = initialTimestamp
        packet = .allocate(byteCount: OpusEncoder.maximumPacketSize, alignment: 8)
        payload = .allocate(byteCount: MediaPayload.maximumSize, alignment: 8)
        silence = .allocate(capacity: frameSamples)
        silence.initialize(repeating: 0)
        try applyControls()
    }

    deinit {
        packet.deallocate()
        payload.deallocate()
        silence.deallocate()
    }

    /// `OPUS_SIGNAL_VOICE` (opus_defines.h): a hint that the input is speech.
    static let signalVoice = 3001

    /// The encoder's algorithmic delay in samples (6.5 ms for VOIP at 48 kHz).
    public func lookahead() throws(OpusError) -> Int { try encoder.lookahead() }

    /// RFC 2198 copies currently added to each payload.
    public var redundantCopies: Int { copies }

    /// Encodes one captured frame and emits its media payload (nothing in a DTX pause). The bytes
    /// passed to `emit` are valid only during the call.
    public func process(_ frame: UnsafeBufferPointer<Int16>, emit: (UnsafeRawBufferPointer) -> Void) throws(OpusError) {
        precondition(frame.count == frameSamples, "frame size mismatch")
        try applyControls()
        let input = controls.muted.load(ordering: .relaxed) ? UnsafeBufferPointer(silence) : frame
        let length = try encoder.encode(input, into: packet)
        framesEncoded += 1
        defer { timestamp &+= UInt32(frameSamples) }
        // 1–2 bytes is a DTX frame: nothing needs to be sent (opus_encode documentation). Skipping
        // it keeps the sequence contiguous, so the receiver knows the gap is DTX, not loss.
        if dtx && length <= 2 { return }
        let primary = MediaPayload.Frame(
            timestamp: timestamp, duration: frameSamples, opus: UnsafeRawBufferPointer(rebasing: packet[0..<length]))
        let size = history.writePayload(sequence: sequence, primary: primary, copies: copies, into: payload)
        emit(UnsafeRawBufferPointer(rebasing: payload[0..<size]))
        history.append(primary)
        sequence &+= 1
        payloadsSent += 1
        bytesSent += size
    }

    /// Applies control changes on the thread that owns the encoder (encoder calls are not thread-safe).
    private func applyControls() throws(OpusError) {
        let loss = controls.lossPermille.load(ordering: .relaxed)
        if loss != appliedLoss {
            let decision = policy.decision(forLoss: Double(loss) / 1000)
            try encoder.set(.packetLossPercent, to: decision.encoderLossPercent)
            copies = decision.copies
            appliedLoss = loss
        }
        let bitrate = controls.bitrate.load(ordering: .relaxed)
        if bitrate != appliedBitrate {
            try encoder.set(.bitrate, to: bitrate)
            appliedBitrate = bitrate
        }
    }

    // MARK: Controls (any thread)

    public func setMuted(_ muted: Bool) { controls.muted.store(muted, ordering: .relaxed) }

    /// The loss receivers measured (0...1; pass the worst peer's, since one encoding serves all).
    public func setMeasuredLoss(_ loss: Double) {
        controls.lossPermille.store(Int((min(max(loss, 0), 1) * 1000).rounded()), ordering: .relaxed)
    }

    /// Bits per second, 6000...510000 (Opus' range; FEC needs ≥ ~24 kb/s to do anything).
    public func setBitrate(_ bitrate: Int) {
        controls.bitrate.store(min(max(bitrate, 6000), 510_000), ordering: .relaxed)
    }
}

extension AudioFrameDuration {
    var opus: OpusFrameDuration {
        switch self {
        case .ms10: .ms10
        case .ms20: .ms20
        case .ms40: .ms40
        }
    }
}
