import Opus
public import ParleyCore
import SpeexDSP
import Synchronization

/// Whether echo cancellation and noise suppression run on the captured signal.
public enum AudioProcessing: Sendable, Hashable {
    /// On for a real device (`pulse`), off for files and generators.
    case automatic
    case on
    case off
}

public struct AudioEngineConfiguration: Sendable {
    public var input: AudioInput
    public var output: AudioOutput
    public var frameDuration: AudioFrameDuration = .ms20
    /// Opus bitrate of the primary frame in bits per second (copies for loss come on top), when
    /// the path takes it.
    public var bitrate = 32_000
    /// Whether the encoding follows the bandwidth estimate (`SendBudget`; `parleyd --fixed-rate`:
    /// no, always `bitrate` at `frameDuration`).
    public var followsBandwidthEstimate = true
    public var complexity = AudioSender.defaultComplexity
    /// Discontinuous transmission: send nothing while the input is silent (see `AudioSender`).
    public var dtx = false
    public var processing = AudioProcessing.automatic
    public var redundancy = RedundancyPolicy()
    public var jitterBuffer = JitterBuffer.Configuration()
    /// The mesh's size limit; slots are allocated up front.
    public var maximumPeers = 16
    /// The clock that stamps arrivals and drives the jitter buffers.
    public var clock: any MediaClock = MonotonicClock()
    /// Called on the playback thread once a frame (`frameDuration`: every second 10 ms period at
    /// 20 ms frames), just before it mixes: the network side hands over what it held back to read
    /// in one go (the node's ICE loop, `ReceivePacer.collect`). Once a frame, not once a period:
    /// each call wakes the ICE loop for a whole GLib iteration, and at every period an 8-node
    /// meeting cost 8.2 % of a core per node against 6.3 (`Scripts/bench-ab`).
    public var collectReceived: (@Sendable () -> Void)?

    public init(input: AudioInput, output: AudioOutput) {
        self.input = input
        self.output = output
    }

    /// The bandwidth estimate's range, bits per second per peer with headers: from Opus' lowest
    /// bitrate in the longest packets to the configured encoding (nil: `followsBandwidthEstimate`
    /// is off).
    public var sendRateRange: ClosedRange<Int>? {
        guard followsBandwidthEstimate else { return nil }
        let frame = frameDuration.rawValue
        let longest = SendBudget.packetLengths(frameMilliseconds: frame).last!
        return SendBudget.wireRate(
            opusBitrate: min(bitrate, SendBudget.minimumBitrate), packetMilliseconds: longest)...SendBudget.wireRate(
                opusBitrate: bitrate, packetMilliseconds: frame)
    }

    /// Whether echo cancellation and noise suppression will run.
    public var processesCapture: Bool {
        switch processing {
        case .automatic: input.isRealDevice
        case .on: true
        case .off: false
        }
    }
}

/// The audio engine of a node: one capture thread (device → echo cancellation and noise
/// suppression → encode once → `onEncodedFrame`) and one playback thread (every peer's receive
/// channel → soft-clipping mixer → device), each paced by its device or by the monotonic clock.
///
/// Real-time rules, for the 10/20/40 ms loops: every buffer, ring and codec state is allocated
/// before a thread starts; the loops take no lock that a slow path holds. Peer changes reach the
/// playback thread through a lock-free command ring (and a removed channel is freed on the control
/// side, after the playback thread let go of it); network payloads reach it through each channel's
/// lock-free packet ring; the far-end signal reaches the echo canceller through a lock-free sample
/// ring; settings are atomics; statistics are published with a try-lock the loop skips when busy.
public final class AudioEngine: Sendable {
    public let configuration: AudioEngineConfiguration
    /// The encoder's algorithmic delay (Opus' lookahead), part of every frame's trip.
    public let codecLookahead: Duration
    /// The capture processing's algorithmic delay: speexdsp's noise suppressor hands back each
    /// block one block late (`CaptureProcessor`), zero when processing is off.
    public var processingDelay: Duration {
        guard configuration.processesCapture else { return .zero }
        return AudioFormat.duration(samples: Double(CaptureProcessor.blockSamples))
    }
    /// What the engine and its two threads share. The threads hold it strongly (never the engine
    /// itself), so an engine dropped without `stop()` can stop and join them from its `deinit`.
    private let pipeline: Pipeline
    private let control: Mutex<ControlState>

    private struct ControlState: ~Copyable {
        /// The devices in use (or to open at `start`).
        var input: AudioInput
        var output: AudioOutput
        var channels: [ObjectIdentifier: ReceiveChannel] = [:]
        var retiring: [ReceiveChannel] = []
        /// The channel in each mixer slot (a channel keeps its slot for its life).
        var slots: [ReceiveChannel?]

        init(slotCount: Int, input: AudioInput, output: AudioOutput) {
            slots = Array(repeating: nil, count: slotCount)
            self.input = input
            self.output = output
        }
        var captureThread: RealtimeThread?
        var playbackThread: RealtimeThread?
        /// The recording the tap feeds, until its `finish` releases it.
        var recorder: MeetingRecorder?
    }

    private final class Pipeline: Sendable {
        let configuration: AudioEngineConfiguration
        // Safety: the sender is used by the capture thread only; other threads touch only its
        // `controls` (atomics) through the engine's settings methods.
        nonisolated(unsafe) let sender: AudioSender
        let onEncodedFrame: @Sendable (UnsafeRawBufferPointer) -> Void
        let onFailure: @Sendable (any Error) -> Void
        let onPauseChanged: @Sendable (Bool) -> Void
        let onSpeakersChanged: @Sendable () -> Void
        let onDeviceLost: @Sendable (AudioDirection, String) -> Void
        let running = Atomic<Bool>(false)
        /// Devices switched at run time, taken by their thread at the start of a frame.
        let nextCapture = DeviceHandover<any CaptureDevice>()
        let nextPlayback = DeviceHandover<any PlaybackDevice>()
        let inputLevelTenths = Atomic<Int>(Int(LevelMeter.floor * 10))
        let table: MixerTable
        let farEnd: SampleRing
        let recordingTap: RecordingTap
        let stageTimes = StageTimes()
        // Safety: `mixer` is used by the playback thread while it runs, and by the control side
        // only under the engine's `control` lock while no playback thread runs (before start,
        // after join).
        nonisolated(unsafe) let mixer: MixerState

        init(
            configuration: AudioEngineConfiguration, sender: AudioSender,
            onEncodedFrame: @escaping @Sendable (UnsafeRawBufferPointer) -> Void,
            onFailure: @escaping @Sendable (any Error) -> Void, onPauseChanged: @escaping @Sendable (Bool) -> Void,
            onSpeakersChanged: @escaping @Sendable () -> Void,
            onDeviceLost: @escaping @Sendable (AudioDirection, String) -> Void
        ) {
            self.onSpeakersChanged = onSpeakersChanged
            self.onDeviceLost = onDeviceLost
            self.configuration = configuration
            self.sender = sender
            self.onEncodedFrame = onEncodedFrame
            self.onFailure = onFailure
            self.onPauseChanged = onPauseChanged
            table = MixerTable(slotCount: configuration.maximumPeers)
            farEnd = SampleRing(capacity: 10 * configuration.frameDuration.samples)
            recordingTap = RecordingTap(frameSamples: configuration.frameDuration.samples)
            mixer = MixerState(maximumPeers: configuration.maximumPeers, frameSamples: AudioFormat.playbackSamples)
        }

        func fail(_ error: any Error) {
            // Only the first failure is reported; the other loop sees `running` drop and ends.
            guard running.exchange(false, ordering: .acquiringAndReleasing) else { return }
            onFailure(error)
        }
    }

    /// - Parameters:
    ///   - onEncodedFrame: called on the capture thread with each media payload (docs/PROTOCOL.md
    ///     §9), once per frame for all peers: encrypt it per peer and send. The bytes are valid
    ///     only during the call; do not block in it.
    ///   - onFailure: called (once, on an audio thread) when a device fails; the engine has stopped
    ///     its loops and the caller should `stop()` it.
    ///   - onPauseChanged: called on the capture thread when DTX starts (true) or ends (false) a
    ///     pause (docs/PROTOCOL.md §9.3): while paused, this node sends no media.
    ///   - onSpeakersChanged: called on an audio thread when a peer or the microphone starts or
    ///     stops counting as speaking; read `speakers` and `isSpeaking` then.
    ///   - onDeviceLost: called on an audio thread when a sound server's device fails (unplugged,
    ///     server gone): the engine goes on with silence in that direction (paced by the clock)
    ///     until `switchInput`/`switchOutput` hands it another device. Files and generators fail
    ///     the engine instead (`onFailure`).
    public init(
        configuration: AudioEngineConfiguration, onEncodedFrame: @escaping @Sendable (UnsafeRawBufferPointer) -> Void,
        onFailure: @escaping @Sendable (any Error) -> Void = { _ in },
        onPauseChanged: @escaping @Sendable (Bool) -> Void = { _ in },
        onSpeakersChanged: @escaping @Sendable () -> Void = {},
        onDeviceLost: @escaping @Sendable (AudioDirection, String) -> Void = { _, _ in }
    ) throws(AudioEngineError) {
        self.configuration = configuration
        let sender: AudioSender
        do {
            sender = try AudioSender(
                frameDuration: configuration.frameDuration, bitrate: configuration.bitrate,
                complexity: configuration.complexity, dtx: configuration.dtx, policy: configuration.redundancy)
        } catch {
            throw AudioEngineError("cannot create the Opus encoder: \(error)")
        }
        codecLookahead = AudioFormat.duration(samples: Double((try? sender.lookahead()) ?? 0))
        control = Mutex(
            ControlState(
                slotCount: configuration.maximumPeers, input: configuration.input, output: configuration.output))
        pipeline = Pipeline(
            configuration: configuration, sender: sender, onEncodedFrame: onEncodedFrame, onFailure: onFailure,
            onPauseChanged: onPauseChanged, onSpeakersChanged: onSpeakersChanged, onDeviceLost: onDeviceLost)
    }

    deinit {
        stop()
    }

    // MARK: Lifecycle

    /// Opens the devices and starts the capture and playback threads. Errors name the device.
    public func start() throws(AudioEngineError) {
        try control.withLock { (state) throws(AudioEngineError) in
            guard state.captureThread == nil else { return }
            let frame = configuration.frameDuration.samples
            let capture: any CaptureDevice
            let playback: any PlaybackDevice
            do {
                capture = try AudioDevices.open(state.input, frameSamples: frame)
                playback = try AudioDevices.open(state.output, frameSamples: AudioFormat.playbackSamples)
            } catch {
                throw AudioEngineError("cannot open audio device: \(error)")
            }
            let processor = try configuration.processesCapture ? CaptureProcessor(frameSamples: frame) : nil
            pipeline.running.store(true, ordering: .releasing)
            let loops = Loops(
                pipeline: pipeline, capture: capture, playback: playback, processor: processor, captureSamples: frame)
            state.captureThread = try RealtimeThread(name: "parley-capture") { loops.runCapture() }
            state.playbackThread = try RealtimeThread(name: "parley-playback") { loops.runPlayback() }
        }
    }

    /// The devices in use, or to be opened by `start`.
    public var input: AudioInput { control.withLock { $0.input } }
    public var output: AudioOutput { control.withLock { $0.output } }

    /// Opens `input` (on the calling thread: it may wait for the sound server) and hands it to the
    /// capture thread, which takes it at its next frame and closes the old one. Before `start`, it
    /// only records the choice. Errors name the device; the old one then stays.
    public func switchInput(to input: AudioInput) throws(AudioEngineError) {
        let device: any CaptureDevice
        do {
            device = try AudioDevices.open(input, frameSamples: configuration.frameDuration.samples)
        } catch {
            throw AudioEngineError("cannot open \(input): \(error)")
        }
        control.withLock { state in
            state.input = input
            if state.captureThread != nil { pipeline.nextCapture.hand(device) }
        }
    }

    /// Opens `output` and hands it to the playback thread, as `switchInput` does.
    public func switchOutput(to output: AudioOutput) throws(AudioEngineError) {
        let device: any PlaybackDevice
        do {
            device = try AudioDevices.open(output, frameSamples: AudioFormat.playbackSamples)
        } catch {
            throw AudioEngineError("cannot open \(output): \(error)")
        }
        control.withLock { state in
            state.output = output
            if state.playbackThread != nil { pipeline.nextPlayback.hand(device) }
        }
    }

    /// Stops both threads, waits for them and closes the devices (a WAV output gets its header).
    public func stop() {
        control.withLock { state in
            pipeline.running.store(false, ordering: .releasing)
            state.captureThread?.join()
            state.playbackThread?.join()
            state.captureThread = nil
            state.playbackThread = nil
            // The loops closed their devices as they ended; a device handed too late is dropped.
            pipeline.nextCapture.discard()
            pipeline.nextPlayback.discard()
            // No playback thread now: apply the latest peer changes here.
            pipeline.mixer.apply(pipeline.table)
            state.retiring.removeAll { $0.detached.load(ordering: .acquiring) }
        }
    }

    public var isRunning: Bool { pipeline.running.load(ordering: .acquiring) }

    // MARK: Peers

    /// Creates the receive channel for a new peer and hands it to the playback thread. Feed it
    /// with `channel.receive(payload)`; read `channel.statistics`.
    public func addPeer(name: String) throws(AudioEngineError) -> ReceiveChannel {
        try control.withLock { (state) throws(AudioEngineError) in
            state.retiring.removeAll { $0.detached.load(ordering: .acquiring) }
            guard state.channels.count < configuration.maximumPeers else {
                throw AudioEngineError("the engine already has \(configuration.maximumPeers) peers")
            }
            let channel: ReceiveChannel
            do {
                channel = try ReceiveChannel(
                    name: name, clock: configuration.clock, jitterBuffer: configuration.jitterBuffer)
            } catch {
                throw AudioEngineError("cannot create the Opus decoder: \(error)")
            }
            state.channels[ObjectIdentifier(channel)] = channel
            // A free slot exists: at most `maximumPeers` channels are active.
            state.slots[state.slots.firstIndex(where: { $0 == nil })!] = channel
            publishSlots(&state)
            return channel
        }
    }

    /// Stops playing a peer. The channel is released once the playback thread has let go of it.
    public func removePeer(_ channel: ReceiveChannel) {
        control.withLock { state in
            guard let removed = state.channels.removeValue(forKey: ObjectIdentifier(channel)) else { return }
            state.retiring.append(removed)
            if let slot = state.slots.firstIndex(where: { $0 === removed }) { state.slots[slot] = nil }
            publishSlots(&state)
            state.retiring.removeAll { $0.detached.load(ordering: .acquiring) }
        }
    }

    /// Hands the slot table to the playback thread (or applies it at once when none runs).
    private func publishSlots(_ state: inout ControlState) {
        pipeline.table.publish(state.slots)
        if state.playbackThread == nil { pipeline.mixer.apply(pipeline.table) }
    }

    public var peers: [ReceiveChannel] { control.withLock { Array($0.channels.values) } }

    // MARK: Recording

    /// Starts recording what this node plays plus its microphone (silent while muted) to a new
    /// Ogg Opus file at `path` (mode 0600; it must not exist) and its who-spoke-when sidecar.
    /// Opens files: call it off the meeting's loop. One recording at a time: the next may start
    /// once `finish()` of this one returned. `onFailure` is called (on the writer thread) if
    /// writing fails later (a full disk); the file keeps what was written.
    public func startRecording(
        to path: String, comments: [(String, String)], onFailure: @escaping @Sendable (String) -> Void
    ) throws(AudioEngineError) -> MeetingRecorder {
        try control.withLock { (state) throws(AudioEngineError) -> MeetingRecorder in
            guard state.recorder == nil else { throw AudioEngineError("already recording") }
            let recorder = try MeetingRecorder(
                path: path, comments: comments, tap: pipeline.recordingTap,
                release: { [weak self] in self?.recordingFinished() }, onFailure: onFailure)
            state.recorder = recorder
            return recorder
        }
    }

    private func recordingFinished() {
        control.withLock { $0.recorder = nil }
    }

    // MARK: Settings (any thread)

    public func setMuted(_ muted: Bool) { pipeline.sender.setMuted(muted) }
    public var isMuted: Bool { pipeline.sender.controls.muted.load(ordering: .relaxed) }
    /// True while DTX holds frames back: this node sends no media right now (silent or muted).
    public var isPausedByDTX: Bool { pipeline.sender.isPausedByDTX }
    /// The worst loss any peer reports (0...1): sizes FEC and the RFC 2198 copies.
    public func setMeasuredLoss(_ loss: Double) { pipeline.sender.setMeasuredLoss(loss) }
    public func setBitrate(_ bitrate: Int) { pipeline.sender.setBitrate(bitrate) }
    /// Bits per second the path to each peer takes (the bandwidth estimate; nil: no limit), and
    /// what each packet carries besides a media packet's own (a signed frame's, PROTOCOL §15.1).
    public func setSendBudget(_ bitsPerSecond: Int?, extraPacketBytes: Int = 0) {
        pipeline.sender.setBudget(bitsPerSecond, extraPacketBytes: extraPacketBytes)
    }
    /// The Opus bitrate, packet length and RFC 2198 copies the sender uses now.
    public var sendEncoding: (opusBitrate: Int, packetMilliseconds: Int, copies: Int) {
        let encoding = pipeline.sender.encoding
        return (encoding.opusBitrate, encoding.packetMilliseconds, pipeline.sender.redundantCopies)
    }
    /// Whether the microphone hears speech (its level above `LevelMeter.speakingThreshold`).
    public var isSpeaking: Bool { inputLevel > LevelMeter.speakingThreshold }
    /// The microphone's smoothed level in dBFS (after processing, before mute).
    public var inputLevel: Double { Double(pipeline.inputLevelTenths.load(ordering: .relaxed)) / 10 }
    /// Where audio spends its time in the engine (see `EngineLatency`).
    public var latency: EngineLatency { pipeline.stageTimes.snapshot }

    // MARK: The two loops

    /// What the threads own. Created in `start`, captured by the two thread bodies.
    private final class Loops: Sendable {
        // Safety: each device, stand-in and the processor is used by exactly one of the two threads.
        nonisolated(unsafe) var capture: any CaptureDevice
        nonisolated(unsafe) var playback: any PlaybackDevice
        nonisolated(unsafe) let processor: CaptureProcessor?
        /// What a thread uses while its sound-server device is gone: silence paced by the clock.
        nonisolated(unsafe) let silentCapture: GeneratedCapture
        nonisolated(unsafe) let silentPlayback: PacedPlayback
        let pipeline: Pipeline

        init(
            pipeline: Pipeline, capture: any CaptureDevice, playback: any PlaybackDevice, processor: CaptureProcessor?,
            captureSamples: Int
        ) {
            self.pipeline = pipeline
            self.capture = capture
            self.playback = playback
            self.processor = processor
            silentCapture = GeneratedCapture(samples: [], frameSamples: captureSamples)
            silentPlayback = PacedPlayback(writer: nil, frameSamples: AudioFormat.playbackSamples)
        }

        /// Capture thread: a device that failed. A sound server's is replaced by silence until
        /// another is handed over (reported once); anything else ends the engine.
        func captureFailed(_ error: any Error) -> Bool {
            guard capture is PulseCapture else {
                pipeline.fail(error)
                return false
            }
            capture = silentCapture
            pipeline.onDeviceLost(.input, "\(error)")
            return true
        }

        func playbackFailed(_ error: any Error) -> Bool {
            guard playback is PulsePlayback else {
                pipeline.fail(error)
                return false
            }
            playback = silentPlayback
            pipeline.onDeviceLost(.output, "\(error)")
            return true
        }

        func runCapture() {
            let frame = pipeline.configuration.frameDuration.samples
            let captured = UnsafeMutableBufferPointer<Int16>.allocate(capacity: frame)
            captured.initialize(repeating: 0)
            defer { captured.deallocate() }
            var meter = LevelMeter()
            var paused = false
            var speaking = false
            let clock = MonotonicClock()
            let times = pipeline.stageTimes
            var frames = 0
            defer { capture = silentCapture }  // closes the device on this thread
            while pipeline.running.load(ordering: .acquiring) {
                // A switched device replaces the old one, which closes here (a stream's free: a
                // round trip to the server, once per switch).
                if pipeline.nextCapture.take({ capture = $0 }) { frames = 0 }
                do {
                    try capture.read(into: captured)
                    let read = clock.now()
                    if frames % StageTimes.deviceQueryFrames == 0 { times.noteCaptureQueue(capture.queued()) }
                    frames += 1
                    let cleaned = processor?.process(captured, farEnd: pipeline.farEnd) ?? UnsafeBufferPointer(captured)
                    let level = meter.measure(cleaned)
                    pipeline.inputLevelTenths.store(Int(meter.level * 10), ordering: .relaxed)
                    pipeline.recordingTap.offerMicrophone(
                        cleaned, muted: pipeline.sender.controls.muted.load(ordering: .relaxed))
                    try pipeline.sender.process(cleaned, level: level) { payload in
                        let encoded = clock.now()
                        times.noteProcess(nanoseconds: encoded - read)
                        pipeline.onEncodedFrame(payload)
                        times.noteSend(nanoseconds: clock.now() - encoded)
                    }
                    if pipeline.sender.isPausedByDTX != paused {
                        paused.toggle()
                        pipeline.onPauseChanged(paused)
                    }
                    if meter.isSpeaking != speaking {
                        speaking.toggle()
                        pipeline.onSpeakersChanged()
                    }
                } catch {
                    if captureFailed(error) {
                        frames = 0
                        continue
                    }
                    return
                }
            }
        }

        func runPlayback() {
            let processes = processor != nil
            defer {
                try? playback.close()  // a WAV file gets its header; a stream plays out what it holds
                playback = silentPlayback
            }
            let clock = MonotonicClock()
            let times = pipeline.stageTimes
            // Periods of `AudioFormat.playbackSamples`: a frame is `collectEvery` of them.
            let collectEvery = max(1, pipeline.configuration.frameDuration.samples / AudioFormat.playbackSamples)
            var periods = 0
            while pipeline.running.load(ordering: .acquiring) {
                // The old stream is freed without draining: the new one plays on at once.
                if pipeline.nextPlayback.take({ playback = $0 }) { periods = 0 }
                playback.waitForNextFrame()
                // What the period mixed now will wait behind.
                if periods % StageTimes.deviceQueryFrames == 0 { times.notePlaybackQueue(playback.queued()) }
                periods += 1
                if periods % collectEvery == 0 { pipeline.configuration.collectReceived?() }
                pipeline.mixer.apply(pipeline.table)
                let mixing = clock.now()
                let (output, speakersChanged) = pipeline.mixer.mix(now: pipeline.configuration.clock.now())
                times.noteMix(nanoseconds: clock.now() - mixing)
                if speakersChanged { pipeline.onSpeakersChanged() }
                if processes { pipeline.farEnd.write(output) }
                pipeline.recordingTap.offerHeard(output)
                do {
                    try playback.write(output)
                } catch {
                    if playbackFailed(error) {
                        periods = 0
                        continue
                    }
                    return
                }
            }
        }
    }
}

/// An engine error with a readable description.
public struct AudioEngineError: Error, Hashable, Sendable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Which way audio goes through a device.
public enum AudioDirection: String, Sendable {
    case input
    case output
}

/// A device handed from the control side to one audio thread: the thread takes it at the start of
/// a frame with a try-lock (never waiting), the newest hand-over wins.
final class DeviceHandover<Device>: Sendable {
    private let slot = Mutex<Box?>(nil)

    private struct Box: @unchecked Sendable {
        // Safety: moved from the control side to one audio thread through the mutex, used by one at a time.
        let device: Device
    }

    func hand(_ device: Device) {
        slot.withLock { $0 = Box(device: device) }
    }

    /// Audio thread: hands the device to `use` if one waits and the lock is free; true if it did.
    @discardableResult
    func take(_ use: (Device) -> Void) -> Bool {
        let box = slot.withLockIfAvailable { slot -> Box? in
            defer { slot = nil }
            return slot
        }
        guard let box = box ?? nil else { return false }
        use(box.device)
        return true
    }

    func discard() {
        slot.withLock { $0 = nil }
    }
}
