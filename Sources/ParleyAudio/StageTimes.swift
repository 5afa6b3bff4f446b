import ParleyCore
import Synchronization

/// Where audio spends its time inside this node's engine: the engine's share of the latency
/// budget (`parley status`: `"latency_ms"`), the rest being the codec's lookahead, the frame,
/// the network and each peer's jitter buffer.
public struct EngineLatency: Sendable, Hashable {
    /// How long captured audio waited in the sound server before the capture thread read it;
    /// nil without a sound server (files, generators).
    public var captureQueue: Duration?
    /// Echo cancellation, noise suppression and encoding of one frame.
    public var process: Duration
    /// Sealing one frame for every peer and sending it.
    public var send: Duration
    /// Decoding every peer's audio for one playback period and mixing it.
    public var mix: Duration
    /// How long a mixed frame waits in the sound server before it is heard; nil without one.
    public var playbackQueue: Duration?
}

/// The engine's stage times, written by the audio thread that measures each (one writer per
/// figure) and read by anyone. Times are smoothed over about 16 frames; the sound server's
/// queues are asked every `deviceQueryFrames` frames (the playback side's are 10 ms periods; a
/// query takes the client's lock).
final class StageTimes: Sendable {
    static let deviceQueryFrames = 25

    private let captureQueue = Atomic<Int64>(-1)  // nanoseconds, -1: no sound server
    private let process = Atomic<Int64>(0)
    private let send = Atomic<Int64>(0)
    private let mix = Atomic<Int64>(0)
    private let playbackQueue = Atomic<Int64>(-1)

    func noteProcess(nanoseconds: UInt64) { Self.smooth(process, nanoseconds) }
    func noteSend(nanoseconds: UInt64) { Self.smooth(send, nanoseconds) }
    func noteMix(nanoseconds: UInt64) { Self.smooth(mix, nanoseconds) }
    func noteCaptureQueue(_ queued: Duration?) { captureQueue.store(Self.nanoseconds(queued), ordering: .relaxed) }
    func notePlaybackQueue(_ queued: Duration?) { playbackQueue.store(Self.nanoseconds(queued), ordering: .relaxed) }

    var snapshot: EngineLatency {
        EngineLatency(
            captureQueue: Self.duration(captureQueue), process: .nanoseconds(process.load(ordering: .relaxed)),
            send: .nanoseconds(send.load(ordering: .relaxed)), mix: .nanoseconds(mix.load(ordering: .relaxed)),
            playbackQueue: Self.duration(playbackQueue))
    }

    /// An exponential average with weight 1/16 (the figure's only writer calls this).
    private static func smooth(_ figure: borrowing Atomic<Int64>, _ sample: UInt64) {
        let old = figure.load(ordering: .relaxed)
        let new = Int64(clamping: sample)
        figure.store(old == 0 ? new : old + (new - old) / 16, ordering: .relaxed)
    }

    private static func nanoseconds(_ duration: Duration?) -> Int64 {
        duration.map { Int64(clamping: $0.nanoseconds) } ?? -1
    }

    private static func duration(_ figure: borrowing Atomic<Int64>) -> Duration? {
        let value = figure.load(ordering: .relaxed)
        return value < 0 ? nil : .nanoseconds(value)
    }
}
