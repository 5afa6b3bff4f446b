import ParleyCore
import Synchronization

/// Peer changes for the playback thread: a single-producer (the control side, under its lock)
/// single-consumer (the playback thread) ring of fixed slots. The ring does not own the channels:
/// the engine keeps each one alive until the playback thread marks it detached.
final class PeerCommandRing: Sendable {
    enum Operation: Int {
        case add = 1
        case remove = 2
    }

    private let capacity: Int
    // Safety: slot `i % capacity` is written by the producer only while `i` is in
    // [tail, head + capacity) and read by the consumer only while in [head, tail); acquire/release
    // on the indices orders the accesses.
    private nonisolated(unsafe) let operations: UnsafeMutableBufferPointer<Int>
    private nonisolated(unsafe) let channels: UnsafeMutableBufferPointer<UnsafeMutableRawPointer?>
    private let head = Atomic<Int>(0)
    private let tail = Atomic<Int>(0)

    init(capacity: Int) {
        self.capacity = capacity
        operations = .allocate(capacity: capacity)
        operations.initialize(repeating: 0)
        channels = .allocate(capacity: capacity)
        channels.initialize(repeating: nil)
    }

    deinit {
        operations.deallocate()
        channels.deallocate()
    }

    /// Producer. The engine bounds pending commands (≤ 2 per peer slot), so the ring cannot fill.
    func push(_ operation: Operation, _ channel: ReceiveChannel) {
        let index = tail.load(ordering: .relaxed)
        precondition(index - head.load(ordering: .acquiring) < capacity, "peer command ring overflow")
        operations[index % capacity] = operation.rawValue
        channels[index % capacity] = Unmanaged.passUnretained(channel).toOpaque()
        tail.store(index + 1, ordering: .releasing)
    }

    /// Consumer.
    func drain(_ body: (Operation, ReceiveChannel) -> Void) {
        let start = head.load(ordering: .relaxed)
        let end = tail.load(ordering: .acquiring)
        for index in start..<end {
            let channel = Unmanaged<ReceiveChannel>.fromOpaque(channels[index % capacity]!).takeUnretainedValue()
            body(Operation(rawValue: operations[index % capacity])!, channel)
            head.store(index + 1, ordering: .releasing)
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

    /// Applies queued peer changes. A removed channel is marked detached once no slot refers to it.
    func apply(_ commands: PeerCommandRing) {
        commands.drain { operation, channel in
            switch operation {
            case .add:
                if let free = slots.firstIndex(where: { $0 == nil }) { slots[free] = .passUnretained(channel) }
            case .remove:
                for index in slots.indices where slots[index]?.takeUnretainedValue() === channel { slots[index] = nil }
                channel.detached.store(true, ordering: .releasing)
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
            channel.render(into: peerFrame, now: now)
            SoftClipMixer.add(UnsafeBufferPointer(peerFrame), to: accumulator)
            if channel.isSpeakingNow != speaking[index] {
                speaking[index].toggle()
                changed = true
            }
        }
        SoftClipMixer.render(UnsafeBufferPointer(accumulator), into: output)
        return (UnsafeBufferPointer(output), changed)
    }
}
