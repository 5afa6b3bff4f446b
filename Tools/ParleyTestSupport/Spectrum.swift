#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Frequency analysis of 16-bit PCM, used to check which tones a node actually heard
/// (tests, the demo, benchmarks). Pure Swift, no allocation beyond the FFT buffers.
public enum Spectrum {
    /// Power of one frequency in `samples` (Goertzel algorithm), normalised by the sample count,
    /// so a full-scale sine at `frequency` gives about 0.25.
    public static func power(of frequency: Double, in samples: some Collection<Int16>, sampleRate: Double) -> Double {
        let n = samples.count
        guard n > 0 else { return 0 }
        let omega = 2 * Double.pi * frequency / sampleRate
        let coefficient = 2 * cos(omega)
        var s1 = 0.0
        var s2 = 0.0
        for sample in samples {
            let s0 = Double(sample) / 32768 + coefficient * s1 - s2
            s2 = s1
            s1 = s0
        }
        let power = s1 * s1 + s2 * s2 - coefficient * s1 * s2
        return power / Double(n * n)
    }

    /// The frequency with the most energy, from a radix-2 FFT of the first power-of-two block of
    /// `samples` (Hann-windowed), to the resolution `sampleRate / blockSize`. Nil for silence.
    public static func dominantFrequency(in samples: [Int16], sampleRate: Double) -> Double? {
        var size = 1
        while size * 2 <= samples.count { size *= 2 }
        guard size >= 64 else { return nil }
        let magnitudes = magnitudeSpectrum(Array(samples.prefix(size)))
        var best = 1
        for bin in 1..<magnitudes.count where magnitudes[bin] > magnitudes[best] { best = bin }
        guard magnitudes[best] > 1e-9 else { return nil }
        return Double(best) * sampleRate / Double(size)
    }

    /// Magnitudes of bins 0...n/2 of the FFT of a power-of-two block, Hann-windowed.
    public static func magnitudeSpectrum(_ block: [Int16]) -> [Double] {
        let n = block.count
        precondition(n > 0 && n & (n - 1) == 0, "FFT size must be a power of two")
        var real = [Double](repeating: 0, count: n)
        var imaginary = [Double](repeating: 0, count: n)
        for i in 0..<n {
            let window = 0.5 - 0.5 * cos(2 * Double.pi * Double(i) / Double(n))
            real[i] = Double(block[i]) / 32768 * window
        }
        fft(&real, &imaginary)
        return (0...(n / 2)).map { (real[$0] * real[$0] + imaginary[$0] * imaginary[$0]).squareRoot() }
    }

    /// In-place iterative Cooley–Tukey FFT.
    static func fft(_ real: inout [Double], _ imaginary: inout [Double]) {
        let n = real.count
        var j = 0
        for i in 1..<n {
            var bit = n >> 1
            while j & bit != 0 {
                j ^= bit
                bit >>= 1
            }
            j |= bit
            if i < j {
                real.swapAt(i, j)
                imaginary.swapAt(i, j)
            }
        }
        var length = 2
        while length <= n {
            let angle = -2 * Double.pi / Double(length)
            let stepReal = cos(angle)
            let stepImaginary = sin(angle)
            var start = 0
            while start < n {
                var wReal = 1.0
                var wImaginary = 0.0
                for k in 0..<(length / 2) {
                    let a = start + k
                    let b = a + length / 2
                    let tReal = real[b] * wReal - imaginary[b] * wImaginary
                    let tImaginary = real[b] * wImaginary + imaginary[b] * wReal
                    real[b] = real[a] - tReal
                    imaginary[b] = imaginary[a] - tImaginary
                    real[a] += tReal
                    imaginary[a] += tImaginary
                    let nextReal = wReal * stepReal - wImaginary * stepImaginary
                    wImaginary = wReal * stepImaginary + wImaginary * stepReal
                    wReal = nextReal
                }
                start += length
            }
            length *= 2
        }
    }
}
