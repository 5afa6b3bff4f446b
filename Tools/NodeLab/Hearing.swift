import ParleyCore
import ParleyTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Who heard whom: each participant speaks a distinct tone (alone, or as a quiet pilot under
/// speech), and the tones found in what a node played (its `wav:` output) say whom it heard.
public enum Hearing {
    public static let sampleRate = 48_000
    static let headerLength = 44

    /// Samples `[start, start + count)` of a mono 16-bit WAV that `parleyd` writes (its header
    /// sizes are filled in only at exit, so this reads the data by position).
    public static func samples(_ path: String, from start: Int, count: Int) throws(LabError) -> [Int16] {
        try readSamples(path, skippingBytes: headerLength + 2 * max(0, start), count: count)
    }

    /// `count` 16-bit little-endian samples after the first `skippingBytes` bytes of a file.
    private static func readSamples(_ path: String, skippingBytes offset: Int, count: Int) throws(LabError) -> [Int16] {
        guard let file = fopen(path, "rb") else { throw LabError("cannot open \(path)") }
        defer { fclose(file) }
        guard fseek(file, offset, SEEK_SET) == 0 else { throw LabError("cannot seek \(path)") }
        var samples = [Int16](repeating: 0, count: count)
        let read = samples.withUnsafeMutableBytes { fread($0.baseAddress, 2, count, file) }
        guard read == count else { throw LabError("\(path) has only \(read) of \(count) samples after byte \(offset)") }
        return samples
    }

    /// How many samples a WAV file written by `parleyd` holds now (it grows as it plays).
    public static func sampleCount(_ path: String) -> Int { max(0, LabFiles.size(path) - headerLength) / 2 }

    /// All samples of a WAV file written by `parleyd` (or any canonical 16-bit mono WAV).
    public static func allSamples(_ path: String) throws(LabError) -> [Int16] {
        let bytes = LabFiles.size(path)
        guard bytes >= headerLength else { throw LabError("\(path) is not a WAV file") }
        return try samples(path, from: 0, count: (bytes - headerLength) / 2)
    }

    /// Blocks of 100 ms: a 10 Hz analysis bandwidth, short enough that the phase jumps a jitter
    /// buffer makes (a skipped or stretched frame) do not cancel a tone, as they would in one long
    /// coherent Goertzel sum over the whole window.
    public static let blockLength = sampleRate / 10

    /// A headerless file of 16-bit little-endian mono samples (e.g. `parecord --raw`).
    public static func rawSamples(_ path: String) throws(LabError) -> [Int16] {
        try readSamples(path, skippingBytes: 0, count: LabFiles.size(path) / 2)
    }

    /// Tone power (Goertzel, normalised: a sine of amplitude A gives A²/4) of each named tone:
    /// the median over 100 ms blocks, so the tone must be there most of the window.
    public static func powers(in samples: [Int16], tones: [String: Double]) -> [String: Double] {
        tones.mapValues { frequency in
            let blocks = stride(from: 0, to: samples.count - blockLength + 1, by: blockLength).map { start in
                Spectrum.power(
                    of: frequency, in: samples[start..<start + blockLength], sampleRate: Double(sampleRate))
            }.sorted()
            return blocks.isEmpty ? 0 : blocks[blocks.count / 2]
        }
    }

    /// Where a tone is missing from `samples`: each run of consecutive 100 ms blocks in which its
    /// power is below `threshold`, as (start, length) in seconds from the first sample. Audio that
    /// never stopped has none.
    public static func gaps(in samples: [Int16], hertz: Double, threshold: Double) -> [(start: Double, length: Double)]
    {
        var gaps: [(start: Double, length: Double)] = []
        let block = Double(blockLength) / Double(sampleRate)
        for start in stride(from: 0, to: samples.count - blockLength + 1, by: blockLength) {
            let power = Spectrum.power(
                of: hertz, in: samples[start..<start + blockLength], sampleRate: Double(sampleRate))
            guard power < threshold else { continue }
            let time = Double(start) / Double(sampleRate)
            if let last = gaps.last, abs(last.start + last.length - time) < block / 2 {
                gaps[gaps.count - 1].length += block
            } else {
                gaps.append((time, block))
            }
        }
        return gaps
    }

    /// The share (0...1) of the 100 ms blocks of `samples` in which a tone's power is above
    /// `threshold`.
    public static func share(of hertz: Double, in samples: [Int16], threshold: Double) -> Double {
        let blocks = samples.count / blockLength
        guard blocks > 0 else { return 0 }
        let missing = gaps(in: samples, hertz: hertz, threshold: threshold).reduce(0) { $0 + $1.length }
        return max(0, 1 - missing * Double(sampleRate) / Double(blocks * blockLength))
    }

    /// The names of the tones above `threshold` in `samples`.
    public static func heard(in samples: [Int16], tones: [String: Double], threshold: Double) -> Set<String> {
        Set(powers(in: samples, tones: tones).filter { $0.value > threshold }.keys)
    }

    /// Power of a sine of amplitude `dBFS` (e.g. -10 dBFS: 0.025).
    public static func expectedPower(dBFS: Double) -> Double {
        let amplitude = pow(10, dBFS / 20)
        return amplitude * amplitude / 4
    }

    /// A mono 16-bit 48 kHz WAV of `seconds` of a sine at `hertz` and `dBFS` (a test input).
    /// With `burst`, the tone is on for `burst.on` seconds, off for `burst.off`, and so on: not
    /// stationary, so noise suppression (on for real microphones) does not learn it as noise.
    public static func writeTone(
        _ path: String, hertz: Double, dBFS: Double, seconds: Double, burst: (on: Double, off: Double)? = nil
    ) throws(LabError) {
        let count = Int(seconds * Double(sampleRate))
        let amplitude = pow(10, dBFS / 20) * 32767
        let step = 2 * Double.pi * hertz / Double(sampleRate)
        let period = burst.map { Int(($0.on + $0.off) * Double(sampleRate)) }
        let onLength = burst.map { Int($0.on * Double(sampleRate)) }
        let samples = (0..<count).map { index -> Int16 in
            if let period, let onLength, index % period >= onLength { return 0 }
            return Int16((amplitude * sin(step * Double(index))).rounded())
        }
        try writeWAV(path, samples)
    }

    /// Writes a canonical mono 16-bit 48 kHz WAV.
    public static func writeWAV(_ path: String, _ samples: [Int16]) throws(LabError) {
        func le32(_ value: Int) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
        func le16(_ value: Int) -> [UInt8] { (0..<2).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
        let dataBytes = samples.count * 2
        let header =
            Array("RIFF".utf8) + le32(36 + dataBytes) + Array("WAVEfmt ".utf8) + le32(16) + le16(1) + le16(1)
            + le32(sampleRate) + le32(sampleRate * 2) + le16(2) + le16(16) + Array("data".utf8) + le32(dataBytes)
        guard let file = fopen(path, "wb") else { throw LabError("cannot create \(path)") }
        defer { fclose(file) }
        let written =
            fwrite(header, 1, header.count, file)
            + samples.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
        guard written == header.count + dataBytes else { throw LabError("cannot write \(path)") }
    }
}
