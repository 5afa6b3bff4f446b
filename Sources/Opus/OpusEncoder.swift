internal import COpus
internal import COpusShims

/// A libopus encoder. Not thread-safe: one audio thread owns it.
public final class OpusEncoder {
    private let handle: OpaquePointer
    public let sampleRate: Int
    public let channels: Int

    /// - Parameters:
    ///   - sampleRate: 8000, 12000, 16000, 24000 or 48000 Hz.
    ///   - channels: 1 or 2.
    public init(sampleRate: Int = 48_000, channels: Int = 1, application: OpusApplication = .voip) throws(OpusError) {
        var error: Int32 = OPUS_OK
        guard let handle = opus_encoder_create(Int32(sampleRate), Int32(channels), application.code, &error),
            error == OPUS_OK
        else { throw OpusError(rawValue: error == OPUS_OK ? OPUS_ALLOC_FAIL : error) }
        self.handle = handle
        self.sampleRate = sampleRate
        self.channels = channels
    }

    deinit {
        opus_encoder_destroy(handle)
    }

    /// Sets an integer parameter (bitrate, complexity, FEC, DTX, loss percentage, ...).
    public func set(_ parameter: OpusEncoderParameter, to value: Int) throws(OpusError) {
        _ = try OpusError.check(parley_opus_encoder_set_int(handle, parameter.setRequest, Int32(value)))
    }

    /// Reads an integer parameter back from libopus.
    public func get(_ parameter: OpusEncoderParameter) throws(OpusError) -> Int {
        var value: Int32 = 0
        _ = try OpusError.check(parley_opus_encoder_get_int(handle, parameter.getRequest, &value))
        return Int(value)
    }

    /// Fixes the frame duration the encoder accepts (`OPUS_SET_EXPERT_FRAME_DURATION`).
    public func setFrameDuration(_ duration: OpusFrameDuration) throws(OpusError) {
        _ = try OpusError.check(
            parley_opus_encoder_set_int(handle, OPUS_SET_EXPERT_FRAME_DURATION_REQUEST, duration.code))
    }

    /// The frame duration set with `setFrameDuration`, or nil when the encoder follows the
    /// size of each input (`OPUS_FRAMESIZE_ARG`, the default).
    public func frameDuration() throws(OpusError) -> OpusFrameDuration? {
        var code: Int32 = 0
        _ = try OpusError.check(parley_opus_encoder_get_int(handle, OPUS_GET_EXPERT_FRAME_DURATION_REQUEST, &code))
        return OpusFrameDuration(code: code)
    }

    /// Algorithmic delay of the encoder in samples (6.5 ms at 48 kHz for VOIP).
    public func lookahead() throws(OpusError) -> Int {
        var value: Int32 = 0
        _ = try OpusError.check(parley_opus_encoder_get_int(handle, OPUS_GET_LOOKAHEAD_REQUEST, &value))
        return Int(value)
    }

    /// Encodes one frame of interleaved 16-bit PCM into `packet` without allocating.
    /// `pcm.count` must be a valid frame size times `channels`. Returns the packet length
    /// (1–2 bytes means DTX: nothing needs to be sent).
    public func encode(
        _ pcm: UnsafeBufferPointer<Int16>, into packet: UnsafeMutableRawBufferPointer
    ) throws(OpusError) -> Int {
        guard let input = pcm.baseAddress, let output = packet.baseAddress else { throw .badArgument }
        let length = opus_encode(
            handle, input, Int32(pcm.count / channels), output.assumingMemoryBound(to: UInt8.self),
            Int32(min(packet.count, Int(Int32.max))))
        return Int(try OpusError.check(length))
    }

    /// Encodes one frame; allocating convenience for tests and tools.
    public func encode(_ pcm: [Int16]) throws(OpusError) -> [UInt8] {
        var packet = [UInt8](repeating: 0, count: Self.maximumPacketSize)
        let result = pcm.withUnsafeBufferPointer { input in
            packet.withUnsafeMutableBytes { output in
                Result { () throws(OpusError) -> Int in try encode(input, into: output) }
            }
        }
        let length = try result.get()
        packet.removeLast(packet.count - length)
        return packet
    }

    /// Large enough for any single Opus packet (RFC 6716 §3.4 limits a frame to 1275 bytes;
    /// a packet of several frames can be longer).
    public static let maximumPacketSize = 4000
}
