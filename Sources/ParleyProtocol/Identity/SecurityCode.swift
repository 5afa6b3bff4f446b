import ParleyCore
import Sodium

/// The meeting security code (docs/PROTOCOL.md §11.1): twelve digits every member shows for the
/// same meeting, read aloud to check that nobody sits in the middle. `SecurityCodeAgreement`
/// arrives at it; this is the value and how it is shown.
///
/// ```
/// code = (first 8 bytes of BLAKE2b-512("parley/v1/code\0" || view_hash[32] || nonce_1 || … || nonce_n)
///         as a big-endian u64) mod 10^12, 12 digits with leading zeros
/// ```
/// (the nonces in the order of the view's members).
public struct SecurityCode: Sendable, Hashable, CustomStringConvertible {
    public static let digitCount = 12
    static let context: [UInt8] = Array("parley/v1/code\0".utf8)

    /// The twelve digits without spaces.
    public let digits: String

    /// The code of a view whose members revealed `nonces` (in the view's member order).
    init(viewHash: [UInt8], nonces: [[UInt8]]) {
        var writer = ByteWriter()
        writer.writeBytes(Self.context)
        writer.writeBytes(viewHash)
        for nonce in nonces { writer.writeBytes(nonce) }
        // 64 is a valid BLAKE2b output length: this cannot throw.
        let h = try! BLAKE2b.hash(writer.bytes, outputLength: 64)
        self.init(digitsOf: h)
    }

    private init(digitsOf h: [UInt8]) {
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
