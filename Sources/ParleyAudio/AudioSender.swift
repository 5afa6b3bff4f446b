public import Opus
import ParleyCore
import ParleyProtocol
import Synchronization

/// Settings the daemon changes while the engine runs. Lock-free: the control side stores, the
/// capture thread loads once per frame and applies changes to the encoder on its own thread.
public final class SenderControls: Sendable {
    let muted = Atomic<Bool>(false)
    /// Measured loss in tenths of a percent (0...1000).
    let lossPermille = Atomic<Int>(0)
    /// The Opus bitrate when the path takes it (`--bitrate`).
    let bitrate: Atomic<Int>
    /// Bits per second the path to each peer takes (`SendBudget`); 0: no limit.
    let budget = Atomic<Int>(0)
    /// Bytes each packet carries besides a media packet's own (`SendBudget.wireRate`).
    let extraPacketBytes = Atomic<Int>(0)
    /// True while DTX holds frames back: the sender is in a pause and sends nothing.
    let pausedByDTX = Atomic<Bool>(false)
    /// What the capture thread chose, for status.
    let chosenBitrate: Atomic<Int>
    let chosenPacketFrames = Atomic<Int>(1)
    let chosenCopies = Atomic<Int>(0)

    init(bitrate: Int) {
        self.bitrate = Atomic(bitrate)
        chosenBitrate = Atomic(bitrate)
    }
}

/// The send path after capture and processing: encodes each frame ONCE, wraps it in a media
/// payload (docs/PROTOCOL.md §9) with as many copies of previous frames as the measured loss calls
/// for, and hands the payload to the caller, who encrypts it for each peer. Owned by the capture
/// thread; `process` does not allocate.
public final class AudioSender {
    public let frameSamples: Int
    let frameMilliseconds: Int
    public let policy: RedundancyPolicy
    let controls: SenderControls
    private let encoder: OpusEncoder
    private let history = FrameHistory()
    private let dtx: Bool
    /// Quiet frames in a row so far; past `hangoverFrames` the sender is in a pause.
    private var quietFrames = 0
    private let hangoverFrames: Int
    private let packet: UnsafeMutableRawBufferPointer
    private let payload: UnsafeMutableRawBufferPointer
    private let silence: UnsafeMutableBufferPointer<Int16>
    /// Captured frames waiting to fill a packet of `packetFrames`, and the first one's timestamp.
    private let pending: UnsafeMutableBufferPointer<Int16>
    private var pendingFrames = 0
    private var packetTimestamp: UInt32 = 0
    private var packetFrames = 1
    private var sequence: UInt16
    private var timestamp: UInt32
    private var appliedLoss = -1
    private var appliedBitrate = -1
    /// What the encoding was last fitted to (`SendBudget.fit`): refitted only when one changes.
    private var fittedTo: (budget: Int, maximum: Int, copies: Int, extra: Int)?
    private var copies = 0
    public private(set) var framesEncoded = 0
    public private(set) var payloadsSent = 0
    public private(set) var bytesSent = 0

    /// - Parameters:
    ///   - complexity: Opus complexity 0...10 (see `defaultComplexity`).
    ///   - initialSequence, initialTimestamp: random by default, as RFC 3550 §5.1 advises.
    public init(
        frameDuration: AudioFrameDuration, bitrate: Int = 32_000, complexity: Int = defaultComplexity,
        dtx: Bool = false,
        policy: RedundancyPolicy = RedundancyPolicy(), initialSequence: UInt16 = .random(in: .min ... .max),
        initialTimestamp: UInt32 = .random(in: .min ... .max)
    ) throws(OpusError) {
        frameSamples = frameDuration.samples
        frameMilliseconds = frameDuration.rawValue
        self.policy = policy
        self.dtx = dtx
        hangoverFrames = Int(Self.pauseHangover / .milliseconds(frameDuration.rawValue))
        controls = SenderControls(bitrate: bitrate)
        encoder = try OpusEncoder(sampleRate: AudioFormat.sampleRate, channels: 1, application: .voip)
        try encoder.setFrameDuration(frameDuration.opus)
        try encoder.set(.complexity, to: complexity)
        try encoder.set(.signal, to: Self.signalVoice)
        try encoder.set(.inbandFEC, to: 1)
        try encoder.set(.dtx, to: 0)
        sequence = initialSequence
        timestamp = initialTimestamp
        packet = .allocate(byteCount: OpusEncoder.maximumPacketSize, alignment: 8)
        payload = .allocate(byteCount: MediaPayload.maximumSize, alignment: 8)
        silence = .allocate(capacity: frameSamples)
        silence.initialize(repeating: 0)
        pending = .allocate(capacity: AudioFormat.sampleRate * SendBudget.longestPacketMilliseconds / 1000)
        pending.initialize(repeating: 0)
        try applyControls()
    }

    deinit {
        packet.deallocate()
        payload.deallocate()
        silence.deallocate()
        pending.deallocate()
    }

    /// Opus complexity 10. Lower costs quality: PESQ-WB of espeak-ng speech at 32 kb/s, complexity
    /// 10 / 8 / 6 / 5: female voice 4.28 / 4.28 / 4.27 / 4.19, male 3.84 / 3.84 / 3.70 / 3.47; the
    /// encoder takes ~430 / ~480 / ~320 / ~180 µs per 20 ms frame here (`Scripts/bench-audio`). With
    /// DTX a node encodes only while its microphone hears something, so the cost is paid by whoever
    /// is talking, not by every listener of a meeting.
    public static let defaultComplexity = 10

    /// With DTX, frames quieter than this (RMS, dBFS) are held back once `pauseHangover` of them
    /// came in a row: a silent room after noise suppression, a muted or unplugged microphone.
    /// Speech, even soft, is well above it.
    public static let pauseLevel = -50.0

    /// How long the input must stay quiet before a pause begins: the tail of a word and the gaps
    /// between words are sent (the same 200 ms libopus' own DTX waits).
    public static let pauseHangover = Duration.milliseconds(200)

    /// `OPUS_SIGNAL_VOICE` (opus_defines.h): a hint that the input is speech.
    static let signalVoice = 3001

    /// The encoder's algorithmic delay in samples (6.5 ms for VOIP at 48 kHz).
    public func lookahead() throws(OpusError) -> Int { try encoder.lookahead() }

    /// True while DTX holds frames back (any thread).
    public var isPausedByDTX: Bool { controls.pausedByDTX.load(ordering: .relaxed) }

    /// RFC 2198 copies currently added to each payload (any thread).
    public var redundantCopies: Int { controls.chosenCopies.load(ordering: .relaxed) }

    /// The Opus bitrate and packet length in use (any thread).
    public var encoding: (opusBitrate: Int, packetMilliseconds: Int) {
        (
            controls.chosenBitrate.load(ordering: .relaxed),
            controls.chosenPacketFrames.load(ordering: .relaxed) * frameMilliseconds
        )
    }

    /// Encodes one captured frame and emits its media payload (nothing in a DTX pause). The bytes
    /// passed to `emit` are valid only during the call. While the path's budget calls for longer
    /// packets (`SendBudget`), frames are held until a packet's worth is in, then encoded as one
    /// Opus frame of that length; a pause drops the frames held (they are quiet).
    ///
    /// With DTX a pause sends nothing at all, so a silent or muted participant costs its peers no
    /// packets and no decoding; receivers play silence. A quiet frame in a pause is not even
    /// encoded (the encoder's memory then holds the quiet audio before it, which is what it would
    /// have held); a louder frame resumes at once. The sequence number is not advanced for a frame
    /// not sent, so receivers tell the gap from loss (PROTOCOL §9.2).
    ///
    /// The pause is decided here by level, not by Opus' DTX: libopus pauses only when the input is
    /// 25 dB below the loudest it has heard lately, so a microphone that hears a faint noise floor
    /// before anyone speaks kept sending until its first word (measured: a node joining a meeting
    /// quiet sent 50 frames a second for as long as it stayed quiet), and its voice detector may
    /// call a steady loud sound — a hum, a held note, a tone — "not speech" and replace it with
    /// comfort noise.
    ///
    /// - Parameter level: the frame's RMS level in dBFS if the caller measured it already (the
    ///   capture loop does, for its level meter); measured here otherwise.
    public func process(
        _ frame: UnsafeBufferPointer<Int16>, level: Double? = nil, emit: (UnsafeRawBufferPointer) -> Void
    ) throws(OpusError) {
        precondition(frame.count == frameSamples, "frame size mismatch")
        // Settings change between packets, never inside one.
        if pendingFrames == 0 { try applyControls() }
        let muted = controls.muted.load(ordering: .relaxed)
        defer { timestamp &+= UInt32(frameSamples) }
        if dtx {
            let quiet = muted || (level ?? LevelMeter.rmsLevel(of: frame)) < Self.pauseLevel
            quietFrames = quiet ? min(quietFrames + 1, hangoverFrames + 1) : 0
            let paused = quietFrames > hangoverFrames
            controls.pausedByDTX.store(paused, ordering: .relaxed)
            if paused {
                pendingFrames = 0
                return
            }
        }
        let input = muted ? UnsafeBufferPointer(silence) : frame
        let samples = packetFrames * frameSamples
        let length: Int
        if packetFrames == 1 {
            packetTimestamp = timestamp
            length = try encoder.encode(input, into: packet)
        } else {
            if pendingFrames == 0 { packetTimestamp = timestamp }
            _ = UnsafeMutableBufferPointer(rebasing: pending[(pendingFrames * frameSamples)...]).initialize(
                fromContentsOf: input)
            pendingFrames += 1
            guard pendingFrames == packetFrames else { return }
            pendingFrames = 0
            length = try encoder.encode(UnsafeBufferPointer(rebasing: pending[0..<samples]), into: packet)
        }
        framesEncoded += 1
        let primary = MediaPayload.Frame(
            timestamp: packetTimestamp, duration: samples, opus: UnsafeRawBufferPointer(rebasing: packet[0..<length]))
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
            controls.chosenCopies.store(copies, ordering: .relaxed)
            appliedLoss = loss
        }
        let budget = controls.budget.load(ordering: .relaxed)
        let maximum = controls.bitrate.load(ordering: .relaxed)
        let extra = controls.extraPacketBytes.load(ordering: .relaxed)
        if let fitted = fittedTo, fitted == (budget, maximum, copies, extra) { return }
        let fit = SendBudget.fit(
            budget: budget > 0 ? budget : nil, maximumBitrate: maximum, frameMilliseconds: frameMilliseconds,
            copies: copies, current: packetFrames, extraPacketBytes: extra)
        if fit.opusBitrate != appliedBitrate {
            try encoder.set(.bitrate, to: fit.opusBitrate)
            appliedBitrate = fit.opusBitrate
            controls.chosenBitrate.store(fit.opusBitrate, ordering: .relaxed)
        }
        if fit.packetFrames != packetFrames,
            let duration = OpusFrameDuration(rawValue: fit.packetFrames * frameMilliseconds)
        {
            try encoder.setFrameDuration(duration)
            packetFrames = fit.packetFrames
            controls.chosenPacketFrames.store(packetFrames, ordering: .relaxed)
        }
        fittedTo = (budget, maximum, copies, extra)
    }

    // MARK: Controls (any thread)

    public func setMuted(_ muted: Bool) { controls.muted.store(muted, ordering: .relaxed) }

    /// The loss receivers measured (0...1; pass the worst peer's, since one encoding serves all).
    public func setMeasuredLoss(_ loss: Double) {
        controls.lossPermille.store(Int((min(max(loss, 0), 1) * 1000).rounded()), ordering: .relaxed)
    }

    /// Bits per second, 6000...510000 (Opus' range; FEC needs ≥ ~24 kb/s to do anything): the
    /// bitrate when the path takes it.
    public func setBitrate(_ bitrate: Int) {
        controls.bitrate.store(min(max(bitrate, 6000), 510_000), ordering: .relaxed)
    }

    /// Bits per second the path to each peer takes, headers included (nil: no limit), with
    /// `extraPacketBytes` in each packet besides a media packet's own: the sender fits its
    /// bitrate, packet length and copies into it (`SendBudget`).
    public func setBudget(_ bitsPerSecond: Int?, extraPacketBytes: Int = 0) {
        controls.extraPacketBytes.store(extraPacketBytes, ordering: .relaxed)
        controls.budget.store(bitsPerSecond.map { max(1, $0) } ?? 0, ordering: .relaxed)
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
