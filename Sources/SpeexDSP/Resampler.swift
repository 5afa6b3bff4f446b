internal import CSpeexDSP

/// speexdsp's sample-rate converter for mono 16-bit audio (WAV files at 44.1 kHz, 16 kHz, ...
/// to and from Opus' 48 kHz). Not thread-safe.
public final class Resampler {
    private let handle: OpaquePointer
    public let inputRate: Int
    public let outputRate: Int

    /// - Parameter quality: 0 (fastest) ... 10 (best); 10 suits offline file conversion.
    public init(from inputRate: Int, to outputRate: Int, quality: Int = 10) throws(SpeexDSPError) {
        guard inputRate > 0, outputRate > 0, (0...10).contains(quality) else {
            throw SpeexDSPError("resampler: invalid rates \(inputRate) → \(outputRate) or quality \(quality)")
        }
        var error: Int32 = 0
        guard let handle = speex_resampler_init(1, UInt32(inputRate), UInt32(outputRate), Int32(quality), &error),
            error == 0
        else { throw SpeexDSPError("resampler: " + String(cString: speex_resampler_strerror(error))) }
        self.handle = handle
        self.inputRate = inputRate
        self.outputRate = outputRate
        speex_resampler_skip_zeros(handle)
    }

    deinit {
        speex_resampler_destroy(handle)
    }

    /// Converts as much of `input` as fits in `output`; returns (samples consumed, samples written).
    public func process(
        _ input: UnsafeBufferPointer<Int16>, into output: UnsafeMutableBufferPointer<Int16>
    ) throws(SpeexDSPError) -> (consumed: Int, written: Int) {
        var consumed = UInt32(input.count)
        var written = UInt32(output.count)
        let error = speex_resampler_process_int(handle, 0, input.baseAddress, &consumed, output.baseAddress, &written)
        guard error == 0 else { throw SpeexDSPError("resampler: " + String(cString: speex_resampler_strerror(error))) }
        return (Int(consumed), Int(written))
    }

    /// Converts a whole signal (allocating; for loading files, not for the audio loop). The
    /// converter's delay is flushed with zeros, so the output is the input's full length in time.
    public static func convert(
        _ samples: [Int16], from inputRate: Int, to outputRate: Int
    ) throws(SpeexDSPError)
        -> [Int16]
    {
        guard inputRate != outputRate else { return samples }
        let resampler = try Resampler(from: inputRate, to: outputRate)
        let expected = Int((Int64(samples.count) * Int64(outputRate) + Int64(inputRate) - 1) / Int64(inputRate))
        let latency = Int(speex_resampler_get_input_latency(resampler.handle))
        let input = samples + [Int16](repeating: 0, count: latency)
        var output = [Int16](repeating: 0, count: expected + 64)
        var position = 0
        var written = 0
        while position < input.count {
            let step = input.withUnsafeBufferPointer { source in
                output.withUnsafeMutableBufferPointer { destination in
                    Result { () throws(SpeexDSPError) in
                        try resampler.process(
                            UnsafeBufferPointer(rebasing: source[position...]),
                            into: UnsafeMutableBufferPointer(rebasing: destination[written...]))
                    }
                }
            }
            let result = try step.get()
            guard result.consumed > 0 || result.written > 0 else { break }
            position += result.consumed
            written += result.written
        }
        return Array(output.prefix(min(written, expected)))
    }
}

/// An error from speexdsp, or a bad argument to one of its wrappers.
public struct SpeexDSPError: Error, Hashable, Sendable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
