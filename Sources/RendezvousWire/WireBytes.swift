/// Reads big-endian integers and byte strings from a message, front to back, failing with a
/// `RendezvousWireError` (never trapping) when the message is shorter than its fields say.
struct WireReader {
    private let bytes: UnsafeRawBufferPointer
    private(set) var offset = 0

    init(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    var remaining: Int { bytes.count - offset }
    var isAtEnd: Bool { offset == bytes.count }

    mutating func readU8(_ field: StaticString) throws(RendezvousWireError) -> UInt8 {
        try readBytes(1, field)[0]
    }

    mutating func readU16(_ field: StaticString) throws(RendezvousWireError) -> UInt16 {
        let b = try readBytes(2, field)
        return UInt16(b[0]) << 8 | UInt16(b[1])
    }

    mutating func readU32(_ field: StaticString) throws(RendezvousWireError) -> UInt32 {
        let b = try readBytes(4, field)
        return UInt32(b[0]) << 24 | UInt32(b[1]) << 16 | UInt32(b[2]) << 8 | UInt32(b[3])
    }

    mutating func readBytes(_ count: Int, _ field: StaticString) throws(RendezvousWireError) -> [UInt8] {
        guard count >= 0, count <= remaining else {
            throw .truncated(field: "\(field)", needed: count, available: remaining)
        }
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }

    /// Everything that is left (for payloads that run to the end of the message).
    mutating func readRest() -> [UInt8] {
        defer { offset = bytes.count }
        return Array(bytes[offset...])
    }

    mutating func readUTF8(_ count: Int, _ field: StaticString) throws(RendezvousWireError) -> String {
        let raw = try readBytes(count, field)
        guard let text = String(validating: raw, as: UTF8.self) else { throw .invalidUTF8(field: "\(field)") }
        return text
    }

    /// Fails unless the whole message was consumed: trailing bytes mean the sender and receiver
    /// disagree about the format, which a strict parser reports rather than ignores.
    func expectEnd(_ message: @autoclosure () -> String) throws(RendezvousWireError) {
        guard isAtEnd else { throw .trailingBytes(message: message(), count: remaining) }
    }
}

/// Appends big-endian integers and byte strings to a message.
struct WireWriter {
    private(set) var bytes: [UInt8] = []

    init(capacity: Int = 0) {
        bytes.reserveCapacity(capacity)
    }

    mutating func writeU8(_ value: UInt8) { bytes.append(value) }

    mutating func writeU16(_ value: UInt16) {
        bytes.append(UInt8(truncatingIfNeeded: value >> 8))
        bytes.append(UInt8(truncatingIfNeeded: value))
    }

    mutating func writeU32(_ value: UInt32) {
        for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: value >> shift)) }
    }

    mutating func writeBytes(_ value: some Sequence<UInt8>) { bytes.append(contentsOf: value) }

    /// A `u16` length followed by the UTF-8 bytes of `text`. The caller has checked the length
    /// fits (`RendezvousMessage.validate`), so this only asserts it.
    mutating func writeLengthPrefixedUTF8(_ text: String) {
        let utf8 = Array(text.utf8)
        precondition(utf8.count <= Int(UInt16.max), "string longer than a u16 length allows")
        writeU16(UInt16(utf8.count))
        writeBytes(utf8)
    }
}

extension Array where Element == UInt8 {
    /// `withUnsafeBytes` for a typed-throws parser (`withUnsafeBytes` itself only rethrows
    /// untyped errors).
    func parse<T>(
        with parser: (UnsafeRawBufferPointer) throws(RendezvousWireError) -> T
    ) throws(RendezvousWireError) -> T {
        try withUnsafeBytes { raw in Result { () throws(RendezvousWireError) in try parser(raw) } }.get()
    }
}
