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

    /// The twelve digits without spaces (empty for `unavailable`).
    public let digits: String
    /// Why there is no code, for `unavailable`.
    public let unavailableReason: String?

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
        unavailableReason = nil
    }

    private init(unavailable reason: String) {
        digits = ""
        unavailableReason = reason
    }

    /// The identity-only code the meeting showed before `SecurityCodeAgreement` (no nonces, no
    /// names: a man in the middle could grind keys for a collision, issue 15 finding 7). Kept only
    /// until the meeting runs the agreement; with more than 255 members it is unavailable rather
    /// than a crash.
    public init(roomID: [UInt8], memberIdentities: [[UInt8]]) {
        let members = Array(Set(memberIdentities)).sorted { $0.lexicographicallyPrecedes($1) }
        guard members.count <= 255 else {
            self.init(unavailable: "more than 255 members in the meeting")
            return
        }
        let input = Array("parley/v1/security-code\0".utf8) + roomID + [UInt8(members.count)] + members.flatMap { $0 }
        // 64 is a valid BLAKE2b output length and the count is positive, so this cannot throw.
        self.init(digitsOf: try! BLAKE2b.chain(input, iterations: 16384, outputLength: 64))
    }

    /// Grouped for reading aloud: `1234 5678 9012`; or why there is none.
    public var description: String {
        if let unavailableReason { return "unavailable: \(unavailableReason)" }
        return stride(from: 0, to: Self.digitCount, by: 4).map { start in
            let from = digits.index(digits.startIndex, offsetBy: start)
            return String(digits[from..<digits.index(from, offsetBy: 4)])
        }.joined(separator: " ")
    }
}
