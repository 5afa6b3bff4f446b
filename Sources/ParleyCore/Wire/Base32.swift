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
        let input = Array(bytes)
        var output = [UInt8](repeating: 0, count: encodedLength(byteCount: input.count))
        input.withUnsafeBytes { input in output.withUnsafeMutableBytes { encode(input, into: $0) } }
        return String(decoding: output, as: UTF8.self)
    }

    /// Writes the characters of `bytes` into `output`, which holds exactly
    /// `encodedLength(byteCount: bytes.count)` bytes: for callers that keep secrets out of
    /// memory they cannot zero (the invite).
    public static func encode(_ bytes: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) {
        precondition(output.count == encodedLength(byteCount: bytes.count))
        var buffer: UInt32 = 0
        var bits = 0
        var written = 0
        for byte in bytes {
            buffer = buffer << 8 | UInt32(byte)
            bits += 8
            while bits >= 5 {
                bits -= 5
                output[written] = alphabet[Int(buffer >> UInt32(bits) & 31)]
                written += 1
            }
        }
        if bits > 0 { output[written] = alphabet[Int(buffer << UInt32(5 - bits) & 31)] }
    }

    /// The bytes of base32 `characters` (ASCII): ⌊5·n/8⌋ bytes; bits left over at the end (fewer
    /// than 8) are dropped, so a truncated string still decodes to its complete leading bytes.
    /// Returns the index of the first character outside the alphabet instead, if any.
    public static func decode(_ characters: some Collection<UInt8>) -> Result<[UInt8], InvalidCharacter> {
        let input = Array(characters)
        var output = [UInt8](repeating: 0, count: input.count * 5 / 8)
        let invalid = input.withUnsafeBytes { input in output.withUnsafeMutableBytes { decode(input, into: $0) } }
        return invalid.map { .failure($0) } ?? .success(output)
    }

    /// Decodes `characters` into `output`, which holds exactly ⌊5·n/8⌋ bytes; returns the first
    /// character outside the alphabet, if any (`output` is then partly written).
    public static func decode(
        _ characters: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer
    ) -> InvalidCharacter? {
        precondition(output.count == characters.count * 5 / 8)
        var buffer: UInt32 = 0
        var bits = 0
        var written = 0
        for (offset, character) in characters.enumerated() {
            guard let value = value(of: character) else { return InvalidCharacter(offset: offset) }
            buffer = buffer << 5 | UInt32(value)
            bits += 5
            if bits >= 8 {
                bits -= 8
                output[written] = UInt8(truncatingIfNeeded: buffer >> UInt32(bits))
                written += 1
            }
        }
        return nil
    }

    /// A character outside the base32 alphabet, at `offset` (0-based) in the decoded text.
    public struct InvalidCharacter: Error, Hashable, Sendable {
        public let offset: Int
        public init(offset: Int) { self.offset = offset }
    }
}
