import Synchronization

/// A single-producer single-consumer queue of small packets (with their arrival times) in fixed,
/// pre-allocated slots: the network thread pushes a peer's media payloads, the playback thread
/// drains them into that peer's jitter buffer. Lock-free and allocation-free after `init`; when
/// it is full the newest packet is dropped (and counted), never blocking the producer.
public final class PacketRing: Sendable {
    public let slotCount: Int
    public let slotSize: Int
    // Safety: slot `i % slotCount` is written only by the producer while `i` is in
    // [tail, head + slotCount) and read only by the consumer while `i` is in [head, tail); the
    // acquire/release pairs on `head` and `tail` order the accesses.
    private nonisolated(unsafe) let bytes: UnsafeMutableRawBufferPointer
    private nonisolated(unsafe) let lengths: UnsafeMutableBufferPointer<Int>
    private nonisolated(unsafe) let arrivals: UnsafeMutableBufferPointer<UInt64>
    private let head = Atomic<Int>(0)
    private let tail = Atomic<Int>(0)
    private let droppedCount = Atomic<Int>(0)

    public init(slotCount: Int, slotSize: Int) {
        precondition(slotCount > 0 && slotSize > 0, "ring sizes must be positive")
        self.slotCount = slotCount
        self.slotSize = slotSize
        bytes = .allocate(byteCount: slotCount * slotSize, alignment: 8)
        bytes.initializeMemory(as: UInt8.self, repeating: 0)
        lengths = .allocate(capacity: slotCount)
        lengths.initialize(repeating: 0)
        arrivals = .allocate(capacity: slotCount)
        arrivals.initialize(repeating: 0)
    }

    deinit {
        bytes.deallocate()
        lengths.deallocate()
        arrivals.deallocate()
    }

    /// Packets dropped because the ring was full or the packet larger than a slot.
    public var dropped: Int { droppedCount.load(ordering: .relaxed) }

    /// Producer: queues a copy of `packet` that arrived at `arrival` (nanoseconds of the media
    /// clock). Returns false (and counts a drop) when the ring is full or the packet too large.
    @discardableResult
    public func push(_ packet: UnsafeRawBufferPointer, arrival: UInt64) -> Bool {
        let writeIndex = tail.load(ordering: .relaxed)
        guard packet.count <= slotSize, writeIndex - head.load(ordering: .acquiring) < slotCount else {
            droppedCount.add(1, ordering: .relaxed)
            return false
        }
        let slot = writeIndex % slotCount
        UnsafeMutableRawBufferPointer(rebasing: bytes[(slot * slotSize)..<(slot * slotSize + packet.count)])
            .copyMemory(from: packet)
        lengths[slot] = packet.count
        arrivals[slot] = arrival
        tail.store(writeIndex + 1, ordering: .releasing)
        return true
    }

    /// Consumer: hands each queued packet to `body` (the bytes are valid only during the call),
    /// oldest first, and frees its slot. Returns how many packets were drained.
    @discardableResult
    public func drain(_ body: (UnsafeRawBufferPointer, UInt64) -> Void) -> Int {
        let readIndex = head.load(ordering: .relaxed)
        let end = tail.load(ordering: .acquiring)
        for index in readIndex..<end {
            let slot = index % slotCount
            body(
                UnsafeRawBufferPointer(rebasing: bytes[(slot * slotSize)..<(slot * slotSize + lengths[slot])]),
                arrivals[slot])
            head.store(index + 1, ordering: .releasing)
        }
        return end - readIndex
    }
}
