import OggOpus
import ParleyCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Where the audio threads hand what a recording needs: what the playback thread played (the
/// peers' mix) and what the capture thread sent (the processed microphone, silence while
/// muted). Two lock-free rings, written only while a recording is attached (`active`); when the
/// writer falls behind (a stalled disk) the threads drop samples and count them, never wait.
final class RecordingTap: Sendable {
    let heard: SampleRing
    let microphone: SampleRing
    let active = Atomic<Bool>(false)
    private let droppedSamples = Atomic<Int>(0)
    // Safety: read (never written after init) by the capture thread only.
    private nonisolated(unsafe) let silence: UnsafeMutableBufferPointer<Int16>

    /// Each ring holds a second: the writer empties them every 20 ms.
    init(frameSamples: Int) {
        heard = SampleRing(capacity: AudioFormat.sampleRate)
        microphone = SampleRing(capacity: AudioFormat.sampleRate)
        silence = .allocate(capacity: frameSamples)
        silence.initialize(repeating: 0)
    }

    deinit { silence.deallocate() }

    var dropped: Int { droppedSamples.load(ordering: .relaxed) }

    /// Playback thread: the frame just played.
    func offerHeard(_ samples: UnsafeBufferPointer<Int16>) {
        guard active.load(ordering: .acquiring) else { return }
        let written = heard.write(samples)
        if written < samples.count { droppedSamples.add(samples.count - written, ordering: .relaxed) }
    }

    /// Capture thread: the frame just captured and processed; silence while muted (what the
    /// others heard of us).
    func offerMicrophone(_ samples: UnsafeBufferPointer<Int16>, muted: Bool) {
        guard active.load(ordering: .acquiring) else { return }
        let frame = muted ? UnsafeBufferPointer(rebasing: silence.prefix(samples.count)) : samples
        let written = microphone.write(frame)
        if written < frame.count { droppedSamples.add(frame.count - written, ordering: .relaxed) }
    }
}

/// One recording of the meeting as this node hears it: the peers' mix plus its own microphone,
/// mixed and encoded to an Ogg Opus file (`OggOpusWriter`, pages written as they complete), with
/// a sidecar text file saying who spoke when. A thread of its own (`parley-record`) drains the
/// engine's `RecordingTap` every 20 ms, so the audio threads never touch the disk and a stalled
/// disk costs dropped samples, not a glitch in the call. Made by `AudioEngine.startRecording`.
public final class MeetingRecorder: Sendable {
    public let path: String
    /// The sidecar: one line per change of who is speaking, `HH:MM:SS.mmm` into the recording
    /// then the names (docs in README "Recording").
    public let speakersPath: String
    private let state: Mutex<State>
    private let stopping = Atomic<Bool>(false)
    private let tap: RecordingTap
    private let release: @Sendable () -> Void
    private let onFailure: @Sendable (String) -> Void

    private struct State: ~Copyable {
        var thread: RealtimeThread?
        var pendingSpeakers: [[String]] = []
        var failure: String?
        var finished = false
    }

    /// What a finished recording holds.
    public struct Summary: Sendable, Hashable {
        public var path: String
        public var seconds: Double
        /// Samples the audio threads dropped because the writer fell behind.
        public var droppedSamples: Int
        /// Why writing stopped early, if it did (the file holds what came before).
        public var failure: String?
    }

    /// Interval of the writer's wake-ups.
    static let period = Duration.milliseconds(20)
    /// The most one source (heard or microphone) may run ahead of the other before the other is
    /// taken as silent: a stalled device must not stop the recording.
    static let maximumLag = AudioFormat.sampleRate / 10

    init(
        path: String, comments: [(String, String)], tap: RecordingTap, release: @escaping @Sendable () -> Void,
        onFailure: @escaping @Sendable (String) -> Void
    ) throws(AudioEngineError) {
        self.path = path
        speakersPath = Self.speakersPath(for: path)
        self.tap = tap
        self.release = release
        self.onFailure = onFailure
        let writer: OggOpusWriter
        do {
            writer = try OggOpusWriter(
                creating: path, sampleRate: AudioFormat.sampleRate, channels: 1, comments: comments,
                bitrate: Self.bitrate)
        } catch {
            throw AudioEngineError("\(error)")
        }
        let sidecar = open(speakersPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard sidecar >= 0 else {
            let reason = String(cString: strerror(errno))
            _ = try? writer.finish()
            unlink(path)
            throw AudioEngineError("cannot create \(speakersPath): \(reason)")
        }
        state = Mutex(State())
        let file = SidecarFile(descriptor: sidecar)
        file.write("# who spoke when in \(Self.fileName(path)): time into the recording, then who is speaking\n")
        // Stale samples from an earlier recording are not this one's.
        tap.heard.skip(tap.heard.available)
        tap.microphone.skip(tap.microphone.available)
        tap.active.store(true, ordering: .releasing)
        let loop = WriterLoop(recorder: self, writer: writer, sidecar: file)
        do {
            try state.withLock { (state) throws(AudioEngineError) in
                state.thread = try RealtimeThread(name: "parley-record") { loop.run() }
            }
        } catch {
            tap.active.store(false, ordering: .releasing)
            throw error
        }
    }

    /// Opus bitrate of the recording: a mix of voices, mono.
    static let bitrate = 48_000

    /// `meeting.opus` → `meeting.speakers.txt`; any other name gets `.speakers.txt` appended.
    public static func speakersPath(for path: String) -> String {
        for suffix in [".opus", ".ogg", ".oga"] where path.hasSuffix(suffix) && path.count > suffix.count {
            return String(path.dropLast(suffix.count)) + ".speakers.txt"
        }
        return path + ".speakers.txt"
    }

    static func fileName(_ path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }

    /// Who is speaking from now on (any thread); stamped with the recording's position when the
    /// writer next runs.
    public func noteSpeakers(_ names: [String]) {
        state.withLock { $0.pendingSpeakers.append(names) }
    }

    /// Why writing stopped, if it failed (a full disk).
    public var failure: String? { state.withLock { $0.failure } }

    /// Stops taking audio, writes what is left, closes both files and waits for the writer
    /// thread (milliseconds; call it off the meeting's loop). Idempotent.
    @discardableResult
    public func finish() -> Summary {
        tap.active.store(false, ordering: .releasing)
        stopping.store(true, ordering: .releasing)
        let thread = state.withLock { state -> RealtimeThread? in
            defer { state.thread = nil }
            return state.thread
        }
        thread?.join()
        let first = state.withLock { state -> Bool in
            defer { state.finished = true }
            return !state.finished
        }
        if first { release() }
        return state.withLock { state in
            Summary(
                path: path, seconds: Double(summarySamples.load(ordering: .relaxed)) / Double(AudioFormat.sampleRate),
                droppedSamples: tap.dropped, failure: state.failure)
        }
    }

    private let summarySamples = Atomic<Int>(0)

    // MARK: The writer thread

    /// The sidecar file, written line by line with write(2): what is written survives a kill.
    private final class SidecarFile {
        let descriptor: Int32

        init(descriptor: Int32) { self.descriptor = descriptor }

        func write(_ text: String) {
            let bytes = Array(text.utf8)
            var offset = 0
            while offset < bytes.count {
                let written = bytes.withUnsafeBytes {
                    Glibc.write(descriptor, $0.baseAddress! + offset, $0.count - offset)
                }
                if written < 0, errno == EINTR { continue }
                guard written > 0 else { return }
                offset += written
            }
        }

        deinit { close(descriptor) }
    }

    /// What the writer thread owns: the encoder, the sidecar and its mixing buffers.
    private final class WriterLoop: Sendable {
        let recorder: MeetingRecorder
        // Safety: used by the writer thread only (created before it starts, freed after join).
        nonisolated(unsafe) let writer: OggOpusWriter
        nonisolated(unsafe) var sidecar: SidecarFile?
        static let chunk = 960

        init(recorder: MeetingRecorder, writer: OggOpusWriter, sidecar: SidecarFile) {
            self.recorder = recorder
            self.writer = writer
            self.sidecar = sidecar
        }

        func run() {
            let clock = MonotonicClock()
            let heard = UnsafeMutableBufferPointer<Int16>.allocate(capacity: Self.chunk)
            let microphone = UnsafeMutableBufferPointer<Int16>.allocate(capacity: Self.chunk)
            let accumulator = UnsafeMutableBufferPointer<Float>.allocate(capacity: Self.chunk)
            let mixed = UnsafeMutableBufferPointer<Int16>.allocate(capacity: Self.chunk)
            defer {
                heard.deallocate()
                microphone.deallocate()
                accumulator.deallocate()
                mixed.deallocate()
            }
            var deadline = clock.now()
            var failed = false
            while true {
                let last = recorder.stopping.load(ordering: .acquiring)
                if !failed {
                    noteSpeakers()
                    do {
                        try drain(heard: heard, microphone: microphone, accumulator: accumulator, mixed: mixed)
                    } catch {
                        failed = true
                        let reason = "\(error)"
                        recorder.state.withLock { $0.failure = reason }
                        recorder.tap.active.store(false, ordering: .releasing)
                        recorder.onFailure(reason)
                    }
                }
                if last { break }
                deadline += MeetingRecorder.period.nanoseconds
                clock.sleep(until: deadline)
            }
            recorder.summarySamples.store(writer.samplesWritten, ordering: .relaxed)
            if !failed {
                do {
                    try writer.finish()
                } catch {
                    recorder.state.withLock { $0.failure = "\(error)" }
                }
            }
            sidecar = nil
        }

        /// Mixes and encodes what both rings hold, keeping the two sources within `maximumLag`
        /// of each other.
        private func drain(
            heard: UnsafeMutableBufferPointer<Int16>, microphone: UnsafeMutableBufferPointer<Int16>,
            accumulator: UnsafeMutableBufferPointer<Float>, mixed: UnsafeMutableBufferPointer<Int16>
        ) throws(OggOpusError) {
            let tap = recorder.tap
            let available = (tap.heard.available, tap.microphone.available)
            var remaining = min(available.0, available.1)
            let ahead = max(available.0, available.1)
            if ahead - remaining > MeetingRecorder.maximumLag { remaining = ahead - MeetingRecorder.maximumLag }
            while remaining > 0 {
                let count = min(remaining, Self.chunk)
                remaining -= count
                let heardPart = UnsafeMutableBufferPointer(rebasing: heard[0..<count])
                let microphonePart = UnsafeMutableBufferPointer(rebasing: microphone[0..<count])
                for index in tap.heard.read(into: heardPart)..<count { heard[index] = 0 }
                for index in tap.microphone.read(into: microphonePart)..<count { microphone[index] = 0 }
                let sum = UnsafeMutableBufferPointer(rebasing: accumulator[0..<count])
                SoftClipMixer.clear(sum)
                SoftClipMixer.add(UnsafeBufferPointer(heardPart), to: sum)
                SoftClipMixer.add(UnsafeBufferPointer(microphonePart), to: sum)
                let out = UnsafeMutableBufferPointer(rebasing: mixed[0..<count])
                SoftClipMixer.render(UnsafeBufferPointer(sum), into: out)
                try writer.write(UnsafeBufferPointer(out))
            }
        }

        /// Writes a sidecar line for each change of speakers noted since the last run.
        private func noteSpeakers() {
            let changes = recorder.state.withLock { state -> [[String]] in
                defer { state.pendingSpeakers = [] }
                return state.pendingSpeakers
            }
            guard !changes.isEmpty else { return }
            let time = Self.timestamp(samples: writer.samplesWritten)
            for names in changes {
                let list = names.isEmpty ? "(nobody)" : names.map(Self.printable).joined(separator: ", ")
                sidecar?.write("\(time)  \(list)\n")
            }
        }

        /// `HH:MM:SS.mmm` of a position in samples.
        static func timestamp(samples: Int) -> String {
            let milliseconds = samples * 1000 / AudioFormat.sampleRate
            func two(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
            let fraction = milliseconds % 1000
            let millis = fraction < 10 ? "00\(fraction)" : fraction < 100 ? "0\(fraction)" : "\(fraction)"
            return
                "\(two(milliseconds / 3_600_000)):\(two(milliseconds / 60_000 % 60)):\(two(milliseconds / 1000 % 60)).\(millis)"
        }

        /// A name on one line of the sidecar: control characters become spaces.
        static func printable(_ name: String) -> String {
            String(name.unicodeScalars.map { $0.properties.generalCategory == .control ? " " : Character($0) })
        }
    }
}
