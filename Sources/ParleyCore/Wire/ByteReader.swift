/// A wire-format message that does not parse: what was wrong, and in which field.
public struct WireFormatError: Error, Hashable, Sendable, CustomStringConvertible {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }

    static func truncated(_ field: StaticString, needed: Int, available: Int) -> WireFormatError {
        WireFormatError("message ends inside \(field): needs \(needed) bytes, \(available) left")
    }
}

/// Reads big-endian integers and byte strings front to back from a message, failing with a
/// `WireFormatError` naming the field (never trapping) when the message is shorter than its fields
/// say. Works on an `ArraySlice` so parsing a packet copies nothing until a caller asks for bytes.
public struct ByteReader {
    private let bytes: ArraySlice<UInt8>
    /// Index (in `bytes`' own indices) of the next unread byte.
    private var position: Int

    public init(_ bytes: [UInt8]) {
        self.init(bytes[...])
    }

    public init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        position = bytes.startIndex
    }

    /// Bytes not read yet.
    public var remaining: Int { bytes.endIndex - position }
    public var isAtEnd: Bool { position == bytes.endIndex }

    public mutating func readU8(_ field: StaticString) throws(WireFormatError) -> UInt8 {
        guard remaining >= 1 else { throw .truncated(field, needed: 1, available: remaining) }
        defer { position += 1 }
        return bytes[position]
    }

    public mutating func readU16(_ field: StaticString) throws(WireFormatError) -> UInt16 {
        UInt16(truncatingIfNeeded: try readBigEndian(2, field))
    }

    public mutating func readU32(_ field: StaticString) throws(WireFormatError) -> UInt32 {
        UInt32(truncatingIfNeeded: try readBigEndian(4, field))
    }

    public mutating func readU64(_ field: StaticString) throws(WireFormatError) -> UInt64 {
        try readBigEndian(8, field)
    }

    /// The next `count` bytes, as a slice of the message (no copy).
    public mutating func readSlice(_ count: Int, _ field: StaticString) throws(WireFormatError) -> ArraySlice<UInt8> {
        guard count >= 0, count <= remaining else { throw .truncated(field, needed: count, available: remaining) }
        defer { position += count }
        return bytes[position..<position + count]
    }

    /// The next `count` bytes, copied into an array.
    public mutating func readBytes(_ count: Int, _ field: StaticString) throws(WireFormatError) -> [UInt8] {
        Array(try readSlice(count, field))
    }

    /// Everything not read yet (for a field that runs to the end of the message).
    public mutating func readRest() -> ArraySlice<UInt8> {
        defer { position = bytes.endIndex }
        return bytes[position...]
    }

    /// `count` bytes of UTF-8 text; invalid UTF-8 is an error, never repaired.
    public mutating func readUTF8(_ count: Int, _ field: StaticString) throws(WireFormatError) -> String {
        let raw = try readSlice(count, field)
        guard let text = String(validating: raw, as: UTF8.self) else {
            throw WireFormatError("\(field) is not valid UTF-8")
        }
        return text
    }

    /// Fails unless the whole message was read: trailing bytes mean sender and receiver disagree
    /// about the format, which a strict parser reports rather than ignores.
    public func expectEnd(_ what: StaticString) throws(WireFormatError) {
        guard isAtEnd else { throw WireFormatError("\(remaining) unexpected bytes after \(what)") }
    }

    private mutating func readBigEndian(_ count: Int, _ field: StaticString) throws(WireFormatError) -> UInt64 {
        guard remaining >= count else { throw .truncated(field, needed: count, available: remaining) }
        var value: UInt64 = 0
        for index in position..<position + count { value = value << 8 | UInt64(bytes[index]) }
        position += count
        return value
    }
}

/// Appends big-endian integers and byte strings to a message.
public struct ByteWriter {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 0) {
        bytes.reserveCapacity(capacity)
    }

    public mutating func writeU8(_ value: UInt8) { bytes.append(value) }
    public mutating func writeU16(_ value: UInt16) { writeBigEndian(UInt64(value), 2) }
    public mutating func writeU32(_ value: UInt32) { writeBigEndian(UInt64(value), 4) }
    public mutating func writeU64(_ value: UInt64) { writeBigEndian(value, 8) }
    public mutating func writeBytes(_ value: some Sequence<UInt8>) { bytes.append(contentsOf: value) }

    /// `count` zero bytes (padding, reserved fields).
    public mutating func writeZeros(_ count: Int) { bytes.append(contentsOf: repeatElement(0, count: count)) }

    private mutating func writeBigEndian(_ value: UInt64, _ count: Int) {
        for shift in stride(from: (count - 1) * 8, through: 0, by: -8) {
            bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift)))
        }
    }
}

extension FixedWidthInteger {
    /// The value's bytes, big-endian (network order).
    public var bigEndianBytes: [UInt8] {
        (0..<Self.bitWidth / 8).reversed().map { UInt8(truncatingIfNeeded: self >> ($0 * 8)) }
    }
}
