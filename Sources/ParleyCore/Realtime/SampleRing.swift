import Synchronization

/// A single-producer single-consumer ring of 16-bit samples, lock-free and allocation-free after
/// `init`: one real-time thread writes, another reads (e.g. the playback thread hands the far-end
/// signal to the capture thread's echo canceller). Neither side ever waits for the other.
///
/// Indices only grow (wrapping at 2^64 is centuries away); the producer publishes its index with
/// release ordering after writing samples, the consumer reads it with acquire ordering before
/// reading them, and vice versa for the free space.
public final class SampleRing: Sendable {
    public let capacity: Int
    // Safety: the storage is written only by the single producer in [tail, head + capacity) and
    // read only by the single consumer in [head, tail); the atomics order those accesses.
    private nonisolated(unsafe) let storage: UnsafeMutableBufferPointer<Int16>
    private let head = Atomic<Int>(0)  // next sample to read (consumer-owned)
    private let tail = Atomic<Int>(0)  // next sample to write (producer-owned)

    public init(capacity: Int) {
        precondition(capacity > 0, "ring capacity must be positive")
        self.capacity = capacity
        storage = .allocate(capacity: capacity)
        storage.initialize(repeating: 0)
    }

    deinit {
        storage.deallocate()
    }

    /// Samples ready to read.
    public var available: Int { tail.load(ordering: .acquiring) - head.load(ordering: .acquiring) }

    /// Producer: writes as many of `samples` as fit; returns how many.
    @discardableResult
    public func write(_ samples: UnsafeBufferPointer<Int16>) -> Int {
        let writeIndex = tail.load(ordering: .relaxed)
        let free = capacity - (writeIndex - head.load(ordering: .acquiring))
        let count = min(free, samples.count)
        for offset in 0..<count { storage[(writeIndex + offset) % capacity] = samples[offset] }
        tail.store(writeIndex + count, ordering: .releasing)
        return count
    }

    /// Consumer: reads up to `output.count` samples; returns how many.
    @discardableResult
    public func read(into output: UnsafeMutableBufferPointer<Int16>) -> Int {
        let readIndex = head.load(ordering: .relaxed)
        let count = min(tail.load(ordering: .acquiring) - readIndex, output.count)
        for offset in 0..<count { output[offset] = storage[(readIndex + offset) % capacity] }
        head.store(readIndex + count, ordering: .releasing)
        return count
    }

    /// Consumer: drops up to `count` samples (to catch up when the producer ran ahead).
    @discardableResult
    public func skip(_ count: Int) -> Int {
        let readIndex = head.load(ordering: .relaxed)
        let skipped = min(tail.load(ordering: .acquiring) - readIndex, count)
        head.store(readIndex + skipped, ordering: .releasing)
        return skipped
    }
}
