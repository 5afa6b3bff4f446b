import Sodium

/// The meeting security code (docs/PROTOCOL.md §11): twelve digits every member computes from the
/// room id and the identity keys of everyone in the meeting, read aloud to check that nobody sits
/// in the middle. It changes whenever someone joins or leaves.
///
/// ```
/// input = "parley/v1/security-code\0" || room_id[32] || n: u8 || identity_1 || ... || identity_n
///         (identities sorted ascending as bytes, without duplicates, the reader's own included)
/// h     = BLAKE2b-512(input); then 16383 times h = BLAKE2b-512(h || input)
/// code  = (first 8 bytes of h as a big-endian u64) mod 10^12, 12 digits with leading zeros
/// ```
/// The iterations make each guess of an attacker who grinds identity keys for a matching code
/// cost 2^14 hashes, about 2^54 work for an even chance at 40 bits.
public struct SecurityCode: Sendable, Hashable, CustomStringConvertible {
    public static let digitCount = 12
    public static let iterations = 16384
    static let context: [UInt8] = Array("parley/v1/security-code\0".utf8)

    /// The twelve digits without spaces.
    public let digits: String

    public init(roomID: [UInt8], memberIdentities: [[UInt8]]) {
        let members = Array(Set(memberIdentities)).sorted { $0.lexicographicallyPrecedes($1) }
        precondition(members.count <= 255, "a meeting has at most 255 members")
        let input = Self.context + roomID + [UInt8(members.count)] + members.flatMap { $0 }
        // 64 is a valid BLAKE2b output length and the count is positive, so this cannot throw.
        let h = try! BLAKE2b.chain(input, iterations: Self.iterations, outputLength: 64)
        let value = h.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) } % 1_000_000_000_000
        let text = String(value)
        digits = String(repeating: "0", count: Self.digitCount - text.count) + text
    }

    /// Grouped for reading aloud: `1234 5678 9012`.
    public var description: String {
        stride(from: 0, to: Self.digitCount, by: 4).map { start in
            let from = digits.index(digits.startIndex, offsetBy: start)
            return String(digits[from..<digits.index(from, offsetBy: 4)])
        }.joined(separator: " ")
    }
}
