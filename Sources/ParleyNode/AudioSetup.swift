public import ParleyAudio

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
        dtx: Bool = true, fixedRate: Bool = false
    ) throws -> Choice {
        var configuration = AudioEngineConfiguration(
            input: try input.map(AudioInput.init(parsing:)) ?? .pulse(source: nil),
            output: try output.map(AudioOutput.init(parsing:)) ?? .pulse(sink: nil))
        do {
            configuration.frameDuration = try AudioFrameDuration(milliseconds: frameMilliseconds)
        } catch {
            throw NodeError("--frame-ms must be 10, 20 or 40, got \(frameMilliseconds)")
        }
        guard (6_000...510_000).contains(bitrate) else {
            throw NodeError("--bitrate must be 6000 to 510000 bits per second, got \(bitrate)")
        }
        configuration.bitrate = bitrate
        guard (0...10).contains(complexity) else { throw NodeError("--complexity must be 0 to 10, got \(complexity)") }
        configuration.complexity = complexity
        configuration.dtx = dtx
        configuration.followsBandwidthEstimate = !fixedRate
        let frame = configuration.frameDuration.samples
        var fallbacks: [String] = []
        var reasons: [String] = []
        if let failure = AudioDevices.problem(input: configuration.input, output: .null, frameSamples: frame) {
            guard input == nil else { throw NodeError("--audio-in \(configuration.input): \(failure)") }
            configuration.input = .silence
            fallbacks.append("microphone: silence")
            reasons.append(failure)
        }
        if let failure = AudioDevices.problem(input: .silence, output: configuration.output, frameSamples: frame) {
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
}
