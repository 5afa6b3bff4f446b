/// Where the engine's audio comes from, parsed from the daemon's `--input` string.
public enum AudioInput: Hashable, Sendable, CustomStringConvertible {
    /// A PulseAudio (or PipeWire) source; nil for the server's default.
    case pulse(source: String?)
    /// A 16-bit PCM WAV file, any common rate, mono or stereo; played once in real time, then silence.
    case wav(path: String)
    /// A sine tone at this frequency (tests, the demo).
    case tone(hertz: Double)
    case silence

    /// Parses `pulse`, `pulse:SOURCE`, `wav:PATH`, `tone:HZ` or `silence`.
    public init(parsing text: String) throws(AudioSpecError) {
        let (kind, argument) = AudioSpecError.split(text)
        switch kind {
        case "pulse":
            self = .pulse(source: try AudioSpecError.deviceName(argument, in: text))
        case "wav":
            self = .wav(path: try AudioSpecError.path(argument, in: text))
        case "tone":
            guard let argument, let hertz = Double(argument), hertz > 0, hertz < 24_000 else {
                throw AudioSpecError(text, "a tone needs a frequency between 0 and 24000 Hz, e.g. tone:440")
            }
            self = .tone(hertz: hertz)
        case "silence":
            guard argument == nil else { throw AudioSpecError(text, "silence takes no argument") }
            self = .silence
        default:
            throw AudioSpecError(text, "unknown input; use pulse[:SOURCE], wav:PATH, tone:HZ or silence")
        }
    }

    public var description: String {
        switch self {
        case .pulse(let source): source.map { "pulse:\($0)" } ?? "pulse"
        case .wav(let path): "wav:\(path)"
        case .tone(let hertz): "tone:\(hertz.formatted)"
        case .silence: "silence"
        }
    }

    /// Real devices get echo cancellation and noise suppression by default; files and generators do not.
    public var isRealDevice: Bool {
        if case .pulse = self { return true }
        return false
    }
}

/// Where the engine's mixed audio goes, parsed from the daemon's `--output` string.
public enum AudioOutput: Hashable, Sendable, CustomStringConvertible {
    /// A PulseAudio (or PipeWire) sink; nil for the server's default.
    case pulse(sink: String?)
    /// A 16-bit mono 48 kHz WAV file, written in real time.
    case wav(path: String)
    /// Discards the audio, paced in real time.
    case null

    /// Parses `pulse`, `pulse:SINK`, `wav:PATH` or `null`.
    public init(parsing text: String) throws(AudioSpecError) {
        let (kind, argument) = AudioSpecError.split(text)
        switch kind {
        case "pulse":
            self = .pulse(sink: try AudioSpecError.deviceName(argument, in: text))
        case "wav":
            self = .wav(path: try AudioSpecError.path(argument, in: text))
        case "null":
            guard argument == nil else { throw AudioSpecError(text, "null takes no argument") }
            self = .null
        default:
            throw AudioSpecError(text, "unknown output; use pulse[:SINK], wav:PATH or null")
        }
    }

    public var description: String {
        switch self {
        case .pulse(let sink): sink.map { "pulse:\($0)" } ?? "pulse"
        case .wav(let path): "wav:\(path)"
        case .null: "null"
        }
    }
}

/// A device string that could not be parsed, with what was expected.
public struct AudioSpecError: Error, Hashable, Sendable, CustomStringConvertible {
    public let text: String
    public let reason: String

    init(_ text: String, _ reason: String) {
        self.text = text
        self.reason = reason
    }

    public var description: String { "invalid audio device \"\(text)\": \(reason)" }

    /// `kind[:argument]`; the argument is everything after the first colon (paths may hold colons).
    static func split(_ text: String) -> (kind: Substring, argument: String?) {
        guard let colon = text.firstIndex(of: ":") else { return (text[...], nil) }
        return (text[..<colon], String(text[text.index(after: colon)...]))
    }

    static func deviceName(_ argument: String?, in text: String) throws(AudioSpecError) -> String? {
        guard let argument else { return nil }
        guard !argument.isEmpty, !argument.contains(where: { $0.isWhitespace || $0.isNewline }) else {
            throw AudioSpecError(text, "a PulseAudio device name is non-empty and has no spaces")
        }
        return argument
    }

    static func path(_ argument: String?, in text: String) throws(AudioSpecError) -> String {
        guard let argument, !argument.isEmpty else {
            throw AudioSpecError(text, "a WAV device needs a path, e.g. wav:in.wav")
        }
        return argument
    }
}

/// Samples per frame the engine may use (Opus 10, 20 or 40 ms frames at 48 kHz).
public enum AudioFrameDuration: Int, CaseIterable, Sendable {
    case ms10 = 10
    case ms20 = 20
    case ms40 = 40

    public init(milliseconds: Int) throws(AudioSpecError) {
        guard let duration = Self(rawValue: milliseconds) else {
            throw AudioSpecError("\(milliseconds) ms", "the frame duration must be 10, 20 or 40 ms")
        }
        self = duration
    }

    public var samples: Int { AudioFormat.sampleRate * rawValue / 1000 }
    public var nanoseconds: UInt64 { UInt64(rawValue) * 1_000_000 }
}

/// The engine's internal format: Opus' native rate, mono, 16-bit.
public enum AudioFormat {
    public static let sampleRate = 48_000

    /// What the playback thread mixes and writes at a time, and the sound server's playback
    /// fragment: 10 ms, whatever the frame a peer sends (`PlaybackState` splits a longer decoded
    /// frame across periods). A frame that arrives waits for the player's next period, half a
    /// period on average, and the server is asked to keep two periods queued: with 20 ms periods
    /// at 20 ms frames that was 15 ms in the jitter buffer and 22 ms in the server's queue on a
    /// clean link (`bench.py latency`), against 5.5 and 12 ms at 10 ms.
    public static let playbackSamples = sampleRate / 100

    /// How long `samples` samples play at `sampleRate`.
    public static func duration(samples: Double) -> Duration {
        .microseconds(Int64(samples * 1_000_000 / Double(sampleRate)))
    }
}

extension Double {
    /// 440 rather than 440.0.
    var formatted: String { self == rounded() && abs(self) < 1e15 ? String(Int(self)) : String(self) }
}
