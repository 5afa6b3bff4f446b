import Foundation
import ParleyAudio
import ParleyCore
import ParleyTestSupport
import PulseAudio
import SpeexDSP
import Synchronization
import Testing

@Suite("Device strings")
struct DeviceSpecTests {
    @Test(arguments: [
        ("pulse", AudioInput.pulse(source: nil)),
        ("pulse:alsa_input.usb-mic", .pulse(source: "alsa_input.usb-mic")),
        ("wav:/tmp/a:b.wav", .wav(path: "/tmp/a:b.wav")),
        ("tone:440", .tone(hertz: 440)),
        ("tone:1000.5", .tone(hertz: 1000.5)),
        ("silence", .silence),
    ])
    func inputsParse(text: String, expected: AudioInput) throws {
        #expect(try AudioInput(parsing: text) == expected)
        #expect(try AudioInput(parsing: expected.description) == expected)
    }

    @Test(arguments: [
        "", "mic", "pulse:", "pulse:a b", "wav:", "tone", "tone:0", "tone:abc", "tone:30000", "silence:1",
    ])
    func badInputsAreRejectedClearly(text: String) {
        #expect {
            _ = try AudioInput(parsing: text)
        } throws: { error in
            (error as? AudioSpecError)?.description.hasPrefix("invalid audio device \"\(text)\"") == true
        }
    }

    @Test(arguments: [
        ("pulse", AudioOutput.pulse(sink: nil)), ("pulse:speaker", .pulse(sink: "speaker")),
        ("wav:out.wav", .wav(path: "out.wav")), ("null", .null),
    ])
    func outputsParse(text: String, expected: AudioOutput) throws {
        #expect(try AudioOutput(parsing: text) == expected)
    }

    @Test(arguments: ["speaker", "null:x", "wav:", "pulse: "])
    func badOutputsAreRejected(text: String) {
        #expect(throws: AudioSpecError.self) { try AudioOutput(parsing: text) }
    }

    @Test func frameDurationsAreTenTwentyOrForty() throws {
        #expect(try AudioFrameDuration(milliseconds: 20).samples == 960)
        #expect(try AudioFrameDuration(milliseconds: 10).samples == 480)
        #expect(throws: AudioSpecError.self) { try AudioFrameDuration(milliseconds: 60) }
    }

    @Test func processingIsOnForPulseAndOffForFiles() {
        #expect(AudioEngineConfiguration(input: .pulse(source: nil), output: .null).processesCapture)
        #expect(!AudioEngineConfiguration(input: .wav(path: "x.wav"), output: .null).processesCapture)
        var forced = AudioEngineConfiguration(input: .tone(hertz: 440), output: .null)
        forced.processing = .on
        #expect(forced.processesCapture)
    }
}

@Suite("WAV files and resampling")
struct WAVFileTests {
    static func temporaryPath(_ name: String) -> String {
        NSTemporaryDirectory() + "parley-audio-test-\(getpid())-\(name)"
    }

    @Test(arguments: [8_000, 16_000, 22_050, 44_100, 48_000])
    func aToneSurvivesWritingReadingAndResampling(rate: Int) throws {
        let path = Self.temporaryPath("tone-\(rate).wav")
        defer { unlink(path) }
        let seconds = 0.5
        let tone = (0..<Int(Double(rate) * seconds)).map {
            Int16(8000 * sin(2 * Double.pi * 700 * Double($0) / Double(rate)))
        }
        try WAVFile.write(tone, sampleRate: rate, to: path)
        let samples = try WAVFile.read(path: path)
        #expect(abs(samples.count - 24_000) <= 2)
        let found = try #require(Spectrum.dominantFrequency(in: samples, sampleRate: 48_000))
        #expect(abs(found - 700) < 5)
    }

    @Test func stereoIsMixedDown() throws {
        var bytes = Array("RIFF".utf8) + [0, 0, 0, 0] + Array("WAVEfmt ".utf8) + [16, 0, 0, 0, 1, 0, 2, 0]
        bytes += [0x80, 0xBB, 0, 0, 0, 0xEE, 2, 0, 4, 0, 16, 0] + Array("data".utf8) + [8, 0, 0, 0]
        bytes += [0x10, 0x00, 0x30, 0x00, 0xFF, 0xFF, 0x01, 0x00]  // (16, 48), (-1, 1)
        let (samples, rate) = try WAVFile.parse(bytes)
        #expect(rate == 48_000)
        #expect(samples == [32, 0])
    }

    static let riff: [UInt8] = Array("RIFF".utf8) + [0, 0, 0, 0]
    static let floatFormat: [UInt8] = [16, 0, 0, 0, 3, 0, 1, 0, 0x80, 0xBB, 0, 0, 0, 0, 0, 0, 4, 0, 32, 0]
    static let badFiles: [([UInt8], String)] = [
        (Array("RIFX....WAVE".utf8), "is not a RIFF/WAVE file"),
        (riff + Array("WAVEfmt ".utf8) + floatFormat, "is not 16-bit PCM"),
        (riff + Array("WAVE".utf8), "has no data chunk"),
        (riff + Array("WAVEdata".utf8) + [0, 0, 0, 0], "has its data before its fmt chunk"),
    ]

    @Test(arguments: badFiles)
    func badFilesAreRejectedWithTheReason(bytes: [UInt8], reason: String) {
        #expect {
            _ = try WAVFile.parse(bytes, path: "x.wav")
        } throws: { error in
            (error as? WAVFileError)?.description.contains(reason) == true
        }
    }

    /// The start-up check (no samples decoded) refuses what reading refuses, for the same reason.
    @Test(arguments: badFiles)
    func theCheckRefusesWhatReadingRefuses(bytes: [UInt8], reason: String) throws {
        // Named by the reason's letters: the cases run at once, and two reasons have the same length.
        let path = Self.temporaryPath("bad-\(reason.filter(\.isLetter)).wav")
        defer { unlink(path) }
        #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
        for attempt in [{ try WAVFile.check(path: path) }, { _ = try WAVFile.read(path: path) }] {
            #expect {
                try attempt()
            } throws: { error in
                (error as? WAVFileError)?.description.contains(reason) == true
            }
        }
    }

    @Test func aGoodFilePassesTheCheck() throws {
        let path = Self.temporaryPath("good.wav")
        defer { unlink(path) }
        try WAVFile.write([1, 2, 3], to: path)
        try WAVFile.check(path: path)
        #expect(try WAVFile.read(path: path) == [1, 2, 3])
    }

    @Test func aMissingFileNamesItself() {
        #expect {
            _ = try WAVFile.read(path: "/nonexistent/parley.wav")
        } throws: { error in
            "\(error)".contains("/nonexistent/parley.wav")
        }
    }
}

@Suite("Echo cancellation")
struct EchoCancellationTests {
    @Test func theEchoOfThePlayedSignalIsRemoved() throws {
        // Far end: white noise (what the speaker plays). Near end: its echo, 5 ms later at half
        // amplitude. After the filter converges, the output must be far quieter than the echo.
        let frame = 480
        let canceller = try EchoCanceller(frameSize: frame, tail: 4800, sampleRate: 48_000)
        var generator = SeededGenerator(seed: 9)
        let delay = 240
        var history = [Int16](repeating: 0, count: delay)
        var echoEnergy = 0.0
        var residualEnergy = 0.0
        var output = [Int16](repeating: 0, count: frame)
        for index in 0..<600 {  // 6 s
            let far = (0..<frame).map { _ in Int16(truncatingIfNeeded: Int(generator.next() % 16_000) - 8_000) }
            let timeline = history + far
            let near = (0..<frame).map { timeline[$0] / 2 }
            history = Array(timeline.suffix(delay))
            near.withUnsafeBufferPointer { captured in
                far.withUnsafeBufferPointer { played in
                    output.withUnsafeMutableBufferPointer {
                        canceller.process(captured: captured, played: played, into: $0)
                    }
                }
            }
            if index >= 400 {
                echoEnergy += near.reduce(0.0) { $0 + Double($1) * Double($1) }
                residualEnergy += output.reduce(0.0) { $0 + Double($1) * Double($1) }
            }
        }
        let attenuation = 10 * log10(echoEnergy / max(residualEnergy, 1))
        #expect(attenuation > 10, "echo attenuated by only \(attenuation) dB")
    }

    @Test(arguments: [480, 960])
    func onlyTheNoiseSuppressorDelaysTheSignalByOneOfItsFrames(frame: Int) throws {
        // A burst in frame 60 of low noise, no far end: where it comes out of each stage is the
        // stage's delay, which status reports as the latency budget's "denoise" (a frame).
        let canceller = try EchoCanceller(frameSize: frame, tail: 9600, sampleRate: 48_000)
        let suppressor = try Preprocessor(
            frameSize: frame, sampleRate: 48_000, noiseSuppression: -30, echoCanceller: canceller)
        var generator = SeededGenerator(seed: 4)
        var heard: [Int16] = []
        var cancelled: [Int16] = []
        var suppressed: [Int16] = []
        let silence = [Int16](repeating: 0, count: frame)
        for index in 0..<80 {
            var near = (0..<frame).map { _ in Int16(Int(generator.next() % 61) - 30) }
            if index == 60 { for k in 100..<300 { near[k] = Int16(12_000 * sin(Double(k) * 0.2)) } }
            heard += near
            var output = [Int16](repeating: 0, count: frame)
            near.withUnsafeBufferPointer { captured in
                silence.withUnsafeBufferPointer { played in
                    output.withUnsafeMutableBufferPointer {
                        canceller.process(captured: captured, played: played, into: $0)
                    }
                }
            }
            cancelled += output
            output.withUnsafeMutableBufferPointer { suppressor.process($0) }
            suppressed += output
        }
        func onset(_ samples: [Int16]) -> Int? { samples.firstIndex { abs(Int($0)) > 3000 } }
        let burst = try #require(onset(heard))
        #expect(onset(cancelled) == burst, "the canceller adds no delay")
        #expect(onset(suppressed) == burst + frame, "the suppressor adds one of its frames")
    }

    @Test func invalidSettingsAreRejected() {
        #expect(throws: SpeexDSPError.self) { try EchoCanceller(frameSize: 0, tail: 100, sampleRate: 48_000) }
        #expect(throws: SpeexDSPError.self) { try Resampler(from: 48_000, to: 16_000, quality: 11) }
    }
}

/// Collects what the engine emits, from its capture thread.
final class Collector: Sendable {
    let target = Mutex<ReceiveChannel?>(nil)
    let count = Atomic<Int>(0)

    func deliver(_ payload: UnsafeRawBufferPointer) {
        count.add(1, ordering: .relaxed)
        target.withLock { $0?.receive(payload) }
    }
}

@Suite("Audio engine threads")
struct AudioEngineTests {
    @Test func aToneGoesThroughTheEngineThreadsToAWAVFile() async throws {
        let path = WAVFileTests.temporaryPath("engine.wav")
        defer { unlink(path) }
        let collector = Collector()
        let engine = try AudioEngine(
            configuration: AudioEngineConfiguration(input: .tone(hertz: 700), output: .wav(path: path)),
            onEncodedFrame: { collector.deliver($0) })
        // The engine hears itself: its own payloads come back as a peer's.
        let peer = try engine.addPeer(name: "self")
        collector.target.withLock { $0 = peer }
        try engine.start()
        try await waitUntil(.seconds(10), "one second of audio through the engine") {
            peer.statistics.received >= 50
        }
        engine.stop()
        #expect(collector.count.load(ordering: .relaxed) >= 50)
        #expect(peer.statistics.lost == 0)
        #expect(peer.statistics.isSpeaking)
        #expect(engine.inputLevel > -20)
        let written = try WAVFile.read(path: path)
        let heard = try #require(Spectrum.dominantFrequency(in: Array(written.suffix(24_000)), sampleRate: 48_000))
        #expect(abs(heard - 700) < 5)

        engine.setMuted(true)
        #expect(engine.isMuted)
        engine.removePeer(peer)
        #expect(engine.peers.isEmpty)
    }

    /// The ICE loop is asked for what it held back once a frame, not once a playback period (10
    /// ms): each ask wakes it for a GLib iteration, and at every period an 8-node meeting cost a
    /// third more CPU. Counted per encoded frame, two clock-paced loops side by side, so a loaded
    /// machine does not move it.
    @Test func receivedDatagramsAreCollectedOnceAFrameNotOnceAPeriod() async throws {
        let frames = Atomic<Int>(0)
        let collects = Atomic<Int>(0)
        var configuration = AudioEngineConfiguration(input: .tone(hertz: 500), output: .null)
        configuration.frameDuration = .ms20
        configuration.collectReceived = { collects.add(1, ordering: .relaxed) }
        let engine = try AudioEngine(
            configuration: configuration, onEncodedFrame: { _ in frames.add(1, ordering: .relaxed) })
        try engine.start()
        defer { engine.stop() }
        try await waitUntil(.seconds(10), "10 frames") { frames.load(ordering: .relaxed) >= 10 }
        let (framesBefore, collectsBefore) = (frames.load(ordering: .relaxed), collects.load(ordering: .relaxed))
        try await waitUntil(.seconds(20), "30 more frames") { frames.load(ordering: .relaxed) >= framesBefore + 30 }
        let perFrame =
            Double(collects.load(ordering: .relaxed) - collectsBefore)
            / Double(frames.load(ordering: .relaxed) - framesBefore)
        #expect((0.7...1.3).contains(perFrame), "\(perFrame) collects per 20 ms frame")
    }

    /// An engine released while its threads run stops and joins them in `deinit`; the threads
    /// must not reach back into the engine being destroyed (they once held it `unowned`, which
    /// crashed the process here). The WAV header written at stop proves the threads were joined.
    @Test func anEngineDroppedWhileRunningStopsCleanly() async throws {
        let path = WAVFileTests.temporaryPath("dropped.wav")
        defer { unlink(path) }
        let frames = Atomic<Int>(0)
        do {
            let engine = try AudioEngine(
                configuration: AudioEngineConfiguration(input: .tone(hertz: 500), output: .wav(path: path)),
                onEncodedFrame: { _ in frames.add(1, ordering: .relaxed) })
            try engine.start()
            try await waitUntil(.seconds(10), "the capture thread to encode") { frames.load(ordering: .relaxed) >= 5 }
        }
        let afterRelease = frames.load(ordering: .relaxed)
        #expect(try WAVFile.read(path: path).count > 0)
        #expect(frames.load(ordering: .relaxed) == afterRelease)
    }

    /// Peers coming and going faster than the playback thread takes the changes (a stalled
    /// device while a meeting churns) used to overflow the ring of peer changes and trap; the
    /// changes now wait for room, and every one is applied in order.
    @Test func peerChurnFasterThanPlaybackLosesNothing() async throws {
        var configuration = AudioEngineConfiguration(input: .silence, output: .null)
        configuration.maximumPeers = 2
        let engine = try AudioEngine(configuration: configuration, onEncodedFrame: { _ in })
        try engine.start()
        defer { engine.stop() }
        var kept: ReceiveChannel?
        for round in 0..<100 {
            let channel = try engine.addPeer(name: "peer \(round)")
            if round == 57 { kept = channel } else { engine.removePeer(channel) }
        }
        let survivor = try #require(kept)
        #expect(engine.peers.count == 1 && engine.peers.first === survivor)
        survivor.receive([1, 0, 0, 1, 0, 0, 0, 0, 3, 192, 0xF8])  // one 20 ms payload the mixer will play
        try await waitUntil(.seconds(10), "the playback thread to take every change") {
            survivor.statistics.received == 1
        }
    }

    @Test func aMissingWAVInputFailsToStartWithItsName() throws {
        let engine = try AudioEngine(
            configuration: AudioEngineConfiguration(input: .wav(path: "/nonexistent/in.wav"), output: .null),
            onEncodedFrame: { _ in })
        #expect {
            try engine.start()
        } throws: { error in
            "\(error)".contains("/nonexistent/in.wav")
        }
        #expect(!engine.isRunning)
    }
}

/// Whether Scripts/with-pulseaudio started a server for this run.
let pulseServerAvailable = TestEnvironment.environment("PARLEY_PULSE_MIC") != nil

/// Needs a PulseAudio server: Scripts/test runs the tests under Scripts/with-pulseaudio.
@Suite("PulseAudio (real server, null sinks)", .enabled(if: TestEnvironment.shouldRun(needing: pulseServerAvailable)))
struct PulseTest {
    static var microphone: String { TestEnvironment.environment("PARLEY_PULSE_MIC") ?? "parley_mic" }
    static var speaker: String { TestEnvironment.environment("PARLEY_PULSE_SPEAKER") ?? "parley_speaker" }

    /// The playback thread mixes 10 ms at a time whatever the frame (`AudioFormat.playbackSamples`),
    /// and the server keeps two such periods: at 20 ms frames a mixed frame waited 20–23 ms in the
    /// server behind 20 ms periods (and a frame that arrived, for the player's next period), about
    /// 12 ms now. What the engine reports waiting at mix time, over a few of its readings.
    @Test func aMixedFrameWaitsBehindTenMillisecondPeriodsAtTwentyMillisecondFrames() async throws {
        var configuration = AudioEngineConfiguration(input: .silence, output: .pulse(sink: Self.speaker))
        configuration.frameDuration = .ms20
        let engine = try AudioEngine(configuration: configuration, onEncodedFrame: { _ in })
        try engine.start()
        defer { engine.stop() }
        let readings = Mutex<[Double]>([])
        // A wide limit: the poll runs on the concurrency pool, which the start of `swift test` can
        // starve for 20 s; a passing run takes 2–3 s.
        try await waitUntil(.seconds(90), "8 readings of the playback queue", interval: .milliseconds(300)) {
            if let queued = engine.latency.playbackQueue {
                readings.withLock { $0.append(Double(queued.components.attoseconds) / 1e15) }
            }
            return readings.withLock { $0.count } >= 8
        }
        let settled = readings.withLock { $0.dropFirst(2).sorted() }
        #expect(settled[settled.count / 2] < 15, "median queue at mix time \(settled) ms")
    }

    @Test func aTonePlayedIntoTheMicrophoneComesOutOfTheSpeaker() async throws {
        // The "room": the test plays 1 kHz into the microphone sink; the engine captures its monitor,
        // encodes, hears its own payloads as a peer, mixes and plays to the speaker sink; the test
        // records the speaker's monitor.
        var configuration = AudioEngineConfiguration(
            input: .pulse(source: "\(Self.microphone).monitor"), output: .pulse(sink: Self.speaker))
        configuration.processing = .off  // the loop plays the mic back: an echo canceller would (rightly) remove it
        let collector = Collector()
        let engine = try AudioEngine(configuration: configuration, onEncodedFrame: { collector.deliver($0) })
        let peer = try engine.addPeer(name: "self")
        collector.target.withLock { $0 = peer }

        let stop = Atomic<Bool>(false)
        try engine.start()
        defer { engine.stop() }
        let microphone = Self.microphone
        let speaker = Self.speaker
        let playing = Thread {
            guard
                let player = try? PulseAudioStream(
                    direction: .playback, device: microphone, streamName: "test tone", frameSamples: 960)
            else { return }
            var phase = 0.0
            var frame = [Int16](repeating: 0, count: 960)
            while !stop.load(ordering: .relaxed) {
                for index in frame.indices {
                    frame[index] = Int16(10_000 * sin(phase))
                    phase += 2 * Double.pi * 1000 / 48_000
                }
                do { try frame.withUnsafeBufferPointer { try player.write($0) } } catch { return }
            }
        }
        playing.start()
        defer { stop.store(true, ordering: .relaxed) }

        let heard: [Int16] = try await withTimeout(.seconds(20), "the tone recorded from the speaker monitor") {
            let recorder = try PulseAudioStream(
                direction: .capture, device: "\(speaker).monitor", streamName: "test ear", frameSamples: 960)
            var recorded: [Int16] = []
            var frame = [Int16](repeating: 0, count: 960)
            // Record until the tone has been heard for a second (pulse and the pipeline need a moment).
            while recorded.count < 48_000 * 10 {
                try frame.withUnsafeMutableBufferPointer { try recorder.read(into: $0) }
                recorded += frame
                let tail = recorded.suffix(48_000)
                if tail.count == 48_000 && Spectrum.power(of: 1000, in: tail, sampleRate: 48_000) > 0.01 { break }
            }
            return recorded
        }
        let lastSecond = heard.suffix(48_000)
        #expect(Spectrum.power(of: 1000, in: lastSecond, sampleRate: 48_000) > 0.01)
        #expect(
            Spectrum.dominantFrequency(in: Array(lastSecond), sampleRate: 48_000).map { abs($0 - 1000) < 5 } == true)
        #expect(peer.statistics.received > 25)
        #expect(engine.inputLevel > -30)
    }

    @Test func anUnknownDeviceIsAClearError() {
        #expect {
            _ = try PulseAudioStream(direction: .playback, device: "no_such_sink", streamName: "x", frameSamples: 960)
        } throws: { error in
            "\(error)".contains("no_such_sink")
        }
    }
}

@Suite("Device follower: fall back to the default, return to the chosen device")
struct DeviceFollowerTests {
    @Test func aLostChosenDeviceFallsBackAndReturnsWhenListedAgain() {
        var follower = DeviceFollower(chosen: "headset")
        #expect(follower.listed(["headset", "speakers"]) == nil, "in use and present: nothing to do")
        #expect(follower.lost() == .openDefault)
        #expect(follower.fallenBack && !follower.working)
        #expect(follower.listed(["speakers"]) == nil, "one step at a time")
        follower.opened(.openDefault, succeeded: true)
        #expect(follower.fallenBack && follower.working)
        #expect(follower.listed(["speakers"]) == nil, "still missing: the default plays on")
        #expect(follower.listed(["speakers", "headset"]) == .openChosen)
        follower.opened(.openChosen, succeeded: true)
        #expect(!follower.fallenBack && follower.working)
    }

    @Test func aDeviceThatLeavesTheListFallsBackEvenIfItsStreamDidNotFail() {
        // A server may move our stream to its default by itself: no error reaches us.
        var follower = DeviceFollower(chosen: "headset")
        #expect(follower.listed(["speakers"]) == .openDefault)
        follower.opened(.openDefault, succeeded: true)
        #expect(follower.fallenBack)
    }

    @Test func aServerThatIsGoneIsRetriedOnceItAnswers() {
        var follower = DeviceFollower(chosen: nil)
        #expect(follower.lost() == .openDefault)
        follower.opened(.openDefault, succeeded: false)
        #expect(follower.listed(nil) == nil, "no answer: nothing to try")
        #expect(follower.listed(["speakers"]) == .openDefault)
        follower.opened(.openDefault, succeeded: true)
        #expect(!follower.fallenBack && follower.working)
    }

    @Test func aChosenDeviceThatWillNotOpenLeavesTheDefaultPlaying() {
        var follower = DeviceFollower(chosen: "headset")
        _ = follower.lost()
        follower.opened(.openDefault, succeeded: true)
        #expect(follower.listed(["headset"]) == .openChosen)
        follower.opened(.openChosen, succeeded: false)
        #expect(follower.fallenBack && follower.working)
        #expect(follower.listed(["headset"]) == .openChosen, "tried again next time")
    }

    @Test func choosingAnotherDeviceClearsTheFallback() {
        var follower = DeviceFollower(chosen: "headset")
        _ = follower.lost()
        follower.chose("speakers")
        #expect(follower.chosen == "speakers" && !follower.fallenBack && follower.pending == nil)
    }
}

@Suite("Per-peer volume")
struct PeerVolumeTests {
    @Test func volumeStartsAtAHundredAndIsNeverNegative() throws {
        let channel = try ReceiveChannel(name: "peer")
        #expect(channel.volume == 100)
        channel.setVolume(50)
        #expect(channel.volume == 50)
        channel.setVolume(-3)
        #expect(channel.volume == 0)
    }
}
