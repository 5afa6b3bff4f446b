import Foundation
import ParleyCore
import ParleyTestSupport
import Testing

@testable import ParleyAudio

@Suite("Capture processing (echo cancellation and noise suppression)")
struct CaptureProcessorTests {
    /// Runs `frames` frames through a processor: `near` gives each captured frame, `far` what the
    /// speaker played in it (written to the far-end ring first, as the playback thread does).
    static func run(
        frameSamples: Int, frames: Int, near: (Int) -> [Int16], far: (Int) -> [Int16] = { _ in [] }
    ) throws -> [Int16] {
        let processor = try CaptureProcessor(frameSamples: frameSamples)
        let ring = SampleRing(capacity: 10 * frameSamples)
        var captured = [Int16](repeating: 0, count: frameSamples)
        var output: [Int16] = []
        for index in 0..<frames {
            let played = far(index)
            _ = played.withUnsafeBufferPointer { ring.write($0) }
            captured = near(index)
            captured.withUnsafeMutableBufferPointer { output += processor.process($0, farEnd: ring) }
        }
        return output
    }

    @Test(arguments: [480, 960, 1920])
    func speechComesOutOneFiveMillisecondBlockLateWhateverTheFrame(frameSamples: Int) throws {
        // Low noise, and a burst 100 samples into frame 60. The suppressor delays by its block:
        // it ran on whole frames before, and cost a 20 ms frame 20 ms of mouth-to-ear.
        var generator = SeededGenerator(seed: 11)
        let output = try Self.run(frameSamples: frameSamples, frames: 80) { index in
            var frame = (0..<frameSamples).map { _ in Int16(Int(generator.next() % 61) - 30) }
            if index == 60 { for k in 100..<400 { frame[k] = Int16(12_000 * sin(Double(k) * 0.2)) } }
            return frame
        }
        let onset = output.firstIndex { abs(Int($0)) > 3000 }
        #expect(onset == 60 * frameSamples + 100 + CaptureProcessor.blockSamples)
    }

    @Test func theEchoOfWhatWasPlayedIsRemovedInBlocks() throws {
        // The speaker plays white noise; the microphone hears it 5 ms later at half amplitude.
        let frame = 960
        let delay = 240
        var generator = SeededGenerator(seed: 9)
        let played = (0..<400).map { _ in
            (0..<frame).map { _ in Int16(truncatingIfNeeded: Int(generator.next() % 16_000) - 8_000) }
        }
        let timeline = [Int16](repeating: 0, count: delay) + played.flatMap { $0 }
        let heard = (0..<400).map { index in timeline[(index * frame)..<((index + 1) * frame)].map { $0 / 2 } }
        let output = try Self.run(frameSamples: frame, frames: 400, near: { heard[$0] }, far: { played[$0] })
        let settled = 300 * frame
        let echo = heard[300...].joined().reduce(0.0) { $0 + Double($1) * Double($1) }
        let residual = output[settled...].reduce(0.0) { $0 + Double($1) * Double($1) }
        let attenuation = 10 * log10(echo / max(residual, 1))
        #expect(attenuation > 20, "echo attenuated by only \(attenuation) dB")
    }
}
