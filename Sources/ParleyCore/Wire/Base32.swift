/// RFC 4648 §6 base32 (alphabet `a`–`z`, `2`–`7`), written lowercase without padding; decoding
/// ignores case. Used for the invite string: case-insensitive, no `+`, `/`, `-` or `_` for chat
/// apps to break, autocorrect or turn into markup.
public enum Base32 {
    static let alphabet: [UInt8] = Array("abcdefghijklmnopqrstuvwxyz234567".utf8)

    /// The value (0...31) of a base32 character, case-insensitively, or nil.
    public static func value(of character: UInt8) -> UInt8? {
        switch character {
        case UInt8(ascii: "a")...UInt8(ascii: "z"): character - UInt8(ascii: "a")
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): character - UInt8(ascii: "A")
        case UInt8(ascii: "2")...UInt8(ascii: "7"): character - UInt8(ascii: "2") + 26
        default: nil
        }
    }

    /// Number of characters `encode` produces for `byteCount` bytes: ⌈8·n/5⌉.
    public static func encodedLength(byteCount: Int) -> Int { (byteCount * 8 + 4) / 5 }

    /// `bytes` in lowercase base32 without padding. Unused low bits of the last character are 0.
    public static func encode(_ bytes: some Collection<UInt8>) -> String {
        var output: [UInt8] = []
        output.reserveCapacity(encodedLength(byteCount: bytes.count))
        var buffer: UInt32 = 0
        var bits = 0
        for byte in bytes {
            buffer = buffer << 8 | UInt32(byte)
            bits += 8
            while bits >= 5 {
                bits -= 5
                output.append(alphabet[Int(buffer >> UInt32(bits) & 31)])
            }
        }
        if bits > 0 { output.append(alphabet[Int(buffer << UInt32(5 - bits) & 31)]) }
        return String(decoding: output, as: UTF8.self)
    }

    /// The bytes of base32 `characters` (ASCII): ⌊5·n/8⌋ bytes; bits left over at the end (fewer
    /// than 8) are dropped, so a truncated string still decodes to its complete leading bytes.
    /// Returns the index of the first character outside the alphabet instead, if any.
    public static func decode(_ characters: some Collection<UInt8>) -> Result<[UInt8], InvalidCharacter> {
        var output: [UInt8] = []
        output.reserveCapacity(characters.count * 5 / 8)
        var buffer: UInt32 = 0
        var bits = 0
        for (offset, character) in characters.enumerated() {
            guard let value = value(of: character) else { return .failure(InvalidCharacter(offset: offset)) }
            buffer = buffer << 5 | UInt32(value)
            bits += 5
            if bits >= 8 {
                bits -= 8
                output.append(UInt8(truncatingIfNeeded: buffer >> UInt32(bits)))
            }
        }
        return .success(output)
    }

    /// A character outside the base32 alphabet, at `offset` (0-based) in the decoded text.
    public struct InvalidCharacter: Error, Hashable, Sendable {
        public let offset: Int
        public init(offset: Int) { self.offset = offset }
    }
}
