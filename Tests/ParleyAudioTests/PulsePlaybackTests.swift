import ParleyCore
import ParleyTestSupport
import Testing

@testable import ParleyAudio

/// Needs a PulseAudio server: Scripts/test runs the tests under Scripts/with-pulseaudio.
@Suite(
    "PulseAudio playback pacing (real server)",
    .enabled(if: TestEnvironment.shouldRun(needing: pulseServerAvailable)))
struct PulsePlaybackTests {
    @Test(arguments: [480, 960])
    func aFrameIsMixedWhenTheServerWantsItNotAFrameEarly(frameSamples: Int) throws {
        // The stream keeps two frames queued. A frame mixed as soon as the last write returned
        // would wait behind both; mixed when the server is about to ask, it waits behind one
        // (and the wake-up margin). What the queue holds at each mix is what that frame waits.
        let device = try AudioDevices.open(.pulse(sink: PulseTest.speaker), frameSamples: frameSamples)
        defer { try? device.close() }
        let silence = [Int16](repeating: 0, count: frameSamples)
        var queues: [Double] = []
        for _ in 0..<150 {
            device.waitForNextFrame()
            if let queued = device.queued() { queues.append(Double(queued.components.attoseconds) / 1e15) }
            try silence.withUnsafeBufferPointer { try device.write($0) }
        }
        let frameMs = Double(frameSamples) / 48
        let settled = queues.dropFirst(50).sorted()
        let median = settled[settled.count / 2]
        #expect(median < 1.5 * frameMs, "median queue at mix time \(median) ms, frame \(frameMs) ms")
        // A low share, not the lowest: one late wake-up on a loaded machine lets a single reading
        // run dry (0.0 ms in one run of the suite), but mixing systematically too late lowers them all.
        let low = settled[settled.count / 10]
        #expect(low > 0.25 * frameMs, "rarely close to running dry: tenth percentile \(low) ms")
    }
}
