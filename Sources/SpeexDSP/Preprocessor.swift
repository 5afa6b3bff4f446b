internal import CSpeexDSP

/// speexdsp's preprocessor: noise suppression and, when given the echo canceller, suppression of
/// the residual echo the adaptive filter leaves. Automatic gain control stays off (users set their
/// own microphone level). Not thread-safe: the capture thread owns it.
public final class Preprocessor {
    private let handle: OpaquePointer
    public let frameSize: Int
    // Kept alive: the preprocessor holds a pointer to its state.
    private let echoCanceller: EchoCanceller?

    /// - Parameters:
    ///   - noiseSuppression: maximum attenuation of noise in dB (negative), or nil to turn it off.
    ///   - echoCanceller: the canceller whose residual echo to suppress, or nil.
    public init(
        frameSize: Int, sampleRate: Int, noiseSuppression: Int? = -30, echoCanceller: EchoCanceller? = nil
    ) throws(SpeexDSPError) {
        guard frameSize > 0, sampleRate > 0 else {
            throw SpeexDSPError("preprocessor: invalid frame size \(frameSize) or rate \(sampleRate)")
        }
        guard let handle = speex_preprocess_state_init(Int32(frameSize), Int32(sampleRate)) else {
            throw SpeexDSPError("preprocessor: speex_preprocess_state_init failed")
        }
        self.handle = handle
        self.frameSize = frameSize
        self.echoCanceller = echoCanceller
        set(SPEEX_PREPROCESS_SET_DENOISE, noiseSuppression == nil ? 0 : 1)
        if let noiseSuppression { set(SPEEX_PREPROCESS_SET_NOISE_SUPPRESS, Int32(noiseSuppression)) }
        set(SPEEX_PREPROCESS_SET_AGC, 0)
        set(SPEEX_PREPROCESS_SET_DEREVERB, 0)
        if let echoCanceller {
            speex_preprocess_ctl(handle, SPEEX_PREPROCESS_SET_ECHO_STATE, UnsafeMutableRawPointer(echoCanceller.handle))
        }
    }

    deinit {
        speex_preprocess_state_destroy(handle)
    }

    /// Processes one frame in place. Does not allocate.
    public func process(_ frame: UnsafeMutableBufferPointer<Int16>) {
        precondition(frame.count == frameSize, "preprocessor frame size mismatch")
        speex_preprocess_run(handle, frame.baseAddress)
    }

    private func set(_ request: Int32, _ value: Int32) {
        var value = value
        speex_preprocess_ctl(handle, request, &value)
    }
}
