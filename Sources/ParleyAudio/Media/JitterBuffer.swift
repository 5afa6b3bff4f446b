import ParleyProtocol

/// A per-peer adaptive jitter buffer for Opus frames, ordered by sequence number and scheduled by
/// RTP-like timestamps (48 kHz samples). Pure logic with an injected clock: every call takes the
/// current time, so tests drive it through reorder, duplicates, loss bursts, clock drift and jitter
/// spikes deterministically. All storage is allocated in `init`; `insert` and `next` never allocate.
///
/// How it schedules: frame `ts` is due at `ts + minTransit + target` (in samples), where `minTransit`
/// is the smallest `arrival − timestamp` of the packets that came within `baseSpan` (the network's
/// base delay, which follows clock drift) and `target` is the delay most packets need on top of it:
/// a high percentile of the last `historyCount` packets' extra delay, each counted from the base
/// delay of its own time. The target grows at once when packets come later, and shrinks slowly
/// when the network calms down (`releasePerSecond`), except in a pause (idle, or a DTX gap):
/// there it falls at once to what the packets need, since skipping silence is not heard (and a
/// lowered minimum delay waits for a pause to take effect, for the same reason). When
/// playout is early it inserts a concealed frame (expand); when it is more than one and a half
/// frames late, or a whole frame because the target shrank by a frame since the schedule was set,
/// it skips one frame (accelerate), at most once per `accelerateSpacing`. A missing frame whose
/// successor is here is lost: the successor's in-band FEC restores it, or it is concealed. With
/// nothing buffered at all it conceals without advancing, which makes the delay grow by exactly
/// what the network took (RFC 3550 §6.4.1 gives the jitter estimate it reports; the scheme
/// follows what NetEq-style buffers do).
public final class JitterBuffer {
    public struct Configuration: Sendable, Hashable {
        public var sampleRate = 48_000
        /// Frames held at most (a power of two is not required).
        public var slotCount = 64
        public var maximumPacketSize = MediaPayload.maximumSize
        /// Delay added to the measured jitter: room for redundant copies and FEC to arrive.
        public var minimumDelay: Duration = .zero
        public var maximumDelay: Duration = .milliseconds(400)
        /// Packets over which the jitter percentile is measured. They span pauses (DTX sends
        /// nothing), so the jitter of the last words is still waited for at the next ones.
        public var historyCount = 128
        /// The time over which the base delay is the lowest transit. A sender's sample clock
        /// drifts against ours (about 0.13 % through the bench's PulseAudio null sinks; sound cards
        /// up to about 0.1 %), so its packets' transit creeps by that much a second: a base over the
        /// whole history (128 packets spanned 6–11 s of talk in spurts) made the drift across it
        /// look like jitter, 11–17 ms of target on a clean link, and every frame of a sender with a
        /// fast clock waited it. 2.5 s is the 128 packets of continuous 20 ms frames.
        public var baseSpan: Duration = .milliseconds(2500)
        /// The share of packets the target delay should let through in time.
        public var percentile = 0.95
        /// How fast the target shrinks at least when the network calms down (faster when it is far
        /// above what the packets need: see `updateTarget`).
        public var releasePerSecond: Duration = .milliseconds(20)
        /// Shortest time between two skipped frames.
        public var accelerateSpacing: Duration = .milliseconds(200)
        /// After this long with nothing to play the stream is idle: playout stops and restarts
        /// with the next packet (a peer that stopped sending, or a long DTX pause).
        public var idleAfter: Duration = .milliseconds(400)
        /// How long a lowered minimum delay waits for a pause while frames play (see
        /// `setMinimumDelay`): talk without a pause this long sheds it in speech after all.
        public var minimumReleaseWait: Duration = .seconds(4)

        public init() {}
    }

    /// A frame held by the buffer. Its bytes (`payload(of:)`) stay valid until the next `insert`.
    public struct Frame: Sendable, Hashable {
        public var slot: Int
        public var sequence: Int64
        public var timestamp: Int64
        public var duration: Int
        /// Whether it came from a redundant copy (RFC 2198) rather than the packet's primary.
        public var isCopy: Bool
    }

    /// What the player does next, for one frame's worth of samples.
    public enum Action: Sendable, Hashable {
        /// Nothing to play (not started, or idle): output silence.
        case idle
        /// Decode this frame.
        case play(Frame)
        /// The frame before `next` was lost: decode `next`'s in-band FEC for `duration` samples.
        case recover(duration: Int, next: Frame)
        /// Conceal `duration` samples (Opus PLC).
        case conceal(duration: Int)
        /// A DTX pause (the sender sent nothing, no packet was lost): played by concealment,
        /// which fades the last sound to silence.
        case silence(duration: Int)
    }

    public enum InsertResult: Sendable, Hashable {
        case accepted
        case duplicate
        /// Its time had passed.
        case late
        /// Too far ahead of playout for the buffer: the stream restarted around it.
        case resynchronized
        case tooLarge
    }

    public struct Statistics: Sendable, Hashable {
        /// Primary frames received (not counting duplicates and copies).
        public var received = 0
        public var duplicates = 0
        /// Packets that came after their playout time.
        public var late = 0
        /// Frames that never arrived by their playout time (neither primary nor copy).
        public var lost = 0
        /// Frames played from a redundant copy because their own packet was missing.
        public var recoveredByRedundancy = 0
        /// Lost frames decoded from the next packet's in-band FEC.
        public var recoveredByFEC = 0
        /// Frames synthesized by packet-loss concealment (lost, or nothing buffered yet).
        public var concealed = 0
        /// Concealed frames inserted to grow the delay (part of `concealed`).
        public var expanded = 0
        /// Frames skipped to shrink the delay.
        public var dropped = 0
        /// Frames of DTX pause (not lost, not counted as concealed).
        public var silent = 0
        public var resynchronizations = 0
        /// Highest extended sequence number seen minus the first, plus one (RFC 3550 §6.4.1).
        public var expected = 0
        /// RFC 3550 §6.4.1 interarrival jitter, in samples.
        public var jitter = 0.0
        /// The current target delay on top of the base network delay, in samples.
        public var targetDelay = 0
        /// How long played frames waited here beyond the fastest packets' transit (the base
        /// network delay), averaged over about 16, in samples: the buffer's real hold, target and
        /// player phase.
        public var currentDelay = 0
        /// How long the peer's frames wait in queues on the way, in samples (PROTOCOL §10.1,
        /// `queue_delay_ms`): each primary's transit to the end of its frame, above the lowest of
        /// the last 10–20 s, smoothed over about 16 primaries.
        public var queueDelay = 0.0
    }

    public let configuration: Configuration
    public private(set) var statistics = Statistics()

    private enum State { case empty, buffering, playing }
    private var state = State.empty

    // Slots, indexed by extended sequence number modulo `slotCount`.
    private let slotSequence: UnsafeMutableBufferPointer<Int64>  // -1: empty
    private let slotTimestamp: UnsafeMutableBufferPointer<Int64>
    private let slotDuration: UnsafeMutableBufferPointer<Int>
    private let slotLength: UnsafeMutableBufferPointer<Int>
    private let slotIsCopy: UnsafeMutableBufferPointer<Bool>
    /// Played frames stay in their slot (marked) until overwritten, so a duplicate that comes after
    /// its frame was played is recognised as a duplicate, not as a late packet.
    private let slotPlayed: UnsafeMutableBufferPointer<Bool>
    private let slotBytes: UnsafeMutableRawBufferPointer

    // Unwrapping of 16-bit sequence numbers and 32-bit timestamps (RFC 3550 appendix A.1).
    private var highestSequence: Int64?
    private var highestTimestamp: Int64 = 0
    private var firstSequence: Int64 = 0

    // Playout position.
    private var nextSequence: Int64 = 0
    private var playoutTimestamp: Int64 = 0
    private var lastDuration = 960
    private var lastSilentSince: Int64?
    /// Frames concealed since nothing was buffered: a DTX pause (counted as silence when the next
    /// frame shows it was one) or the network being late.
    private var concealedWhileWaiting = 0
    private var lastAccelerate: Int64 = .min / 2
    /// The target when the schedule was last set (playout began, a frame was inserted or
    /// skipped): a target a whole frame below it means the schedule holds a frame for nothing.
    private var scheduledTarget: Int64 = 0
    private var averageHold: Double?

    // Delay measurement over the last `historyCount` primaries.
    private let transits: UnsafeMutableBufferPointer<Int64>
    /// When each of `transits` arrived, in samples.
    private let transitArrivals: UnsafeMutableBufferPointer<Int64>
    /// Each one's extra delay over the base delay of its time (less what the base rose since).
    private let extras: UnsafeMutableBufferPointer<Int64>
    private var transitCount = 0
    private var transitIndex = 0
    private var minTransit: Int64 = 0
    private var target: Int64 = 0
    /// What the history's packets need (the percentile, plus the minimum delay): the target
    /// comes down to it slowly while frames play, and at once in a pause.
    private var need: Int64 = 0
    /// The measured part of `need`: the percentile of the history's extra delay.
    private var measuredExtra: Int64 = 0
    /// A lower minimum delay that waits for a pause, and when it was asked for (see
    /// `setMinimumDelay`).
    private var loweredMinimum: (delay: Int64, since: Int64)?
    private var lastTransit: Int64?
    private var lastTargetUpdate: Int64?
    private var queueDelay: QueueDelayEstimate
    /// Set when the queue estimate reached `QueueDelayEstimate.backOffMilliseconds` from below;
    /// the receive channel takes it to ask for an early REPORT.
    public internal(set) var queueReachedBackOff = false
    private let largest: UnsafeMutableBufferPointer<Int64>

    private var minimumDelay: Int64
    private let maximumDelay: Int64

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
        let slots = configuration.slotCount
        slotSequence = .allocate(capacity: slots)
        slotSequence.initialize(repeating: -1)
        slotTimestamp = .allocate(capacity: slots)
        slotTimestamp.initialize(repeating: 0)
        slotDuration = .allocate(capacity: slots)
        slotDuration.initialize(repeating: 0)
        slotLength = .allocate(capacity: slots)
        slotLength.initialize(repeating: 0)
        slotIsCopy = .allocate(capacity: slots)
        slotIsCopy.initialize(repeating: false)
        slotPlayed = .allocate(capacity: slots)
        slotPlayed.initialize(repeating: false)
        slotBytes = .allocate(byteCount: slots * configuration.maximumPacketSize, alignment: 8)
        slotBytes.initializeMemory(as: UInt8.self, repeating: 0)
        transits = .allocate(capacity: configuration.historyCount)
        transits.initialize(repeating: 0)
        transitArrivals = .allocate(capacity: configuration.historyCount)
        transitArrivals.initialize(repeating: 0)
        extras = .allocate(capacity: configuration.historyCount)
        extras.initialize(repeating: 0)
        let tail = max(1, Int((Double(configuration.historyCount) * (1 - configuration.percentile)).rounded(.up)))
        largest = .allocate(capacity: tail)
        largest.initialize(repeating: 0)
        minimumDelay = Self.samples(configuration.minimumDelay, rate: configuration.sampleRate)
        maximumDelay = Self.samples(configuration.maximumDelay, rate: configuration.sampleRate)
        target = minimumDelay
        queueDelay = QueueDelayEstimate(ticksPerSecond: Int64(configuration.sampleRate))
    }

    deinit {
        slotSequence.deallocate()
        slotTimestamp.deallocate()
        slotDuration.deallocate()
        slotLength.deallocate()
        slotIsCopy.deallocate()
        slotPlayed.deallocate()
        slotBytes.deallocate()
        transits.deallocate()
        transitArrivals.deallocate()
        extras.deallocate()
        largest.deallocate()
    }

    /// Delay kept on top of the measured jitter (e.g. so redundant copies can arrive in time). A
    /// higher one applies at once. A lower one, while frames play, waits for the next pause (or
    /// `minimumReleaseWait` of talk without one): the frame it frees would otherwise be skipped in
    /// speech, and heard. The loss that called for it (the first words through a sender's
    /// overfilled uplink) is typically forgotten some seconds into the next words.
    public func setMinimumDelay(_ delay: Duration) {
        let value = min(maximumDelay, Self.samples(delay, rate: configuration.sampleRate))
        if value < minimumDelay, state == .playing {
            loweredMinimum = (value, loweredMinimum?.since ?? lastTargetUpdate ?? 0)
            return
        }
        loweredMinimum = nil
        minimumDelay = value
        target = max(target, minimumDelay)
    }

    /// Puts a lowered minimum delay in effect (in a pause, or after `minimumReleaseWait`).
    private func applyLoweredMinimum() {
        guard let lowered = loweredMinimum else { return }
        loweredMinimum = nil
        minimumDelay = lowered.delay
        need = min(maximumDelay, measuredExtra + minimumDelay)
    }

    /// The bytes of a frame returned by `next`, valid until the next `insert`.
    public func payload(of frame: Frame) -> UnsafeRawBufferPointer {
        let start = frame.slot * configuration.maximumPacketSize
        return UnsafeRawBufferPointer(rebasing: slotBytes[start..<(start + slotLength[frame.slot])])
    }

    /// Frames currently buffered.
    public var bufferedCount: Int { (0..<configuration.slotCount).count(where: { isPresent(slot: $0) }) }

    private func isPresent(slot: Int) -> Bool { slotSequence[slot] >= 0 && !slotPlayed[slot] }

    private func isPresent(_ sequence: Int64) -> Bool {
        let slot = slotIndex(sequence)
        return slotSequence[slot] == sequence && !slotPlayed[slot]
    }

    // MARK: Insert

    /// Adds one frame (a payload's primary, or one of its redundant copies) that arrived at
    /// `arrival` nanoseconds. Copies do not count as received and do not feed the delay estimate.
    @discardableResult
    public func insert(
        sequence: UInt16, timestamp: UInt32, duration: Int, payload: UnsafeRawBufferPointer, arrival: UInt64,
        isCopy: Bool = false
    ) -> InsertResult {
        guard payload.count <= configuration.maximumPacketSize else { return .tooLarge }
        let (extended, extendedTimestamp) = unwrap(sequence: sequence, timestamp: timestamp)
        let slot = slotIndex(extended)
        if slotSequence[slot] == extended && (isCopy || !slotIsCopy[slot] || slotPlayed[slot]) {
            // A copy of a frame we hold is expected; a second primary is a duplicate. (A primary
            // does replace a copy: same frame, and it keeps `isCopy` honest.)
            if !isCopy { statistics.duplicates += 1 }
            return .duplicate
        }
        // Late primaries feed the estimate too: they are what tells it to grow.
        if !isCopy {
            noteArrival(sequence: extended, timestamp: extendedTimestamp, duration: duration, arrival: arrival)
        }

        switch state {
        case .empty:
            // The next frame after the one last played, later in time: the stream was in a DTX
            // pause, not losing packets, while it went idle.
            if extended == nextSequence && extendedTimestamp > playoutTimestamp {
                countWaitAsPause()
            } else {
                concealedWhileWaiting = 0
            }
            releaseExcess()
            start(at: extended, timestamp: extendedTimestamp)
        case .buffering where extended < nextSequence && nextSequence - extended < Int64(configuration.slotCount / 2):
            // Reordered before playout started: start earlier.
            nextSequence = extended
            playoutTimestamp = extendedTimestamp
        case .buffering, .playing:
            break
        }
        if extended < nextSequence {
            if !isCopy { statistics.late += 1 }
            return .late
        }
        if extended >= nextSequence + Int64(configuration.slotCount) {
            statistics.resynchronizations += 1
            flush()
            start(at: extended, timestamp: extendedTimestamp)
            store(extended, extendedTimestamp, duration, payload, isCopy)
            return .resynchronized
        }
        store(extended, extendedTimestamp, duration, payload, isCopy)
        return .accepted
    }

    private func store(
        _ sequence: Int64, _ timestamp: Int64, _ duration: Int, _ payload: UnsafeRawBufferPointer, _ isCopy: Bool
    ) {
        let slot = slotIndex(sequence)
        slotSequence[slot] = sequence
        slotTimestamp[slot] = timestamp
        slotDuration[slot] = duration
        slotLength[slot] = payload.count
        slotIsCopy[slot] = isCopy
        slotPlayed[slot] = false
        let start = slot * configuration.maximumPacketSize
        UnsafeMutableRawBufferPointer(rebasing: slotBytes[start..<(start + payload.count)]).copyMemory(from: payload)
    }

    private func start(at sequence: Int64, timestamp: Int64) {
        state = .buffering
        nextSequence = sequence
        playoutTimestamp = timestamp
        lastSilentSince = nil
    }

    private func flush() {
        slotSequence.update(repeating: -1)
        state = .empty
    }

    private func unwrap(sequence: UInt16, timestamp: UInt32) -> (Int64, Int64) {
        guard let highest = highestSequence else {
            highestSequence = Int64(sequence)
            highestTimestamp = Int64(timestamp)
            return (Int64(sequence), Int64(timestamp))
        }
        let extended = highest + Int64(Int16(bitPattern: sequence &- UInt16(truncatingIfNeeded: highest)))
        let extendedTimestamp =
            highestTimestamp + Int64(Int32(bitPattern: timestamp &- UInt32(truncatingIfNeeded: highestTimestamp)))
        if extended > highest {
            highestSequence = extended
            highestTimestamp = extendedTimestamp
        }
        return (extended, extendedTimestamp)
    }

    // MARK: Delay estimation

    private func noteArrival(sequence: Int64, timestamp: Int64, duration: Int, arrival: UInt64) {
        // Counted from the first primary, not from a copy that came with it: a copy of a frame
        // sent before this receiver was listening (a late joiner, a new session) is not a loss.
        firstSequence = statistics.received == 0 ? sequence : min(firstSequence, sequence)
        statistics.received += 1
        statistics.expected = Int((highestSequence ?? sequence) - firstSequence + 1)
        let now = Self.samples(nanoseconds: arrival, rate: configuration.sampleRate)
        let transit = now - timestamp
        // RFC 3550 §6.4.1: J += (|D| − J) / 16, D the change in transit between consecutive arrivals.
        if let lastTransit {
            statistics.jitter += (Double(abs(transit - lastTransit)) - statistics.jitter) / 16
        }
        lastTransit = transit
        // Counted to the frame's end, when the sender could send it: a sender that changes its
        // frame duration does not look queued.
        if queueDelay.note(transit: transit - Int64(duration), now: now) { queueReachedBackOff = true }
        statistics.queueDelay = queueDelay.value

        let newest = transitIndex
        transits[newest] = transit
        transitArrivals[newest] = now
        transitIndex = (transitIndex + 1) % transits.count
        transitCount = min(transitCount + 1, transits.count)
        updateTarget(now: now, newest: newest)
    }

    /// Packets the base delay is measured over at least (`Configuration.baseSpan`).
    static let baseCount = 16

    /// The share of the target's excess over the measured need released per second (1/4).
    static let excessReleaseDivisor: Int64 = 4

    private func updateTarget(now: Int64, newest: Int) {
        // The base: the lowest transit within `baseSpan`, and of the last `baseCount` packets
        // (after a pause the packets before it: the first one after it may be late itself).
        let oldest = now - Self.samples(configuration.baseSpan, rate: configuration.sampleRate)
        var minimum = transits[newest]
        for index in 0..<transitCount {
            let age = index <= newest ? newest - index : newest - index + transits.count  // 0: the newest
            if age < Self.baseCount || transitArrivals[index] >= oldest { minimum = min(minimum, transits[index]) }
        }
        // The target is counted from the base delay. When the base moves up (the fastest packets
        // left its span after a lasting step in the delay, which the target already grew to wait
        // for, or the sender's clock runs slow), the target and the extras measured from it give
        // up as much, so the schedule does not wait a second time.
        if transitCount > 1, minimum > minTransit {
            let rise = minimum - minTransit
            target = max(0, target - rise)
            for index in 0..<transitCount { extras[index] = max(0, extras[index] - rise) }
        }
        minTransit = minimum
        extras[newest] = transits[newest] - minimum
        // The k-th largest extra delay (k = the share above the percentile), by insertion into a
        // small sorted array: no allocation, O(historyCount × k).
        let k = min(largest.count, max(1, Int((Double(transitCount) * (1 - configuration.percentile)).rounded(.up))))
        var filled = 0
        for index in 0..<transitCount {
            let extra = extras[index]
            if filled < k {
                var position = filled
                while position > 0 && largest[position - 1] < extra {
                    largest[position] = largest[position - 1]
                    position -= 1
                }
                largest[position] = extra
                filled += 1
            } else if extra > largest[k - 1] {
                var position = k - 1
                while position > 0 && largest[position - 1] < extra {
                    largest[position] = largest[position - 1]
                    position -= 1
                }
                largest[position] = extra
            }
        }
        if let lowered = loweredMinimum,
            now - lowered.since >= Self.samples(configuration.minimumReleaseWait, rate: configuration.sampleRate)
        {
            applyLoweredMinimum()
        }
        measuredExtra = k > 0 ? largest[k - 1] : 0
        let measured = min(maximumDelay, measuredExtra + minimumDelay)
        need = measured
        let elapsed = lastTargetUpdate.map { max(0, now - $0) } ?? 0
        lastTargetUpdate = now
        if measured >= target {
            target = measured  // grow at once
        } else {
            // At least `releasePerSecond`, and a quarter of the excess a second: a target hundreds
            // of milliseconds above what the last packets needed (a sender's overfilled uplink, a
            // handover) comes down in seconds, not in half a minute, while one a frame or two
            // too high still shrinks slowly (a spike that comes back often is waited for).
            let release = max(
                Self.samples(configuration.releasePerSecond, rate: configuration.sampleRate),
                (target - measured) / Self.excessReleaseDivisor)
            let step = release * elapsed / Int64(configuration.sampleRate)
            target = max(measured, target - max(step, 0))
        }
        statistics.targetDelay = Int(target)
    }

    // MARK: Playout

    /// What to play next, at `now` nanoseconds. Call once per frame the player needs.
    public func next(now nanoseconds: UInt64) -> Action {
        let now = Self.samples(nanoseconds: nanoseconds, rate: configuration.sampleRate)
        switch state {
        case .empty:
            return .idle
        case .buffering:
            guard now >= due(playoutTimestamp) else { return .idle }
            state = .playing
            scheduledTarget = target
        case .playing:
            break
        }
        var lateness = now - due(playoutTimestamp)
        let slot = slotIndex(nextSequence)

        if isPresent(nextSequence) {
            lastSilentSince = nil
            let frame = frame(in: slot)
            if frame.timestamp > playoutTimestamp {
                // The sender skipped time without skipping a sequence number: DTX (RFC 3551 §4.1).
                // What was concealed while nothing was buffered already filled that much of the
                // pause (the playout did not advance): skip it, or the pause would become delay.
                // A target still above what the packets need is dropped here too: skipping part
                // of a pause is silent, skipping a frame of speech later is not.
                countWaitAsPause()
                if releaseExcess() {
                    lateness = now - due(playoutTimestamp)
                    scheduledTarget = target
                }
                let filled = min(frame.timestamp - playoutTimestamp, max(0, lateness))
                let skipped = filled / Int64(lastDuration) * Int64(lastDuration)
                playoutTimestamp += skipped
                lateness -= skipped
            }
            if frame.timestamp > playoutTimestamp {
                let gap = Int(min(Int64(lastDuration), frame.timestamp - playoutTimestamp))
                playoutTimestamp += Int64(gap)
                statistics.silent += 1
                return .silence(duration: gap)
            }
            concealedWhileWaiting = 0
            if lateness < -Int64(lastDuration / 2) {
                return expand()
            }
            // Skip a frame when playout is one and a half frames late (the network was late,
            // and the delay grew by the wait), or a whole frame late because the target shrank a
            // frame since the schedule was set (copies stopped, a spike left the history). Only
            // the first was looked for before: a buffer that began with a frame for copies kept
            // that frame, half the time, long after the copies and the target were gone.
            let targetShrank = target <= scheduledTarget - Int64(lastDuration) && lateness >= Int64(lastDuration)
            if lateness > Int64(lastDuration + lastDuration / 2) || targetShrank,
                now - lastAccelerate >= accelerateSpacing, isPresent(nextSequence + 1)
            {
                lastAccelerate = now
                scheduledTarget = target
                statistics.dropped += 1
                advance(past: frame)
                return next(now: nanoseconds)
            }
            if frame.isCopy { statistics.recoveredByRedundancy += 1 }
            // Measured on played frames only: in a pause or a wait the playout position stands
            // still, and the figure would grow with the silence, not with the buffer's delay.
            noteHold(max(0, now - (frame.timestamp + minTransit)))
            advance(past: frame)
            return .play(frame)
        }

        // The frame is missing.
        guard let following = nextPresent() else {
            // Nothing buffered: the network is late (or the peer stopped). Conceal without
            // advancing, so the frame still plays if it comes, and the delay grows by the wait.
            let since = lastSilentSince ?? now
            lastSilentSince = since
            if now - since >= Self.samples(configuration.idleAfter, rate: configuration.sampleRate) {
                state = .empty
                return .idle
            }
            statistics.concealed += 1
            concealedWhileWaiting += 1
            return .conceal(duration: lastDuration)
        }
        lastSilentSince = nil
        concealedWhileWaiting = 0
        // Not due yet: wait for it (a reordered packet may still come), growing the delay a frame.
        if lateness < 0 {
            return expand()
        }
        // Its time has come and a later frame is here: it is lost. Frames a whole frame overdue
        // were already covered by the concealment played while nothing was buffered: skip them.
        statistics.lost += 1
        var duration = missingDuration(before: following)
        while lateness - Int64(duration) >= 0 && !isPresent(nextSequence + 1) && nextSequence + 1 < following.sequence {
            nextSequence += 1
            playoutTimestamp += Int64(duration)
            lateness -= Int64(duration)
            statistics.lost += 1
            duration = missingDuration(before: following)
        }
        nextSequence += 1
        playoutTimestamp += Int64(duration)
        if following.sequence == nextSequence && following.timestamp == playoutTimestamp {
            statistics.recoveredByFEC += 1
            return .recover(duration: duration, next: following)
        }
        statistics.concealed += 1
        return .conceal(duration: duration)
    }

    /// The duration to assume for the missing frame at the playout position: the last frame's,
    /// or less if the next frame present starts sooner.
    private func missingDuration(before following: Frame) -> Int {
        let gap = following.timestamp - playoutTimestamp
        return gap > 0 ? Int(min(Int64(lastDuration), gap)) : lastDuration
    }

    private var accelerateSpacing: Int64 {
        Self.samples(configuration.accelerateSpacing, rate: configuration.sampleRate)
    }

    /// Extended sequence numbers can be negative (a packet from before the first one).
    private func slotIndex(_ sequence: Int64) -> Int {
        let count = Int64(configuration.slotCount)
        return Int(((sequence % count) + count) % count)
    }

    private func due(_ timestamp: Int64) -> Int64 { timestamp + minTransit + target }

    /// In a pause (the stream went idle, or a DTX gap is about to be played): a lowered minimum
    /// delay takes effect, and the target falls to what the packets need. The slow release is for
    /// playing speech, where each frame skipped to shrink is heard; a one-off delay step (a
    /// sender's uplink queue that filled and drained) would otherwise still be shed, frame by
    /// frame, in the next words. Returns whether it fell.
    @discardableResult
    private func releaseExcess() -> Bool {
        applyLoweredMinimum()
        let floor = max(need, minimumDelay)  // `need` is within `maximumDelay` already
        guard target > floor else { return false }
        target = floor
        statistics.targetDelay = Int(target)
        return true
    }

    /// The frames concealed while nothing was buffered were a DTX pause: count them as silence.
    private func countWaitAsPause() {
        statistics.concealed -= concealedWhileWaiting
        statistics.silent += concealedWhileWaiting
        concealedWhileWaiting = 0
    }

    /// Averages the hold of played frames over about 16 (the player's phase moves a frame's
    /// hold by up to a frame, and one frame's figure is what a reader would catch).
    private func noteHold(_ hold: Int64) {
        averageHold = averageHold.map { $0 + (Double(hold) - $0) / 16 } ?? Double(hold)
        statistics.currentDelay = Int((averageHold ?? 0).rounded())
    }

    private func expand() -> Action {
        scheduledTarget = target
        statistics.concealed += 1
        statistics.expanded += 1
        return .conceal(duration: lastDuration)
    }

    private func frame(in slot: Int) -> Frame {
        Frame(
            slot: slot, sequence: slotSequence[slot], timestamp: slotTimestamp[slot], duration: slotDuration[slot],
            isCopy: slotIsCopy[slot])
    }

    private func advance(past frame: Frame) {
        slotPlayed[frame.slot] = true
        nextSequence = frame.sequence + 1
        playoutTimestamp = frame.timestamp + Int64(frame.duration)
        lastDuration = frame.duration
    }

    /// The first buffered frame after the missing one.
    private func nextPresent() -> Frame? {
        for offset in 1..<configuration.slotCount {
            let sequence = nextSequence + Int64(offset)
            let slot = slotIndex(sequence)
            if isPresent(sequence) { return frame(in: slot) }
        }
        return nil
    }

    static func samples(_ duration: Duration, rate: Int) -> Int64 {
        samples(nanoseconds: duration.nanoseconds, rate: rate)
    }

    static func samples(nanoseconds: UInt64, rate: Int) -> Int64 {
        Int64(nanoseconds / 1000) * Int64(rate) / 1_000_000
    }
}
