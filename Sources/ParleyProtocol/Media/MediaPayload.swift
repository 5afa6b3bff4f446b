/// The media payload: one audio frame inside a transport packet's plaintext, after the transport
/// layer's `inner_type = 0x01` byte (docs/PROTOCOL.md §9).
///
/// ```text
/// offset  size  field
/// 0       1     version            = 1
/// 1       1     redundant_count R  (0...4)
/// 2       2     sequence           u16, +1 per payload sent (wraps)
/// 4       4     timestamp          u32, 48 kHz samples of the primary frame's first sample (wraps)
/// 8       2     duration           u16, samples of the primary frame (120, 240, 480, 960, 1920, 2880)
/// 10      6×R   block headers, oldest copy first:
///                 timestamp_offset u16 (primary timestamp − this copy's timestamp, ≥ its duration)
///                 duration         u16 (as above)
///                 length           u16 (1...)
/// 10+6R   ...   the R copies' Opus packets in header order, then the primary Opus packet (the rest, ≥ 1 byte)
/// ```
///
/// Redundant copies follow RFC 2198 §3: they repeat the sender's previous payloads' primary
/// frames, so copy `j` (0-based, oldest first) has sequence number `sequence − (R − j)`.
/// Parsing never allocates; the parsed value holds offsets into the caller's bytes.
public struct MediaPayload: Sendable, Hashable {
    public static let version: UInt8 = 1
    /// RFC 2198 allows more; four copies already survive a burst of four lost packets.
    public static let maximumRedundantCount = 4
    /// Fixed header before the block headers.
    public static let headerSize = 10
    public static let blockHeaderSize = 6
    /// Upper bound for a whole media payload, so a transport packet stays under a common path MTU
    /// (1200 bytes of plaintext + transport overhead + UDP/IP headers < 1280).
    public static let maximumSize = 1200
    /// Opus frame durations in 48 kHz samples: 2.5, 5, 10, 20, 40 and 60 ms (RFC 6716 §2.1.4).
    public static let validDurations: [Int] = [120, 240, 480, 960, 1920, 2880]

    /// One Opus frame inside the payload, located by byte offsets into the payload.
    public struct Block: Sendable, Hashable {
        public var sequence: UInt16
        public var timestamp: UInt32
        /// Samples at 48 kHz.
        public var duration: Int
        /// Where the Opus packet lies in the payload bytes.
        public var range: Range<Int>
    }

    public var sequence: UInt16
    public var timestamp: UInt32
    public var primary: Block
    public var redundantCount: Int

    /// Parses and fully validates `bytes` (the plaintext after `inner_type`). Never traps.
    public init(parsing bytes: UnsafeRawBufferPointer) throws(MediaPayloadError) {
        guard bytes.count >= Self.headerSize else { throw .truncated(needed: Self.headerSize, have: bytes.count) }
        guard bytes.count <= Self.maximumSize else { throw .tooLarge(bytes.count) }
        guard bytes[0] == Self.version else { throw .unsupportedVersion(bytes[0]) }
        let count = Int(bytes[1])
        guard count <= Self.maximumRedundantCount else { throw .tooManyRedundantBlocks(count) }
        let sequence = bytes.readUInt16(at: 2)
        let timestamp = bytes.readUInt32(at: 4)
        let duration = Int(bytes.readUInt16(at: 8))
        guard Self.validDurations.contains(duration) else { throw .invalidDuration(duration) }
        let dataStart = Self.headerSize + Self.blockHeaderSize * count
        guard bytes.count >= dataStart else { throw .truncated(needed: dataStart, have: bytes.count) }

        var offset = dataStart
        // The previous copy's timestamp offset: copies must be oldest first and must not overlap
        // each other or the primary.
        var previousEnd: Int? = nil
        for index in 0..<count {
            let header = Self.headerSize + Self.blockHeaderSize * index
            let timestampOffset = Int(bytes.readUInt16(at: header))
            let blockDuration = Int(bytes.readUInt16(at: header + 2))
            let length = Int(bytes.readUInt16(at: header + 4))
            guard Self.validDurations.contains(blockDuration) else { throw .invalidDuration(blockDuration) }
            guard length > 0 else { throw .emptyBlock(index) }
            // Offsets count back from the primary: this copy covers [-timestampOffset, -timestampOffset + duration).
            let start = -timestampOffset
            guard start + blockDuration <= 0, previousEnd.map({ start >= $0 }) ?? true else {
                throw .overlappingBlocks(index)
            }
            previousEnd = start + blockDuration
            offset += length
        }
        // The primary Opus packet is the rest and has at least one byte (its TOC, RFC 6716 §3.1).
        guard offset < bytes.count else { throw .truncated(needed: offset + 1, have: bytes.count) }
        self.sequence = sequence
        self.timestamp = timestamp
        self.redundantCount = count
        self.primary = Block(sequence: sequence, timestamp: timestamp, duration: duration, range: offset..<bytes.count)
    }

    /// The redundant copy at `index` (0 = oldest), read again from the same `bytes` that were parsed.
    public func redundantBlock(_ index: Int, in bytes: UnsafeRawBufferPointer) -> Block {
        precondition(index >= 0 && index < redundantCount, "redundant block index out of range")
        var start = Self.headerSize + Self.blockHeaderSize * redundantCount
        for earlier in 0..<index {
            start += Int(bytes.readUInt16(at: Self.headerSize + Self.blockHeaderSize * earlier + 4))
        }
        let header = Self.headerSize + Self.blockHeaderSize * index
        let length = Int(bytes.readUInt16(at: header + 4))
        return Block(
            sequence: sequence &- UInt16(redundantCount - index),
            timestamp: timestamp &- UInt32(bytes.readUInt16(at: header)),
            duration: Int(bytes.readUInt16(at: header + 2)),
            range: start..<(start + length))
    }

    /// Size of the payload that `write` produces.
    public static func size(primaryLength: Int, redundantLengths: some Sequence<Int>) -> Int {
        var size = headerSize + primaryLength
        for length in redundantLengths { size += blockHeaderSize + length }
        return size
    }

    /// Writes a payload into `output` without allocating; returns its length. The caller checks
    /// the size first (`size(primaryLength:redundantLengths:)`) and gives valid blocks: this traps
    /// on misuse, as it never sees network input.
    /// - Parameter redundant: earlier frames, oldest first, each with its own timestamp and duration.
    public static func write(
        sequence: UInt16, primary: Frame, redundant: some Collection<Frame>, into output: UnsafeMutableRawBufferPointer
    ) -> Int {
        precondition(redundant.count <= maximumRedundantCount, "too many redundant blocks")
        precondition(validDurations.contains(primary.duration), "invalid primary duration")
        let total = size(primaryLength: primary.opus.count, redundantLengths: redundant.lazy.map(\.opus.count))
        precondition(total <= output.count && total <= maximumSize, "media payload does not fit")
        output[0] = version
        output[1] = UInt8(redundant.count)
        output.writeUInt16(sequence, at: 2)
        output.writeUInt32(primary.timestamp, at: 4)
        output.writeUInt16(UInt16(primary.duration), at: 8)
        var header = headerSize
        var data = headerSize + blockHeaderSize * redundant.count
        for copy in redundant {
            let offset = primary.timestamp &- copy.timestamp
            precondition(offset <= UInt16.max && Int(offset) >= copy.duration, "copy too old or overlapping")
            output.writeUInt16(UInt16(offset), at: header)
            output.writeUInt16(UInt16(copy.duration), at: header + 2)
            output.writeUInt16(UInt16(copy.opus.count), at: header + 4)
            header += blockHeaderSize
            UnsafeMutableRawBufferPointer(rebasing: output[data..<(data + copy.opus.count)]).copyMemory(from: copy.opus)
            data += copy.opus.count
        }
        UnsafeMutableRawBufferPointer(rebasing: output[data..<(data + primary.opus.count)]).copyMemory(
            from: primary.opus)
        return data + primary.opus.count
    }

    /// A frame to write: its Opus packet is borrowed for the duration of `write`.
    public struct Frame {
        public var timestamp: UInt32
        public var duration: Int
        public var opus: UnsafeRawBufferPointer

        public init(timestamp: UInt32, duration: Int, opus: UnsafeRawBufferPointer) {
            self.timestamp = timestamp
            self.duration = duration
            self.opus = opus
        }
    }

    /// Fuzz entry point (for `Scripts/fuzz` and the mutation test): parses arbitrary bytes; when
    /// they parse, every block must lie inside the input and writing the payload again must
    /// reproduce the input exactly. Traps (which a fuzzer reports) only on a parser bug.
    public static func fuzzOneInput(_ bytes: UnsafeRawBufferPointer) {
        guard let payload = try? MediaPayload(parsing: bytes) else { return }
        var copies: [Frame] = []
        for index in 0..<payload.redundantCount {
            let block = payload.redundantBlock(index, in: bytes)
            precondition(block.range.lowerBound >= 0 && block.range.upperBound <= bytes.count)
            copies.append(Frame(timestamp: block.timestamp, duration: block.duration, opus: bytes[block.range].rebased))
        }
        let primary = Frame(
            timestamp: payload.timestamp, duration: payload.primary.duration, opus: bytes[payload.primary.range].rebased
        )
        let output = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
        defer { output.deallocate() }
        let length = write(sequence: payload.sequence, primary: primary, redundant: copies, into: output)
        precondition(length == bytes.count && output.elementsEqual(bytes), "media payload did not round-trip")
    }
}

/// Why a media payload was rejected. The receiver drops the payload and counts it.
public enum MediaPayloadError: Error, Hashable, Sendable, CustomStringConvertible {
    case truncated(needed: Int, have: Int)
    case tooLarge(Int)
    case unsupportedVersion(UInt8)
    case tooManyRedundantBlocks(Int)
    case invalidDuration(Int)
    case emptyBlock(Int)
    case overlappingBlocks(Int)

    public var description: String {
        switch self {
        case .truncated(let needed, let have): "media payload truncated: needs \(needed) bytes, has \(have)"
        case .tooLarge(let size): "media payload of \(size) bytes exceeds \(MediaPayload.maximumSize)"
        case .unsupportedVersion(let version): "media payload version \(version) is not supported (expected 1)"
        case .tooManyRedundantBlocks(let count):
            "media payload has \(count) redundant blocks (at most \(MediaPayload.maximumRedundantCount))"
        case .invalidDuration(let samples): "media payload frame duration \(samples) samples is not an Opus duration"
        case .emptyBlock(let index): "media payload redundant block \(index) is empty"
        case .overlappingBlocks(let index): "media payload redundant block \(index) overlaps a later block"
        }
    }
}

extension Slice where Base == UnsafeRawBufferPointer {
    var rebased: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: self) }
}

extension UnsafeRawBufferPointer {
    /// Big-endian reads (docs/PROTOCOL.md §1); callers check bounds first.
    func readUInt16(at offset: Int) -> UInt16 { UInt16(self[offset]) << 8 | UInt16(self[offset + 1]) }
    func readUInt32(at offset: Int) -> UInt32 {
        UInt32(readUInt16(at: offset)) << 16 | UInt32(readUInt16(at: offset + 2))
    }
}

extension UnsafeMutableRawBufferPointer {
    func writeUInt16(_ value: UInt16, at offset: Int) {
        self[offset] = UInt8(value >> 8)
        self[offset + 1] = UInt8(truncatingIfNeeded: value)
    }
    func writeUInt32(_ value: UInt32, at offset: Int) {
        writeUInt16(UInt16(value >> 16), at: offset)
        writeUInt16(UInt16(truncatingIfNeeded: value), at: offset + 2)
    }
}
