/// Mixing math for the playback path: sums any number of 16-bit inputs with per-input gain and
/// soft-clips the sum, so two loud talkers saturate smoothly instead of wrapping or hard-clipping.
/// Works in place on caller-provided buffers and never allocates (it runs in the playback loop).
public enum SoftClipMixer {
    /// Below this fraction of full scale the mix passes unchanged; above it, it bends smoothly
    /// towards full scale (a tanh knee), never reaching it.
    public static let knee: Float = 0.75

    /// Clears the accumulator before a frame is mixed.
    public static func clear(_ accumulator: UnsafeMutableBufferPointer<Float>) {
        accumulator.update(repeating: 0)
    }

    /// Adds one input, scaled by `gain`, into the accumulator (full scale = 1.0).
    public static func add(
        _ input: UnsafeBufferPointer<Int16>, gain: Float = 1, to accumulator: UnsafeMutableBufferPointer<Float>
    ) {
        let scale = gain / 32768
        for index in 0..<min(input.count, accumulator.count) {
            accumulator[index] += Float(input[index]) * scale
        }
    }

    /// Soft-clips the accumulator into 16-bit output.
    public static func render(_ accumulator: UnsafeBufferPointer<Float>, into output: UnsafeMutableBufferPointer<Int16>)
    {
        for index in 0..<min(accumulator.count, output.count) {
            // Rounded half away from zero by hand: `rounded()` is a libm call per sample on
            // baseline x86-64, and this stays a loop the compiler can vectorize.
            let scaled = softClip(accumulator[index]) * 32767
            output[index] = Int16(scaled + (scaled < 0 ? -0.5 : 0.5))
        }
    }

    /// Identity below the knee; above it `knee + (1 − knee)·tanh((|x| − knee)/(1 − knee))`, which
    /// is continuous with slope 1 at the knee and approaches ±1.
    @inline(__always)
    public static func softClip(_ x: Float) -> Float {
        let magnitude = abs(x)
        guard magnitude > knee else { return x }
        let headroom = 1 - knee
        let bent = knee + headroom * tanhApproximation((magnitude - knee) / headroom)
        return x < 0 ? -bent : bent
    }

    /// A rational tanh approximation (Padé-like, exact to ~1e-3 for |x| < 3, clamped beyond),
    /// cheaper than libm's tanh in a per-sample loop.
    @inline(__always)
    static func tanhApproximation(_ x: Float) -> Float {
        if x >= 3 { return 1 }
        let x2 = x * x
        return min(1, x * (27 + x2) / (27 + 9 * x2))
    }
}
