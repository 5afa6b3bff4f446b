/// The speaking level of a stream: RMS per frame in dBFS with a fast attack and a slow release,
/// as level meters do, so "who is speaking" does not flicker between syllables.
public struct LevelMeter: Sendable {
    /// The quietest level reported; digital silence reads as this.
    public static let floor: Double = -100
    /// Above this smoothed level a peer counts as speaking.
    public static let speakingThreshold: Double = -45

    public private(set) var level: Double = floor
    /// dB per second the level may fall (release); a rise is taken at once (attack). Per second,
    /// not per call: the capture side measures a frame (10–40 ms), the playback side a 10 ms period.
    public static let releasePerSecond: Double = 75

    public init() {}

    public var isSpeaking: Bool { level > Self.speakingThreshold }

    /// Measures one frame; returns that frame's own RMS level in dBFS (before smoothing).
    @discardableResult
    public mutating func measure(_ samples: UnsafeBufferPointer<Int16>) -> Double {
        let frame = Self.rmsLevel(of: samples)
        level = Self.smoothed(previous: level, frame: frame, release: Self.release(over: samples.count))
        return frame
    }

    /// Accounts for `samples` samples of silence (nothing played).
    public mutating func measureSilence(samples: Int) {
        level = Self.smoothed(previous: level, frame: Self.floor, release: Self.release(over: samples))
    }

    private static func release(over samples: Int) -> Double {
        releasePerSecond * Double(samples) / Double(AudioFormat.sampleRate)
    }

    /// RMS of a frame in dBFS (a full-scale square wave is 0 dBFS).
    public static func rmsLevel(of samples: UnsafeBufferPointer<Int16>) -> Double {
        guard !samples.isEmpty else { return floor }
        // Summed as integers, exact and vectorized: the playback thread measures every peer's
        // period, and a Double sum is a chain of dependent additions the compiler may not reorder.
        var sum: Int64 = 0
        for sample in samples {
            let value = Int32(sample)
            sum &+= Int64(value * value)
        }
        let rms = (Double(sum) / Double(samples.count)).squareRoot() / 32768
        return rms > 0 ? max(floor, 20 * log10(rms)) : floor
    }

    static func smoothed(previous: Double, frame: Double, release: Double) -> Double {
        frame >= previous ? frame : max(frame, previous - release)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
