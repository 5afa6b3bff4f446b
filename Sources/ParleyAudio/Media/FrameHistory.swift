public import ParleyProtocol

/// The sender's last few encoded frames, kept so each new media payload can carry copies of them
/// (RFC 2198 redundancy, docs/PROTOCOL.md §9). Fixed storage; `append` and `writePayload` never
/// allocate (they run on the capture thread once per frame).
public final class FrameHistory {
    public let capacity: Int
    public let maximumFrameSize: Int
    private let bytes: UnsafeMutableRawBufferPointer
    private let lengths: UnsafeMutableBufferPointer<Int>
    private let timestamps: UnsafeMutableBufferPointer<UInt32>
    private let durations: UnsafeMutableBufferPointer<Int>
    private var newest = -1
    public private(set) var count = 0

    public init(capacity: Int = MediaPayload.maximumRedundantCount, maximumFrameSize: Int = MediaPayload.maximumSize) {
        precondition(capacity > 0 && maximumFrameSize > 0)
        self.capacity = capacity
        self.maximumFrameSize = maximumFrameSize
        bytes = .allocate(byteCount: capacity * maximumFrameSize, alignment: 8)
        bytes.initializeMemory(as: UInt8.self, repeating: 0)
        lengths = .allocate(capacity: capacity)
        lengths.initialize(repeating: 0)
        timestamps = .allocate(capacity: capacity)
        timestamps.initialize(repeating: 0)
        durations = .allocate(capacity: capacity)
        durations.initialize(repeating: 0)
    }

    deinit {
        bytes.deallocate()
        lengths.deallocate()
        timestamps.deallocate()
        durations.deallocate()
    }

    /// Forgets every frame (after a stream restart).
    public func removeAll() {
        count = 0
        newest = -1
    }

    /// Remembers a frame that was just sent (frames too large to copy are not remembered).
    public func append(_ frame: MediaPayload.Frame) {
        guard frame.opus.count <= maximumFrameSize else {
            removeAll()
            return
        }
        newest = (newest + 1) % capacity
        count = min(count + 1, capacity)
        let start = newest * maximumFrameSize
        UnsafeMutableRawBufferPointer(rebasing: bytes[start..<(start + frame.opus.count)]).copyMemory(from: frame.opus)
        lengths[newest] = frame.opus.count
        timestamps[newest] = frame.timestamp
        durations[newest] = frame.duration
    }

    /// The frame sent `age` frames ago (1 = the previous one).
    func frame(age: Int) -> MediaPayload.Frame {
        let slot = ((newest - age + 1) % capacity + capacity) % capacity
        let start = slot * maximumFrameSize
        return MediaPayload.Frame(
            timestamp: timestamps[slot], duration: durations[slot],
            opus: UnsafeRawBufferPointer(rebasing: bytes[start..<(start + lengths[slot])]))
    }

    /// Writes a media payload for `primary` carrying copies of up to `copies` previous frames:
    /// as many of the newest as fit in `MediaPayload.maximumSize` and in a 16-bit timestamp offset.
    /// Returns the payload's length.
    public func writePayload(
        sequence: UInt16, primary: MediaPayload.Frame, copies: Int, into output: UnsafeMutableRawBufferPointer
    ) -> Int {
        var usable = 0
        var size = MediaPayload.size(primaryLength: primary.opus.count, redundantLengths: EmptyCollection())
        var previousStart = primary.timestamp
        while usable < min(copies, count, MediaPayload.maximumRedundantCount) {
            let candidate = frame(age: usable + 1)
            let offset = primary.timestamp &- candidate.timestamp
            let gap = previousStart &- candidate.timestamp
            let grown = size + MediaPayload.blockHeaderSize + candidate.opus.count
            guard offset <= UInt32(UInt16.max), Int(gap) >= candidate.duration, gap <= offset,
                grown <= min(output.count, MediaPayload.maximumSize)
            else { break }
            size = grown
            previousStart = candidate.timestamp
            usable += 1
        }
        return MediaPayload.write(
            sequence: sequence, primary: primary, redundant: Copies(history: self, count: usable), into: output)
    }

    /// The newest `count` frames, oldest first, as a collection that allocates nothing.
    struct Copies: RandomAccessCollection {
        let history: FrameHistory
        let count: Int
        var startIndex: Int { 0 }
        var endIndex: Int { count }
        subscript(position: Int) -> MediaPayload.Frame { history.frame(age: count - position) }
    }
}
