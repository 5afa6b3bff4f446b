import ParleyCore
import SpeexDSP

/// Echo cancellation and noise suppression of the captured signal (speexdsp), on the capture
/// thread. The far-end reference is what the playback thread played, passed through a lock-free
/// ring; when the ring runs dry the canceller gets silence, and when it runs ahead (capture was
/// slower) the excess is skipped so the echo stays within the filter's tail.
final class CaptureProcessor {
    private let canceller: EchoCanceller
    private let preprocessor: Preprocessor
    private let played: UnsafeMutableBufferPointer<Int16>
    private let cleaned: UnsafeMutableBufferPointer<Int16>
    private let frameSamples: Int

    /// Echo paths up to 200 ms (a laptop's speaker to its microphone is a few ms; a room adds reverb).
    static let tail = 200

    init(frameSamples: Int) throws(AudioEngineError) {
        self.frameSamples = frameSamples
        do {
            canceller = try EchoCanceller(
                frameSize: frameSamples, tail: AudioFormat.sampleRate * Self.tail / 1000,
                sampleRate: AudioFormat.sampleRate)
            preprocessor = try Preprocessor(
                frameSize: frameSamples, sampleRate: AudioFormat.sampleRate, noiseSuppression: -30,
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
        canceller.process(captured: UnsafeBufferPointer(captured), played: UnsafeBufferPointer(played), into: cleaned)
        preprocessor.process(cleaned)
        return UnsafeBufferPointer(cleaned)
    }
}
