internal import CSpeexDSP

/// speexdsp's acoustic echo canceller (MDF, multi-delay block frequency-domain adaptive filter):
/// removes from the microphone signal what the speaker played into it. Not thread-safe: the capture
/// thread owns it and receives the played (far-end) signal through a lock-free ring.
public final class EchoCanceller {
    let handle: OpaquePointer
    public let frameSize: Int
    public let sampleRate: Int

    /// - Parameters:
    ///   - frameSize: samples per call (one audio frame, e.g. 960 for 20 ms at 48 kHz).
    ///   - tail: the longest echo path to model; speexdsp recommends 100–500 ms of samples.
    public init(frameSize: Int, tail: Int, sampleRate: Int) throws(SpeexDSPError) {
        guard frameSize > 0, tail >= frameSize, sampleRate > 0 else {
            throw SpeexDSPError("echo canceller: invalid frame size \(frameSize), tail \(tail) or rate \(sampleRate)")
        }
        guard let handle = speex_echo_state_init(Int32(frameSize), Int32(tail)) else {
            throw SpeexDSPError("echo canceller: speex_echo_state_init failed")
        }
        self.handle = handle
        self.frameSize = frameSize
        self.sampleRate = sampleRate
        var rate = Int32(sampleRate)
        speex_echo_ctl(handle, SPEEX_ECHO_SET_SAMPLING_RATE, &rate)
    }

    deinit {
        speex_echo_state_destroy(handle)
    }

    /// Cancels the echo of `played` from `captured` into `output` (each exactly `frameSize`
    /// samples; `output` may not alias `captured`). Does not allocate.
    public func process(
        captured: UnsafeBufferPointer<Int16>, played: UnsafeBufferPointer<Int16>,
        into output: UnsafeMutableBufferPointer<Int16>
    ) {
        precondition(captured.count == frameSize && played.count == frameSize && output.count == frameSize)
        speex_echo_cancellation(handle, captured.baseAddress, played.baseAddress, output.baseAddress)
    }

    /// Forgets the learned echo path (after the output device changed).
    public func reset() {
        speex_echo_state_reset(handle)
    }
}
