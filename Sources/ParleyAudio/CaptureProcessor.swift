import ParleyCore
import SpeexDSP

/// Echo cancellation and noise suppression of the captured signal (speexdsp), on the capture
/// thread. The far-end reference is what the playback thread played, passed through a lock-free
/// ring; when the ring runs dry the canceller gets silence, and when it runs ahead (capture was
/// slower) the excess is skipped so the echo stays within the filter's tail.
///
/// Both run on 5 ms blocks, whatever the frame: the canceller adds no delay, but the noise
/// suppressor hands each block back one block late (its overlap-add window), so a 20 ms block
/// cost every word 20 ms of mouth-to-ear. `AudioEngine.processingDelay` reports the block.
final class CaptureProcessor {
    private let canceller: EchoCanceller
    private let preprocessor: Preprocessor
    private let played: UnsafeMutableBufferPointer<Int16>
    private let cleaned: UnsafeMutableBufferPointer<Int16>
    private let frameSamples: Int

    /// Echo paths up to 200 ms (a laptop's speaker to its microphone is a few ms; a room adds reverb).
    static let tail = 200
    /// 5 ms at 48 kHz: every frame duration (10, 20, 40 ms) is a whole number of blocks. Smaller
    /// blocks cost more than they save (2.5 ms doubles the canceller's CPU).
    static let blockSamples = 240

    init(frameSamples: Int) throws(AudioEngineError) {
        precondition(frameSamples % Self.blockSamples == 0, "a frame is whole 5 ms blocks")
        self.frameSamples = frameSamples
        do {
            canceller = try EchoCanceller(
                frameSize: Self.blockSamples, tail: AudioFormat.sampleRate * Self.tail / 1000,
                sampleRate: AudioFormat.sampleRate)
            preprocessor = try Preprocessor(
                frameSize: Self.blockSamples, sampleRate: AudioFormat.sampleRate, noiseSuppression: -30,
                echoCanceller: canceller)
        } catch {
            throw AudioEngineError("cannot set up echo cancellation: \(error)")
        }
        played = .allocate(capacity: frameSamples)
        played.initialize(repeating: 0)
        cleaned = .allocate(capacity: frameSamples)
        cleaned.initialize(repeating: 0)
    }

    deinit {
        played.deallocate()
        cleaned.deallocate()
    }

    func process(_ captured: UnsafeMutableBufferPointer<Int16>, farEnd: SampleRing) -> UnsafeBufferPointer<Int16> {
        let backlog = farEnd.available - 4 * frameSamples
        if backlog > 0 { farEnd.skip(backlog) }
        let count = farEnd.read(into: played)
        for index in count..<frameSamples { played[index] = 0 }
        for start in stride(from: 0, to: frameSamples, by: Self.blockSamples) {
            let block = start..<(start + Self.blockSamples)
            let output = UnsafeMutableBufferPointer(rebasing: cleaned[block])
            canceller.process(
                captured: UnsafeBufferPointer(rebasing: captured[block]),
                played: UnsafeBufferPointer(rebasing: played[block]), into: output)
            preprocessor.process(output)
        }
        return UnsafeBufferPointer(cleaned)
    }
}
