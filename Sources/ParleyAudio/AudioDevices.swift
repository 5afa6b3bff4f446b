import ParleyCore
import PulseAudio
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Something the capture thread reads frames from. `read` blocks until a frame is due: a real
/// device paces by its own clock, files and generators by the monotonic clock.
protocol CaptureDevice: AnyObject {
    func read(into frame: UnsafeMutableBufferPointer<Int16>) throws
    /// How long audio waits in the sound server before `read` returns it (nil: no server).
    func queued() -> Duration?
}

/// Something the playback thread writes mixed frames to, pacing it the same way.
protocol PlaybackDevice: AnyObject {
    /// Returns when the next frame should be mixed: as late as the device allows, so what the
    /// mix decides (which frames are due) is heard as soon as possible.
    func waitForNextFrame()
    func write(_ frame: UnsafeBufferPointer<Int16>) throws
    /// Flushes and closes (a WAV file's header is written here).
    func close() throws
    /// How long a frame written now waits in the sound server before it is heard (nil: no server).
    func queued() -> Duration?
}

extension CaptureDevice {
    func queued() -> Duration? { nil }
}

extension PlaybackDevice {
    func queued() -> Duration? { nil }
    func waitForNextFrame() {}
}

public enum AudioDevices {
    /// Opens the devices once (and closes them, without playing anything), returning why they
    /// cannot be used: a PulseAudio stream is opened and freed, a WAV input read (not decoded), a WAV output
    /// created. (Starting an engine would also work, but closing a playback stream drains what
    /// the server buffered: seconds of start-up.)
    public static func problem(input: AudioInput, output: AudioOutput, frameSamples frame: Int) -> String? {
        do {
            switch input {
            case .pulse(let source):
                _ = try PulseAudioStream(direction: .capture, device: source, streamName: "probe", frameSamples: frame)
            case .wav(let path):
                try WAVFile.check(path: path)
            case .tone, .silence:
                break
            }
            switch output {
            case .pulse(let sink):
                _ = try PulseAudioStream(
                    direction: .playback, device: sink, streamName: "probe", frameSamples: AudioFormat.playbackSamples)
            case .wav(let path):
                try WAVFileWriter(path: path).close()
            case .null:
                break
            }
            return nil
        } catch {
            return "cannot open audio device: \(error)"
        }
    }

    /// Opens an input: a slow path (allocates, may touch the disk or the audio server).
    static func open(_ input: AudioInput, frameSamples: Int) throws -> any CaptureDevice {
        switch input {
        case .pulse(let source):
            PulseCapture(
                stream: try PulseAudioStream(
                    direction: .capture, device: source, streamName: "Parley microphone",
                    sampleRate: AudioFormat.sampleRate, frameSamples: frameSamples))
        case .wav(let path):
            GeneratedCapture(samples: try WAVFile.read(path: path), frameSamples: frameSamples)
        case .tone(let hertz):
            GeneratedCapture(tone: hertz, frameSamples: frameSamples)
        case .silence:
            GeneratedCapture(samples: [], frameSamples: frameSamples)
        }
    }

    static func open(_ output: AudioOutput, frameSamples: Int) throws -> any PlaybackDevice {
        switch output {
        case .pulse(let sink):
            PulsePlayback(
                stream: try PulseAudioStream(
                    direction: .playback, device: sink, streamName: "Parley meeting",
                    sampleRate: AudioFormat.sampleRate, frameSamples: frameSamples))
        case .wav(let path):
            PacedPlayback(writer: try WAVFileWriter(path: path), frameSamples: frameSamples)
        case .null:
            PacedPlayback(writer: nil, frameSamples: frameSamples)
        }
    }
}

final class PulseCapture: CaptureDevice {
    let stream: PulseAudioStream
    init(stream: PulseAudioStream) { self.stream = stream }
    func read(into frame: UnsafeMutableBufferPointer<Int16>) throws { try stream.read(into: frame) }
    func queued() -> Duration? { stream.queued }
}

/// A sound server's stream, which keeps about two frames queued (`PulseAudioStream`; the engine's
/// frames here are playback periods, `AudioFormat.playbackSamples`). A blocking write returns as
/// soon as the server takes the frame, with two frames queued: a frame mixed right then would wait
/// behind both. So the thread sleeps until the server is about to ask for the next frame (one
/// frame played since the last write, less a margin for waking up) and mixes then: a frame less of
/// delay, and the queue never runs lower than a blocking write would have let it.
final class PulsePlayback: PlaybackDevice {
    let stream: PulseAudioStream
    private let clock = MonotonicClock()
    private let frameNanoseconds: UInt64
    /// The queue right after a write that filled it (a running maximum that lets go slowly, so a
    /// server that takes several frames at once is followed).
    private var fullQueue: UInt64 = 0
    /// When to mix the next frame; 0: at once.
    private var nextMix: UInt64 = 0

    /// Woken this long before the server wants the next frame.
    static let wakeMargin: UInt64 = 2_000_000

    init(stream: PulseAudioStream) {
        self.stream = stream
        frameNanoseconds = UInt64(stream.frameSamples) * 1_000_000_000 / UInt64(stream.sampleRate)
    }

    func waitForNextFrame() {
        if nextMix > 0 { clock.sleep(until: nextMix) }
    }

    func write(_ frame: UnsafeBufferPointer<Int16>) throws {
        try stream.write(frame)
        let now = clock.now()
        guard let queue = stream.queued?.nanoseconds else {
            nextMix = 0
            return
        }
        fullQueue = max(queue, fullQueue - min(fullQueue, frameNanoseconds / 50))
        // The server asks for more once the queue is a frame below full.
        let untilRoom = Int64(queue) - Int64(fullQueue) + Int64(frameNanoseconds) - Int64(Self.wakeMargin)
        nextMix = untilRoom > 0 ? now + UInt64(untilRoom) : 0
    }

    func close() throws { try stream.drain() }
    func queued() -> Duration? { stream.queued }
}

extension PulseAudioStream {
    /// What the server holds for this stream now (its latency), nil if it cannot say.
    var queued: Duration? { (try? latencyMicroseconds()).map { .microseconds(Int64($0)) } }
}

/// Releases one frame per frame duration on absolute deadlines of the monotonic clock, so a loop
/// paced by it neither drifts nor bursts; after a stall of more than a few frames it starts afresh
/// instead of racing to catch up.
struct FramePacer {
    let clock = MonotonicClock()
    let period: UInt64
    private var deadline: UInt64 = 0

    init(frameSamples: Int) {
        period = UInt64(frameSamples) * 1_000_000_000 / UInt64(AudioFormat.sampleRate)
    }

    mutating func wait() {
        let now = clock.now()
        if deadline == 0 || now > deadline + 4 * period { deadline = now }
        deadline += period
        clock.sleep(until: deadline)
    }
}

/// A WAV file (played once, then silence), a tone or silence, paced in real time.
final class GeneratedCapture: CaptureDevice {
    private let samples: [Int16]
    private var position = 0
    private var tone: ToneGenerator?
    private var pacer: FramePacer

    init(samples: [Int16], frameSamples: Int) {
        self.samples = samples
        pacer = FramePacer(frameSamples: frameSamples)
    }

    init(tone hertz: Double, frameSamples: Int) {
        samples = []
        tone = ToneGenerator(hertz: hertz)
        pacer = FramePacer(frameSamples: frameSamples)
    }

    func read(into frame: UnsafeMutableBufferPointer<Int16>) throws {
        pacer.wait()
        if tone != nil {
            tone!.fill(frame)
            return
        }
        for index in frame.indices {
            frame[index] = position < samples.count ? samples[position] : 0
            position += 1
        }
    }
}

/// A sine tone at `toneAmplitude`, frame after frame without a break.
///
/// The phase is a point on the unit circle turned by one step each sample, a complex multiply: a
/// `sin` call per sample cost a meeting of tone-sending nodes (the benchmarks' and most tests'
/// input) more than sealing their datagrams.
public struct ToneGenerator: Sendable {
    /// Amplitude of generated tones: -10 dBFS, loud and clear without clipping in a mix of three.
    static let toneAmplitude = 0.316 * 32767

    private var phase: (cos: Double, sin: Double) = (1, 0)
    private let step: (cos: Double, sin: Double)

    public init(hertz: Double) {
        let radians = 2 * Double.pi * hertz / Double(AudioFormat.sampleRate)
        step = (cos(radians), sin(radians))
    }

    public mutating func fill(_ frame: UnsafeMutableBufferPointer<Int16>) {
        var (c, s) = phase
        for index in frame.indices {
            frame[index] = Int16(Self.toneAmplitude * s)
            (c, s) = (c * step.cos - s * step.sin, s * step.cos + c * step.sin)
        }
        // Back onto the unit circle once a frame: rounding errors would otherwise change the
        // amplitude over hours.
        let radius = (c * c + s * s).squareRoot()
        phase = (c / radius, s / radius)
    }
}

/// A WAV file writer or a null sink, paced in real time.
final class PacedPlayback: PlaybackDevice {
    private let writer: WAVFileWriter?
    private var pacer: FramePacer

    init(writer: WAVFileWriter?, frameSamples: Int) {
        self.writer = writer
        pacer = FramePacer(frameSamples: frameSamples)
    }

    func write(_ frame: UnsafeBufferPointer<Int16>) throws {
        pacer.wait()
        try writer?.append(frame)
    }

    func close() throws { try writer?.close() }
}

extension AudioDevices {
    /// Plays a tone on `output` while measuring `input` for `seconds` (both opened here, beside
    /// whatever else plays): a check of the set-up before joining. Blocks for the test's length.
    public static func test(
        input: AudioInput, output: AudioOutput, hertz: Double = 440, seconds: Double = 1.5
    )
        throws -> (level: Double, peak: Double)
    {
        let frame = AudioFrameDuration.ms20.samples
        let capture = try open(input, frameSamples: frame)
        let playback = try open(output, frameSamples: frame)
        let tone = GeneratedCapture(tone: hertz, frameSamples: frame)
        let frames = Int(seconds * 50)
        let failure = Mutex<(any Error)?>(nil)
        // Safety: the playback device and the tone are used by this one thread only.
        nonisolated(unsafe) let player = (playback, tone)
        let playing = try RealtimeThread(name: "parley-test-tone") {
            var samples = [Int16](repeating: 0, count: frame)
            do {
                for _ in 0..<frames {
                    try samples.withUnsafeMutableBufferPointer { try player.1.read(into: $0) }
                    try samples.withUnsafeBufferPointer { try player.0.write($0) }
                }
                try player.0.close()
            } catch {
                failure.withLock { $0 = error }
            }
        }
        var samples = [Int16](repeating: 0, count: frame)
        var energy = 0.0
        var peak = LevelMeter.floor
        do {
            for _ in 0..<frames {
                try samples.withUnsafeMutableBufferPointer { try capture.read(into: $0) }
                let level = samples.withUnsafeBufferPointer { LevelMeter.rmsLevel(of: $0) }
                peak = max(peak, level)
                energy += pow(10, level / 10)
            }
        } catch {
            playing.join()
            throw error
        }
        playing.join()
        if let error = failure.withLock({ $0 }) { throw error }
        let mean = energy / Double(frames)
        return (mean > 0 ? max(LevelMeter.floor, 10 * log10(mean)) : LevelMeter.floor, peak)
    }
}

/// A sound server's devices, as `parley devices` shows them.
public struct SoundServerDevices: Sendable, Hashable {
    public struct Device: Sendable, Hashable {
        public var name: String
        public var description: String
    }

    public var sources: [Device]
    public var sinks: [Device]
    public var defaultSource: String?
    public var defaultSink: String?

    /// Asks the server (PulseAudio or PipeWire's; `$PULSE_SERVER` picks it), one round trip.
    public static func list() throws -> SoundServerDevices {
        let list = try PulseAudioServer.devices()
        return SoundServerDevices(
            sources: list.sources.map { Device(name: $0.name, description: $0.description) },
            sinks: list.sinks.map { Device(name: $0.name, description: $0.description) },
            defaultSource: list.defaultSource, defaultSink: list.defaultSink)
    }
}
