internal import COpus
internal import COpusShims

/// A libopus decoder, including packet-loss concealment and in-band FEC recovery.
/// Not thread-safe: one audio thread owns it.
public final class OpusDecoder {
    private let handle: OpaquePointer
    public let sampleRate: Int
    public let channels: Int

    public init(sampleRate: Int = 48_000, channels: Int = 1) throws(OpusError) {
        var error: Int32 = OPUS_OK
        guard let handle = opus_decoder_create(Int32(sampleRate), Int32(channels), &error), error == OPUS_OK else {
            throw OpusError(rawValue: error == OPUS_OK ? OPUS_ALLOC_FAIL : error)
        }
        self.handle = handle
        self.sampleRate = sampleRate
        self.channels = channels
    }

    deinit {
        opus_decoder_destroy(handle)
    }

    /// Decodes into `pcm` (interleaved) without allocating; returns samples per channel written.
    /// - Parameters:
    ///   - packet: the packet, or nil to conceal a lost one (PLC); `pcm` must then hold exactly
    ///     the duration to conceal.
    ///   - recoverFromFEC: decode the in-band FEC copy of the *previous* packet that `packet`
    ///     carries; `pcm` must then hold exactly the lost frame's duration.
    public func decode(
        _ packet: UnsafeRawBufferPointer?, into pcm: UnsafeMutableBufferPointer<Int16>, recoverFromFEC: Bool = false
    ) throws(OpusError) -> Int {
        guard let output = pcm.baseAddress else { throw .badArgument }
        let data = packet?.baseAddress?.assumingMemoryBound(to: UInt8.self)
        let count = Int32(packet?.count ?? 0)
        let samples = opus_decode(handle, data, count, output, Int32(pcm.count / channels), recoverFromFEC ? 1 : 0)
        return Int(try OpusError.check(samples))
    }

    /// Allocating convenience: decodes `packet` (nil: conceal) into at most `maximumSamples`
    /// samples per channel (use the frame size when concealing or recovering).
    public func decode(
        _ packet: [UInt8]?, maximumSamples: Int, recoverFromFEC: Bool = false
    ) throws(OpusError) -> [Int16] {
        var pcm = [Int16](repeating: 0, count: maximumSamples * channels)
        let result = pcm.withUnsafeMutableBufferPointer { out in
            guard let packet else { return Result { () throws(OpusError) -> Int in try decode(nil, into: out) } }
            return packet.withUnsafeBytes { bytes in
                Result { () throws(OpusError) -> Int in try decode(bytes, into: out, recoverFromFEC: recoverFromFEC) }
            }
        }
        let decoded = try result.get()
        pcm.removeLast(pcm.count - decoded * channels)
        return pcm
    }

    /// Duration in samples per channel of the last packet decoded or concealed.
    public func lastPacketDuration() throws(OpusError) -> Int {
        var value: Int32 = 0
        _ = try OpusError.check(parley_opus_decoder_get_int(handle, OPUS_GET_LAST_PACKET_DURATION_REQUEST, &value))
        return Int(value)
    }

    /// Forgets all decoder state (after a long gap or a stream restart).
    public func reset() throws(OpusError) {
        _ = try OpusError.check(parley_opus_decoder_reset(handle))
    }

    /// Samples per channel in `packet` at this decoder's rate, or an error for a malformed packet.
    public func sampleCount(of packet: [UInt8]) throws(OpusError) -> Int {
        guard !packet.isEmpty else { throw .invalidPacket }
        let count = packet.withUnsafeBufferPointer { bytes in
            opus_decoder_get_nb_samples(handle, bytes.baseAddress!, Int32(bytes.count))
        }
        return Int(try OpusError.check(count))
    }
}
