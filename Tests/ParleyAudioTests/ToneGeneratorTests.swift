import Foundation
import Testing

@testable import ParleyAudio

@Suite("Generated tone")
struct ToneGeneratorTests {
    /// The phase is turned by a multiply per sample, not computed by `sin`: after two minutes it
    /// must still be the sine the formula gives, sample for sample (±1 for the rounding of two
    /// slightly different doubles), at the same amplitude.
    @Test(arguments: [440.0, 1100.0, 997.3])
    func aToneStaysTheSineItStartedAs(hertz: Double) {
        var tone = ToneGenerator(hertz: hertz)
        let frameSamples = AudioFrameDuration.ms20.samples
        var frame = [Int16](repeating: 0, count: frameSamples)
        var worst = 0
        for index in 0..<6000 {
            frame.withUnsafeMutableBufferPointer { tone.fill($0) }
            guard index % 50 == 0 || index == 5999 else { continue }
            for (offset, sample) in frame.enumerated() {
                let n = Double(index * frameSamples + offset)
                let expected = Int16(
                    ToneGenerator.toneAmplitude * sin(2 * Double.pi * hertz * n / Double(AudioFormat.sampleRate)))
                worst = max(worst, abs(Int(sample) - Int(expected)))
            }
        }
        #expect(worst <= 1)
        #expect(frame.map { abs(Int($0)) }.max()! >= Int(ToneGenerator.toneAmplitude) - 1)
    }
}
