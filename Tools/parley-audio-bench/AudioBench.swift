import Foundation
import Opus
import ParleyAudio
import ParleyCore
import ParleyTestSupport
import PulseAudio
import SpeexDSP

#if canImport(Glibc)
import Glibc
#endif

/// Audio benchmarks that print numbers (run by Scripts/bench-audio):
///   parley-audio-bench quality SPEECH.wav OUTDIR   encode → impairment → jitter buffer → decode at
///                                                  0/5/10/20 % loss, plain FEC vs adaptive copies;
///                                                  writes 16 kHz reference/degraded WAVs for PESQ-WB
///   parley-audio-bench latency                     frame in → frame out on a calm network
///   parley-audio-bench cpu [SPEECH.wav]            one encode + 7 decodes + mix per frame, of speech
///                                                  or of the meeting benchmarks' tones
///   parley-audio-bench device-loop SOURCE SINK FRAME_MS SECONDS
///                                                  the device floor: PulseAudio capture → playback
///                                                  with Parley's streams and nothing in between
@main
enum AudioBench {
    static func main() throws {
        let arguments = CommandLine.arguments.dropFirst()
        switch arguments.first {
        case "quality" where arguments.count == 3:
            try quality(
                speech: arguments[arguments.startIndex + 1], outputDirectory: arguments[arguments.startIndex + 2])
        case "latency":
            try latency()
        case "cpu":
            try cpu(speech: arguments.count > 1 ? arguments[arguments.startIndex + 1] : nil)
        case "device-loop" where arguments.count == 5:
            let values = Array(arguments.dropFirst())
            guard let frameMs = Int(values[2]), [10, 20, 40].contains(frameMs), let seconds = Int(values[3]),
                seconds > 0
            else {
                print("device-loop: FRAME_MS is 10, 20 or 40 and SECONDS a positive whole number")
                exit(2)
            }
            try deviceLoop(source: values[0], sink: values[1], frameSamples: frameMs * 48, seconds: seconds)
        default:
            print(
                "usage: parley-audio-bench quality SPEECH.wav OUTDIR | latency | cpu [SPEECH.wav]"
                    + " | device-loop SOURCE SINK FRAME_MS SECONDS")
            exit(2)
        }
    }

    static let frame = AudioFrameDuration.ms20
    static let frameNanoseconds: UInt64 = 20_000_000

    // MARK: Quality

    struct Scheme {
        let name: String
        let policy: RedundancyPolicy
    }

    static func quality(speech path: String, outputDirectory: String) throws {
        let speech = try WAVFile.read(path: path)
        let reference16k = try Resampler.convert(speech, from: 48_000, to: 16_000)
        try WAVFile.write(reference16k, sampleRate: 16_000, to: "\(outputDirectory)/reference.wav")
        let schemes = [
            Scheme(name: "fec", policy: .fecOnly),
            Scheme(name: "copies", policy: RedundancyPolicy()),
        ]
        print(
            "quality: \(String(format: "%.1f", Double(speech.count) / 48_000)) s of speech, 20 ms frames, 32 kb/s primary"
        )
        print("scheme  loss  lost  copies  fec  concealed  delay(ms)  kb/s  file")
        for loss in [0.0, 0.05, 0.10, 0.20] {
            for scheme in schemes {
                let result = try simulate(speech: speech, loss: loss, policy: scheme.policy, seed: 20_240_601)
                let name = "\(scheme.name)-\(Int(loss * 100)).wav"
                try WAVFile.write(
                    try Resampler.convert(result.output, from: 48_000, to: 16_000), sampleRate: 16_000,
                    to: "\(outputDirectory)/\(name)")
                let s = result.statistics
                let padded = scheme.name.padding(toLength: 6, withPad: " ", startingAt: 0)
                print(
                    padded
                        + String(
                            format: "  %3d%%  %4d  %6d  %3d  %9d  %9.1f  %4.1f  ", Int(loss * 100), s.lost,
                            s.recoveredByRedundancy, s.recoveredByFEC, s.concealed, result.meanDelayMilliseconds,
                            result.kilobitsPerSecond) + name)
            }
        }
    }

    struct SimulationResult {
        var output: [Int16]
        var statistics: ReceiveStatistics
        var meanDelayMilliseconds: Double
        var kilobitsPerSecond: Double
    }

    /// The real send and receive objects under a manual clock: a frame is captured every 20 ms,
    /// encoded once, impaired (random loss, 20 ms ± 2 ms one-way), queued into the receive channel
    /// at its arrival time, and the player renders a frame every 20 ms.
    static func simulate(
        speech: [Int16], loss: Double, policy: RedundancyPolicy, seed: UInt64
    ) throws
        -> SimulationResult
    {
        let clock = ManualClock(nanoseconds: 1_000_000_000)
        let sender = try AudioSender(frameDuration: frame, bitrate: 32_000, policy: policy)
        sender.setMeasuredLoss(loss)  // what the receiver reports back, here known exactly
        let channel = try ReceiveChannel(name: "bench", clock: clock)
        var impairment = Impairment(.init(loss: loss, delay: .milliseconds(20), jitter: .milliseconds(2)), seed: seed)
        let samples = frame.samples
        let frames = speech.count / samples + 15  // play out the tail
        var pending: [(time: UInt64, payload: [UInt8])] = []
        var output: [Int16] = []
        output.reserveCapacity((frames + 10) * samples)
        var playback = [Int16](repeating: 0, count: samples)
        var delaySum = 0.0
        var delayCount = 0
        var payloadBytes = 0
        let start: UInt64 = 1_000_000_000
        let playerPhase: UInt64 = 7_000_000
        for index in 0..<frames {
            // Capture and send frame `index`, complete at the end of its 20 ms.
            let sendTime = start + UInt64(index + 1) * frameNanoseconds
            var pcm = [Int16](repeating: 0, count: samples)
            for offset in 0..<samples where index * samples + offset < speech.count {
                pcm[offset] = speech[index * samples + offset]
            }
            try pcm.withUnsafeBufferPointer { input in
                try sender.process(input) { payload in
                    payloadBytes += payload.count
                    let deliveries = impairment.deliveries(sentAt: .nanoseconds(Int64(sendTime)))
                    for time in deliveries.times { pending.append((time.nanoseconds, Array(payload))) }
                }
            }
            // The player's tick in this period, after delivering what arrived before it.
            let tick = sendTime + playerPhase
            pending.sort { $0.time < $1.time }
            while let first = pending.first, first.time <= tick {
                clock.set(nanoseconds: first.time)
                channel.receive(first.payload)
                pending.removeFirst()
            }
            clock.set(nanoseconds: tick)
            playback.withUnsafeMutableBufferPointer { channel.render(into: $0, now: tick) }
            output += playback
            let statistics = channel.statistics
            if statistics.received > 0 {
                delaySum +=
                    Double(statistics.currentDelay.components.attoseconds) / 1e15
                    + Double(statistics.currentDelay.components.seconds) * 1000
                delayCount += 1
            }
        }
        let seconds = Double(frames * samples) / 48_000
        return SimulationResult(
            output: output, statistics: channel.statistics,
            meanDelayMilliseconds: delaySum / Double(max(1, delayCount)),
            kilobitsPerSecond: Double(payloadBytes * 8) / seconds / 1000)
    }

    // MARK: Latency

    /// Sends silence then a tone that starts at a known sample, through the same pipeline with a
    /// calm network (loopback: 0.2 ms), and finds where the tone starts in the output. Repeated for
    /// player phases across a frame, since the player's tick falls anywhere within one.
    static func latency() throws {
        let samples = frame.samples
        let encoder = try AudioSender(frameDuration: frame)
        let lookahead = try encoder.lookahead()
        print("latency: 20 ms frames, calm network (0.2 ms one-way), onset of a 1 kHz tone")
        print("  in = the first sample of a captured frame; out = when that sample is played by the mixer")
        var results: [Double] = []
        for phaseStep in 0..<10 {
            let phase = UInt64(phaseStep) * 2_000_000
            let clock = ManualClock(nanoseconds: 0)
            let sender = try AudioSender(frameDuration: frame)
            let channel = try ReceiveChannel(name: "latency", clock: clock)
            let onsetFrame = 50
            var output: [Int16] = []
            var playback = [Int16](repeating: 0, count: samples)
            var pending: [(UInt64, [UInt8])] = []
            let start: UInt64 = 1_000_000_000
            var firstTick: UInt64 = 0
            for index in 0..<80 {
                var pcm = [Int16](repeating: 0, count: samples)
                if index >= onsetFrame {
                    for offset in 0..<samples {
                        let n = Double((index - onsetFrame) * samples + offset)
                        pcm[offset] = Int16(10_000 * sin(2 * Double.pi * 1000 * n / 48_000))
                    }
                }
                let captured = start + UInt64(index + 1) * frameNanoseconds  // frame complete
                try pcm.withUnsafeBufferPointer { input in
                    try sender.process(input) { pending.append((captured + 200_000, Array($0))) }
                }
                // Player ticks in this period, at the chosen phase.
                let tick = captured + phase
                if firstTick == 0 { firstTick = tick }
                for (time, payload) in pending where time <= tick {
                    clock.set(nanoseconds: time)
                    channel.receive(payload)
                }
                pending.removeAll { $0.0 <= tick }
                clock.set(nanoseconds: tick)
                playback.withUnsafeMutableBufferPointer { channel.render(into: $0, now: tick) }
                output += playback
            }
            // Output sample k is played at firstTick + k / 48 kHz (the mixer's frame goes to the
            // device at its tick); input onset sample was captured at start + onsetFrame × 20 ms.
            guard let onset = output.firstIndex(where: { abs(Int($0)) > 2000 }) else {
                print("  phase \(phase / 1_000_000) ms: tone not found")
                continue
            }
            let played = Double(firstTick) / 1e6 + Double(onset) / 48
            let spoken = Double(start) / 1e6 + Double(onsetFrame) * 20
            results.append(played - spoken)
        }
        let mean = results.reduce(0, +) / Double(max(1, results.count))
        print(
            String(
                format: "  over %d player phases: mean %.1f ms, min %.1f ms, max %.1f ms", results.count, mean,
                results.min() ?? .nan, results.max() ?? .nan))
        let target = 20 + Double(lookahead) / 48 + 20 + 5
        print(
            String(
                format: "  target ≤ frame + %.1f ms lookahead + one frame + 5 ms = %.1f ms", Double(lookahead) / 48,
                target))
        print("  (excludes the sound card's own buffer: PulseAudio adds its latency on top, see the note)")
    }

    // MARK: Device floor

    /// Reads frames from `source` and writes each at once to `sink` (in the engine's playback
    /// periods, `AudioFormat.playbackSamples`), on one thread, through the same
    /// `PulseAudioStream`s (so the same buffer attributes) Parley's audio engine opens: what
    /// a click's trip costs in the sound server alone. `Scripts/bench` measures it with the same
    /// probe as a call, so Parley's own share is the difference.
    ///
    /// The playback stream opens first. Opened second, it kept what the source captured while it
    /// was being set up waiting in the capture stream for good (a loop that reads one frame per
    /// frame it writes never catches up), and the "floor" came out anywhere from 13 to 66 ms, at
    /// times above a whole call through Parley, whose capture thread nothing holds up.
    static func deviceLoop(source: String, sink: String, frameSamples: Int, seconds: Int) throws {
        let period = AudioFormat.playbackSamples
        let playback = try PulseAudioStream(
            direction: .playback, device: sink, streamName: "device floor", frameSamples: period)
        let capture = try PulseAudioStream(
            direction: .capture, device: source, streamName: "device floor", frameSamples: frameSamples)
        var frame = [Int16](repeating: 0, count: frameSamples)
        print("device-loop: \(source) → \(sink), \(frameSamples / 48) ms frames, \(seconds) s")
        for _ in 0..<(seconds * 48_000 / frameSamples) {
            try frame.withUnsafeMutableBufferPointer { try capture.read(into: $0) }
            try frame.withUnsafeBufferPointer { frame in
                for start in stride(from: 0, to: frame.count, by: period) {
                    try playback.write(UnsafeBufferPointer(rebasing: frame[start..<min(frame.count, start + period)]))
                }
            }
        }
    }

    // MARK: CPU

    /// One encode + 7 decodes + mix per 20 ms frame, timed with the thread's CPU clock, on the input a
    /// meeting codes: speech, or with no file the tones the benchmarks' nodes send (node i sends
    /// 300 + 100·i Hz at the generator's level). Opus's cost depends on the signal (a louder tone
    /// costs half again), so a floor measured on another input than the meeting's is not its floor.
    /// The seven peers are seven encoders of their own input (speech from seven points in the file,
    /// or seven tones), coded before the timing starts, as a node receives seven different streams.
    static func cpu(speech path: String?) throws {
        let samples = frame.samples
        let frames = 1500  // 30 s, one after another
        let pacedFrames = 500  // 10 s in real time
        let warmUp = 50
        let speech = try path.map { try WAVFile.read(path: $0) }
        /// Node `node`'s input, frame after frame.
        func source(_ node: Int) -> (inout [Int16]) -> Void {
            if let speech {
                var position = node * speech.count / 8
                return { frame in
                    for offset in frame.indices { frame[offset] = speech[(position + offset) % speech.count] }
                    position += frame.count
                }
            }
            var tone = ToneGenerator(hertz: Double(300 + 100 * node))
            return { frame in frame.withUnsafeMutableBufferPointer { tone.fill($0) } }
        }
        func sender() throws -> AudioSender {
            let sender = try AudioSender(frameDuration: frame, bitrate: 32_000)
            sender.setMeasuredLoss(0.02)  // FEC on, one copy: the usual state on a real network
            return sender
        }
        let allFrames = warmUp + frames + pacedFrames
        var pcm = [Int16](repeating: 0, count: samples)
        let peersPackets: [[[UInt8]]] = try (1...7).map { node in
            let peer = try sender()
            let next = source(node)
            var packets: [[UInt8]] = []
            for _ in 0..<allFrames {
                next(&pcm)
                try pcm.withUnsafeBufferPointer { input in try peer.process(input) { packets.append(Array($0)) } }
            }
            return packets
        }
        let clock = ManualClock(nanoseconds: 1_000_000_000)
        let own = try sender()
        let ownSource = source(0)
        let channels = try (0..<7).map { try ReceiveChannel(name: "peer\($0)", clock: clock) }
        var peer = [Int16](repeating: 0, count: samples)
        var accumulator = [Float](repeating: 0, count: samples)
        var mixed = [Int16](repeating: 0, count: samples)
        var sent = 0
        /// Frame `index`'s work; returns the thread's CPU nanoseconds for the encode and for all of it.
        func frameWork(_ index: Int) throws -> (encode: UInt64, total: UInt64) {
            ownSource(&pcm)
            let begin = threadCPUTime()
            try pcm.withUnsafeBufferPointer { input in try own.process(input) { sent += $0.count } }
            let encoded = threadCPUTime()
            clock.advance(by: .milliseconds(20))
            for (channel, packets) in zip(channels, peersPackets) { channel.receive(packets[index]) }
            accumulator.withUnsafeMutableBufferPointer { acc in
                SoftClipMixer.clear(acc)
                for channel in channels {
                    peer.withUnsafeMutableBufferPointer { channel.render(into: $0, now: clock.now()) }
                    peer.withUnsafeBufferPointer { SoftClipMixer.add($0, to: acc) }
                }
                mixed.withUnsafeMutableBufferPointer { SoftClipMixer.render(UnsafeBufferPointer(acc), into: $0) }
            }
            return (encoded - begin, threadCPUTime() - begin)
        }
        /// µs a frame of `range`'s frames, encode and all, each started at `pace` (or at once).
        func measure(_ range: Range<Int>, pace: MonotonicClock?) throws -> (encode: Double, total: Double) {
            var encode: UInt64 = 0
            var total: UInt64 = 0
            var deadline = pace?.now() ?? 0
            for index in range {
                if let pace {
                    deadline += frameNanoseconds
                    pace.sleep(until: deadline)
                }
                let cost = try frameWork(index)
                encode += cost.encode
                total += cost.total
            }
            return (Double(encode) / Double(range.count) / 1000, Double(total) / Double(range.count) / 1000)
        }
        _ = try measure(0..<warmUp, pace: nil)
        let atOnce = try measure(warmUp..<(warmUp + frames), pace: nil)
        // A meeting codes a frame every 20 ms and sleeps in between, and a coder woken from sleep
        // finds its state and tables gone from the caches: this is the codec's cost in real time.
        let paced = try measure((warmUp + frames)..<allFrames, pace: MonotonicClock())
        precondition(sent > 0, "the encoder sent nothing")
        print(
            "cpu: 20 ms frames, 32 kb/s, complexity \(AudioSender.defaultComplexity), \(frames) frames of \(path == nil ? "the meeting benchmarks' tones" : "speech")"
        )
        print(String(format: "  encode once:            %6.1f µs/frame", atOnce.encode))
        print(String(format: "  7 decodes + mix:        %6.1f µs/frame", atOnce.total - atOnce.encode))
        print(
            String(
                format: "  total:                  %6.1f µs/frame = %.2f %% of one core (target ≤ 4 %%)", atOnce.total,
                atOnce.total / 200))
        print("  in real time (a frame every 20 ms, sleeping between, \(pacedFrames) frames):")
        print(String(format: "    encode once:          %6.1f µs/frame", paced.encode))
        print(String(format: "    7 decodes + mix:      %6.1f µs/frame", paced.total - paced.encode))
        print(
            String(
                format: "    total:                %6.1f µs/frame = %.2f %% of one core", paced.total, paced.total / 200
            ))

        // Echo cancellation and noise suppression (pulse devices only), for the record: on the
        // 5 ms blocks the engine runs, and on whole frames (the suppressor delays its output by
        // one block, so whole frames cost a frame of mouth-to-ear).
        for block in [240, 480, samples] {
            let canceller = try EchoCanceller(frameSize: block, tail: 9600, sampleRate: 48_000)
            let preprocessor = try Preprocessor(frameSize: block, sampleRate: 48_000, echoCanceller: canceller)
            var cleaned = [Int16](repeating: 0, count: samples)
            var processing: UInt64 = 0
            for _ in 0..<500 {
                ownSource(&pcm)
                let begin = threadCPUTime()
                for start in stride(from: 0, to: samples, by: block) {
                    let range = start..<(start + block)
                    pcm[range].withUnsafeBufferPointer { near in
                        mixed[range].withUnsafeBufferPointer { far in
                            cleaned[range].withUnsafeMutableBufferPointer {
                                canceller.process(captured: near, played: far, into: $0)
                            }
                        }
                    }
                    cleaned[range].withUnsafeMutableBufferPointer { preprocessor.process($0) }
                }
                processing += threadCPUTime() - begin
            }
            let processingPerFrame = Double(processing) / 500 / 1000
            print(
                String(
                    format:
                        "  + echo cancel + denoise, %2d ms blocks: %6.1f µs/frame = %.2f %% more, %2d ms of delay%@",
                    block / 48, processingPerFrame, processingPerFrame / 200, block / 48,
                    block == 240 ? " (the engine, pulse devices only)" : ""))
        }
    }

    static func threadCPUTime() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &spec)
        return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
    }
}
