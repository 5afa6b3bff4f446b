public import ParleyAudio
import PulseAudio

/// Chooses the daemon's audio devices. Explicit `--audio-in`/`--audio-out` must work (a bad WAV
/// path or an unknown PulseAudio device is an error at start-up, not in the middle of a meeting).
/// Left out, each defaults to PulseAudio (PipeWire serves the same API) — and when no server
/// answers, to `silence` / `null` with a clear warning: the node still joins, is seen and can be
/// verified, but sends silence and plays nothing until restarted with working devices.
public enum AudioSetup {
    public struct Choice: Sendable {
        public var configuration: AudioEngineConfiguration
        /// Set when a default fell back; print it.
        public var warning: String?
    }

    public static func choose(
        input: String?, output: String?, frameMilliseconds: Int, bitrate: Int,
        complexity: Int = AudioSender.defaultComplexity,
        dtx: Bool = true
    ) throws -> Choice {
        var configuration = AudioEngineConfiguration(
            input: try input.map(AudioInput.init(parsing:)) ?? .pulse(source: nil),
            output: try output.map(AudioOutput.init(parsing:)) ?? .pulse(sink: nil))
        configuration.frameDuration = try AudioFrameDuration(milliseconds: frameMilliseconds)
        guard (6_000...510_000).contains(bitrate) else {
            throw NodeError("--bitrate must be 6000 to 510000 bits per second, got \(bitrate)")
        }
        configuration.bitrate = bitrate
        guard (0...10).contains(complexity) else { throw NodeError("--complexity must be 0 to 10, got \(complexity)") }
        configuration.complexity = complexity
        configuration.dtx = dtx
        var fallbacks: [String] = []
        var reasons: [String] = []
        if let failure = probe(configuration, input: configuration.input, output: .null) {
            guard input == nil else { throw NodeError("--audio-in \(configuration.input): \(failure)") }
            configuration.input = .silence
            fallbacks.append("microphone: silence")
            reasons.append(failure)
        }
        if let failure = probe(configuration, input: .silence, output: configuration.output) {
            guard output == nil else { throw NodeError("--audio-out \(configuration.output): \(failure)") }
            configuration.output = .null
            fallbacks.append("speaker: null")
            reasons.append(failure)
        }
        guard !fallbacks.isEmpty else { return Choice(configuration: configuration, warning: nil) }
        let warning =
            "no PulseAudio server reachable (\(reasons[0])): running without sound (\(fallbacks.joined(separator: ", "))); "
            + "start PulseAudio or PipeWire, or pass --audio-in/--audio-out"
        return Choice(configuration: configuration, warning: warning)
    }

    /// Opens the devices once (and closes them, without playing anything), returning why they
    /// cannot be used: a PulseAudio stream is opened and freed, a WAV input read, a WAV output
    /// created. (Starting an engine would also work, but closing a playback stream drains what
    /// the server buffered: seconds of start-up.)
    private static func probe(
        _ configuration: AudioEngineConfiguration, input: AudioInput, output: AudioOutput
    ) -> String? {
        let frame = configuration.frameDuration.samples
        do {
            switch input {
            case .pulse(let source):
                _ = try PulseAudioStream(direction: .capture, device: source, streamName: "probe", frameSamples: frame)
            case .wav(let path):
                _ = try WAVFile.read(path: path)
            case .tone, .silence:
                break
            }
            switch output {
            case .pulse(let sink):
                _ = try PulseAudioStream(direction: .playback, device: sink, streamName: "probe", frameSamples: frame)
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
}
