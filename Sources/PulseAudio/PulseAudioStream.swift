internal import CPulse

/// One PulseAudio stream (libpulse-simple): 16-bit mono capture from a source or playback to a
/// sink, at any rate the server converts to. PipeWire serves the same API. The blocking calls pace
/// the thread that owns the stream by the device's clock; one thread owns each stream.
public final class PulseAudioStream {
    public enum Direction: Sendable {
        case capture
        case playback
    }

    private let handle: OpaquePointer
    public let direction: Direction
    public let sampleRate: Int
    public let frameSamples: Int

    /// Opens a stream.
    /// - Parameters:
    ///   - server: e.g. `unix:/run/pulse/native`; nil for the default (`$PULSE_SERVER`, then the
    ///     user's session server).
    ///   - device: a source (capture) or sink (playback) name; nil for the server's default.
    ///   - frameSamples: samples per read/write; the server is asked to deliver in fragments of
    ///     this size and, for playback, to keep about two of them queued (low latency).
    public init(
        direction: Direction, server: String? = nil, device: String? = nil, applicationName: String = "Parley",
        streamName: String, sampleRate: Int = 48_000, frameSamples: Int
    ) throws(PulseAudioError) {
        guard sampleRate > 0, frameSamples > 0 else {
            throw PulseAudioError(code: nil, context: "invalid rate \(sampleRate) or frame size \(frameSamples)")
        }
        var spec = pa_sample_spec(format: PA_SAMPLE_S16LE, rate: UInt32(sampleRate), channels: 1)
        let frameBytes = UInt32(frameSamples * MemoryLayout<Int16>.size)
        var attributes = pa_buffer_attr(
            maxlength: UInt32.max,
            tlength: direction == .playback ? frameBytes * 2 : UInt32.max,
            prebuf: direction == .playback ? frameBytes : UInt32.max,
            minreq: direction == .playback ? frameBytes : UInt32.max,
            fragsize: direction == .capture ? frameBytes : UInt32.max)
        var error: Int32 = 0
        let handle = pa_simple_new(
            server, applicationName, direction == .capture ? PA_STREAM_RECORD : PA_STREAM_PLAYBACK, device, streamName,
            &spec, nil, &attributes, &error)
        guard let handle else {
            let what = direction == .capture ? "capture from" : "playback to"
            throw PulseAudioError(
                code: error,
                context: "cannot open \(what) \(device ?? "the default device") on \(server ?? "the default server")")
        }
        self.handle = handle
        self.direction = direction
        self.sampleRate = sampleRate
        self.frameSamples = frameSamples
    }

    deinit {
        pa_simple_free(handle)
    }

    /// Blocks until `samples` is full of captured audio. Does not allocate.
    public func read(into samples: UnsafeMutableBufferPointer<Int16>) throws(PulseAudioError) {
        precondition(direction == .capture, "read from a playback stream")
        var error: Int32 = 0
        guard pa_simple_read(handle, samples.baseAddress, samples.count * MemoryLayout<Int16>.size, &error) == 0 else {
            throw PulseAudioError(code: error, context: "capture failed")
        }
    }

    /// Queues `samples` for playback, blocking while the server's buffer is full. Does not allocate.
    public func write(_ samples: UnsafeBufferPointer<Int16>) throws(PulseAudioError) {
        precondition(direction == .playback, "write to a capture stream")
        var error: Int32 = 0
        guard pa_simple_write(handle, samples.baseAddress, samples.count * MemoryLayout<Int16>.size, &error) == 0 else {
            throw PulseAudioError(code: error, context: "playback failed")
        }
    }

    /// Blocks until everything written has been played.
    public func drain() throws(PulseAudioError) {
        var error: Int32 = 0
        guard pa_simple_drain(handle, &error) == 0 else { throw PulseAudioError(code: error, context: "drain failed") }
    }

    /// The stream's current latency (queued in the server plus the device's), in microseconds.
    public func latencyMicroseconds() throws(PulseAudioError) -> UInt64 {
        var error: Int32 = 0
        let latency = pa_simple_get_latency(handle, &error)
        guard latency != UInt64.max else { throw PulseAudioError(code: error, context: "latency query failed") }
        return latency
    }
}

/// An error from libpulse, with its own text (`pa_strerror`) and what Parley was doing.
public struct PulseAudioError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The `PA_ERR_*` code, or nil for an error Parley found itself.
    public let code: Int32?
    public let context: String

    public var description: String {
        guard let code else { return "pulseaudio: \(context)" }
        return "pulseaudio: \(context): \(String(cString: pa_strerror(code)))"
    }
}
