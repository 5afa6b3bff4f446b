import ParleyAudio
import ParleyCore
import ParleyTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Sends a tone through the real encoder and receive channel under a manual clock, dropping the
/// payloads whose index is in `drop`, and returns the rendered output and the channel's counters.
struct Loopback {
    static let frame = 960

    static func tone(_ hertz: Double, frames: Int, amplitude: Double = 0.3) -> [Int16] {
        (0..<(frames * frame)).map { Int16(amplitude * 32767 * sin(2 * Double.pi * hertz * Double($0) / 48_000)) }
    }

    static func run(
        _ input: [Int16], policy: RedundancyPolicy = .fecOnly, loss: Double = 0.2, drop: Set<Int> = [],
        minimumDelay: Duration = .zero, complexity: Int = AudioSender.defaultComplexity, dtx: Bool = false
    ) throws -> (output: [Int16], statistics: ReceiveStatistics) {
        let clock = ManualClock(nanoseconds: 1_000_000_000)
        let sender = try AudioSender(
            frameDuration: .ms20, bitrate: 32_000, complexity: complexity, dtx: dtx, policy: policy,
            initialSequence: 100, initialTimestamp: 0)
        sender.setMeasuredLoss(loss)
        var configuration = JitterBuffer.Configuration()
        configuration.minimumDelay = minimumDelay
        let channel = try ReceiveChannel(name: "loopback", clock: clock, jitterBuffer: configuration)
        var output: [Int16] = []
        var playback = [Int16](repeating: 0, count: frame)
        let frames = input.count / frame
        for index in 0..<(frames + 5) {
            let sent: UInt64 = 1_000_000_000 + UInt64(index) * 20_000_000
            clock.set(nanoseconds: sent)
            if index < frames {
                try input[(index * frame)..<((index + 1) * frame)].withUnsafeBufferPointer { pcm in
                    try sender.process(pcm) { payload in if !drop.contains(index) { channel.receive(payload) } }
                }
            }
            clock.set(nanoseconds: sent + 7_000_000)
            playback.withUnsafeMutableBufferPointer { channel.render(into: $0, now: clock.now()) }
            output += playback
        }
        return (output, channel.statistics)
    }

    /// Power of `hertz` in output frame `index` (Goertzel, full-scale sine ≈ 0.25).
    static func power(_ hertz: Double, in output: [Int16], frame index: Int) -> Double {
        Spectrum.power(of: hertz, in: output[(index * frame)..<((index + 1) * frame)], sampleRate: 48_000)
    }
}

@Suite("Receive path: jitter buffer → copies → FEC → PLC → Opus")
struct ReceivePathTests {
    @Test func fecActuallyRestoresALostFrame() throws {
        let input = Loopback.tone(600, frames: 60)
        // One frame of delay, as a receive channel keeps on a lossy link, so packet 31 (carrying
        // frame 30's FEC) is here when frame 30 is due.
        let clean = try Loopback.run(input, minimumDelay: .milliseconds(20))
        let lossy = try Loopback.run(input, drop: [30], minimumDelay: .milliseconds(20))
        #expect(lossy.statistics.lost == 1)
        #expect(lossy.statistics.recoveredByFEC == 1)
        #expect(lossy.statistics.concealed == clean.statistics.concealed)  // only the stream's end
        // Find frame 30 in the output (the jitter buffer delays every frame equally), compare with
        // the clean run: the FEC frame carries the tone at nearly full power, not silence.
        let offset = try #require(Self.outputFrame(of: 30, in: clean.output, input: input))
        let restored = Loopback.power(600, in: lossy.output, frame: offset)
        let original = Loopback.power(600, in: clean.output, frame: offset)
        #expect(original > 0.015)
        #expect(restored > 0.5 * original)
    }

    @Test func aRedundantCopyRestoresTheFrameExactly() throws {
        let input = Loopback.tone(900, frames: 60)
        let policy = RedundancyPolicy()
        let clean = try Loopback.run(input, policy: policy, loss: 0.1)
        let lossy = try Loopback.run(input, policy: policy, loss: 0.1, drop: [20, 21])
        #expect(lossy.statistics.lost == 0)
        #expect(lossy.statistics.recoveredByRedundancy == 2)
        // Same frames decoded in the same order at the same times: bit-identical output.
        #expect(lossy.output == clean.output)
    }

    @Test func concealmentFillsAGapWithoutSilence() throws {
        let input = Loopback.tone(500, frames: 60)
        let clean = try Loopback.run(input, loss: 0)
        let lossy = try Loopback.run(input, loss: 0, drop: [30, 31, 32])
        #expect(lossy.statistics.lost == 3)
        #expect(lossy.statistics.concealed >= 2)
        let offset = try #require(Self.outputFrame(of: 30, in: clean.output, input: input))
        // The first concealed frame continues the tone (Opus PLC extrapolates the pitch).
        #expect(Loopback.power(500, in: lossy.output, frame: offset) > 0.005)
        // After the gap the stream is back.
        #expect(Loopback.power(500, in: lossy.output, frame: offset + 8) > 0.01)
    }

    @Test func garbageIsCountedAndDoesNotDisturbTheStream() throws {
        let clock = ManualClock(nanoseconds: 1_000_000_000)
        let channel = try ReceiveChannel(name: "garbage", clock: clock)
        channel.receive([0x01, 0x00])
        channel.receive([UInt8](repeating: 0xFF, count: 40))
        // A well-formed payload whose Opus data is invalid (code 3 without a count byte).
        channel.receive([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0x03, 0xC0, 0x03])
        var frame = [Int16](repeating: 0, count: 960)
        for _ in 0..<10 {
            clock.advance(by: .milliseconds(20))
            frame.withUnsafeMutableBufferPointer { channel.render(into: $0, now: clock.now()) }
        }
        #expect(channel.statistics.malformed == 3)
    }

    /// The output frame where input frame `index` plays, found by the frame's first loud sample.
    static func outputFrame(of index: Int, in output: [Int16], input: [Int16]) -> Int? {
        guard let first = output.firstIndex(where: { abs(Int($0)) > 1000 }) else { return nil }
        return first / Loopback.frame + index
    }
}

@Suite("Mixer")
struct MixerTests {
    @Test func theMixHearsEveryPeer() throws {
        // Three peers with distinct tones, each through its own encoder and receive channel.
        let tones = [440.0, 1_100.0, 2_500.0]
        let clock = ManualClock(nanoseconds: 1_000_000_000)
        let senders = try tones.map { _ in try AudioSender(frameDuration: .ms20) }
        let channels = try tones.indices.map { try ReceiveChannel(name: "peer\($0)", clock: clock) }
        let inputs = tones.map { Loopback.tone($0, frames: 50, amplitude: 0.5) }
        var mixed: [Int16] = []
        var peer = [Int16](repeating: 0, count: 960)
        var accumulator = [Float](repeating: 0, count: 960)
        var output = [Int16](repeating: 0, count: 960)
        for index in 0..<50 {
            clock.advance(by: .milliseconds(20))
            for (number, sender) in senders.enumerated() {
                try inputs[number][(index * 960)..<((index + 1) * 960)].withUnsafeBufferPointer { pcm in
                    try sender.process(pcm) { channels[number].receive($0) }
                }
            }
            accumulator.withUnsafeMutableBufferPointer { sum in
                SoftClipMixer.clear(sum)
                for channel in channels {
                    peer.withUnsafeMutableBufferPointer { channel.render(into: $0, now: clock.now() + 7_000_000) }
                    peer.withUnsafeBufferPointer { SoftClipMixer.add($0, to: sum) }
                }
                output.withUnsafeMutableBufferPointer { SoftClipMixer.render(UnsafeBufferPointer(sum), into: $0) }
            }
            mixed += output
        }
        let steady = Array(mixed.dropFirst(10 * 960))
        for tone in tones {
            #expect(Spectrum.power(of: tone, in: steady, sampleRate: 48_000) > 0.02)
        }
        #expect(Spectrum.power(of: 1_700, in: steady, sampleRate: 48_000) < 0.001)
        // Three 0.5-amplitude tones peak at 1.5: soft-clipped, never wrapped.
        #expect(steady.map { abs(Int($0)) }.max()! <= 32767)
        #expect(channels.allSatisfy { $0.statistics.isSpeaking })
        #expect(channels.allSatisfy { $0.statistics.level > -12 && $0.statistics.level < -3 })
    }
}
