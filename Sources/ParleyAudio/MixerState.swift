import ParleyCore
import Synchronization

/// Which channel plays in which mixer slot, handed from the control side to the playback
/// thread. The control side publishes the whole table (under a lock held for a copy); the
/// playback thread takes the newest one at the start of a frame with a try-lock, so it never
/// waits, and no burst of peers coming and going can overflow anything: only the latest table
/// matters. The table does not own the channels: the engine keeps each one alive until the
/// playback thread marks it detached.
final class MixerTable: Sendable {
    private struct Published: ~Copyable {
        var slots: [Unmanaged<ReceiveChannel>?]
        var generation = 0
    }

    private let published: Mutex<Published>

    init(slotCount: Int) {
        published = Mutex(Published(slots: Array(repeating: nil, count: slotCount)))
    }

    /// Control side: the channel in each slot from now on.
    func publish(_ slots: [ReceiveChannel?]) {
        let table = slots.map { $0.map { Unmanaged.passUnretained($0) } }
        published.withLock { published in
            published.slots = table
            published.generation += 1
        }
    }

    /// Playback thread: hands the newest table to `apply` if it is newer than `generation` and
    /// the control side is not writing it right now (then next frame). Does not allocate.
    func take(newerThan generation: inout Int, _ apply: (borrowing [Unmanaged<ReceiveChannel>?]) -> Void) {
        _ = published.withLockIfAvailable { published in
            guard published.generation != generation else { return }
            generation = published.generation
            apply(published.slots)
        }
    }
}

/// The playback thread's side of mixing: the active channels (unretained: the engine owns them)
/// and the mix buffers, all allocated once.
final class MixerState {
    private let slots: UnsafeMutableBufferPointer<Unmanaged<ReceiveChannel>?>
    private let peerFrame: UnsafeMutableBufferPointer<Int16>
    private let accumulator: UnsafeMutableBufferPointer<Float>
    private let output: UnsafeMutableBufferPointer<Int16>
    /// Whether the peer in each slot was speaking after the last frame.
    private let speaking: UnsafeMutableBufferPointer<Bool>

    init(maximumPeers: Int, frameSamples: Int) {
        slots = .allocate(capacity: maximumPeers)
        slots.initialize(repeating: nil)
        speaking = .allocate(capacity: maximumPeers)
        speaking.initialize(repeating: false)
        peerFrame = .allocate(capacity: frameSamples)
        peerFrame.initialize(repeating: 0)
        accumulator = .allocate(capacity: frameSamples)
        accumulator.initialize(repeating: 0)
        output = .allocate(capacity: frameSamples)
        output.initialize(repeating: 0)
    }

    deinit {
        slots.deallocate()
        speaking.deallocate()
        peerFrame.deallocate()
        accumulator.deallocate()
        output.deallocate()
    }

    /// The generation of the table applied last.
    private var generation = 0

    /// Takes the newest slot table, if there is one. A channel no slot refers to any more is
    /// marked detached (the engine may then release it).
    func apply(_ table: MixerTable) {
        table.take(newerThan: &generation) { newSlots in
            for index in slots.indices {
                let new = newSlots[index]
                guard let old = slots[index], new?.toOpaque() != old.toOpaque() else {
                    slots[index] = new
                    continue
                }
                slots[index] = new
                speaking[index] = false
                let channel = old.takeUnretainedValue()
                if !newSlots.contains(where: { $0?.toOpaque() == old.toOpaque() }) {
                    channel.detached.store(true, ordering: .releasing)
                }
            }
        }
    }

    /// Renders every active peer at `now` and returns the soft-clipped mix (valid until the next
    /// call). `speakersChanged` tells whether a peer started or stopped speaking in this frame.
    func mix(now: UInt64) -> (output: UnsafeBufferPointer<Int16>, speakersChanged: Bool) {
        SoftClipMixer.clear(accumulator)
        var changed = false
        for index in slots.indices {
            guard let channel = slots[index]?.takeUnretainedValue() else {
                if speaking[index] {
                    speaking[index] = false
                    changed = true
                }
                continue
            }
            // Rendered even at volume 0: the jitter buffer and the speaking meter go on.
            channel.render(into: peerFrame, now: now)
            let gain = channel.gain
            if gain > 0 { SoftClipMixer.add(UnsafeBufferPointer(peerFrame), gain: gain, to: accumulator) }
            if channel.isSpeakingNow != speaking[index] {
                speaking[index].toggle()
                changed = true
            }
        }
        SoftClipMixer.render(UnsafeBufferPointer(accumulator), into: output)
        return (UnsafeBufferPointer(output), changed)
    }
}
