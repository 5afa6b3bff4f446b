import ParleyCore
import Testing

@Suite("Base32, byte framing, TAI64N")
struct WireTests {
    /// RFC 4648 §10, lowercased and without padding.
    @Test(arguments: [
        ("", ""), ("f", "my"), ("fo", "mzxq"), ("foo", "mzxw6"), ("foob", "mzxw6yq"), ("fooba", "mzxw6ytb"),
        ("foobar", "mzxw6ytboi"),
    ])
    func base32MatchesRFC4648(plain: String, encoded: String) throws {
        #expect(Base32.encode(Array(plain.utf8)) == encoded)
        #expect(Base32.encodedLength(byteCount: plain.utf8.count) == encoded.count)
        #expect(try Base32.decode(Array(encoded.utf8)).get() == Array(plain.utf8))
        #expect(try Base32.decode(Array(encoded.uppercased().utf8)).get() == Array(plain.utf8))
    }

    @Test func base32RoundTripsEveryLengthAndReportsBadCharacters() throws {
        var generator = SeededGenerator(seed: 7)
        for length in 0..<70 {
            let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            #expect(try Base32.decode(Array(Base32.encode(bytes).utf8)).get() == bytes)
        }
        #expect(throws: Base32.InvalidCharacter(offset: 3)) { try Base32.decode(Array("abc1ef".utf8)).get() }
        #expect(throws: Base32.InvalidCharacter(offset: 0)) { try Base32.decode(Array("=".utf8)).get() }
        // A truncated string decodes to its complete leading bytes.
        #expect(try Base32.decode(Array("mzxw6yt".utf8)).get() == Array("foob".utf8))
    }

    @Test func readerReadsBigEndianAndNamesTheTruncatedField() throws {
        var writer = ByteWriter()
        writer.writeU8(0xAB)
        writer.writeU16(0x0102)
        writer.writeU32(0x0304_0506)
        writer.writeU64(0x0708_090A_0B0C_0D0E)
        writer.writeBytes([0xFF, 0xFE])
        writer.writeZeros(2)
        #expect(writer.bytes == [0xAB, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xFF, 0xFE, 0, 0])
        var reader = ByteReader(writer.bytes)
        #expect(try reader.readU8("a") == 0xAB)
        #expect(try reader.readU16("b") == 0x0102)
        #expect(try reader.readU32("c") == 0x0304_0506)
        #expect(try reader.readU64("d") == 0x0708_090A_0B0C_0D0E)
        #expect(try reader.readBytes(2, "e") == [0xFF, 0xFE])
        #expect(throws: WireFormatError("2 unexpected bytes after the test message")) {
            try reader.expectEnd("the test message")
        }
        #expect(throws: WireFormatError("message ends inside the nonce: needs 4 bytes, 2 left")) {
            try reader.readU32("the nonce")
        }
        #expect(Array(reader.readRest()) == [0, 0])
        #expect(reader.isAtEnd)
        var text = ByteReader([0xC3, 0x28])
        #expect(throws: WireFormatError("name is not valid UTF-8")) { try text.readUTF8(2, "name") }
        var slice = ByteReader(Array([9, 9, 1, 2, 3])[2...])
        #expect(try slice.readU16("x") == 0x0102)
        #expect(slice.remaining == 1)
    }

    @Test func tai64nOrdersLikeItsBytes() throws {
        let a = TAI64N(unixNanoseconds: 1_700_000_000_123_456_789)
        #expect(a.label == (1 << 62) + 10 + 1_700_000_000)
        #expect(a.nanoseconds == 123_456_789)
        #expect(TAI64N(bytes: a.bytes) == a)
        #expect(a.bytes == [0x40, 0, 0, 0, 0x65, 0x53, 0xF1, 0x0A, 0x07, 0x5B, 0xCD, 0x15])
        let b = TAI64N(label: a.label, nanoseconds: 999_999_999)
        #expect(b.successor == TAI64N(label: a.label + 1, nanoseconds: 0))
        #expect(a < a.successor && a.successor < b && b < b.successor)
        #expect(a.bytes.lexicographicallyPrecedes(b.bytes))
        #expect(TAI64N(bytes: [UInt8](repeating: 0xFF, count: 12)) == nil)
        #expect(TAI64N(bytes: [UInt8](repeating: 0, count: 11)) == nil)
    }
}
