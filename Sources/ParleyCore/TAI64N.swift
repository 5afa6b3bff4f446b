/// A TAI64N timestamp (https://cr.yp.to/libtai/tai64.html), as WireGuard puts in its handshake
/// initiation: 8 bytes of TAI seconds label (2^62 + 10 + Unix seconds; the 10 s is TAI−UTC in
/// 1970, leap seconds since are ignored) and 4 bytes of nanoseconds, both big-endian. Byte order
/// equals time order, so a responder compares the 12 bytes to reject replayed initiations.
public struct TAI64N: Comparable, Hashable, Sendable, CustomStringConvertible {
    public static let byteCount = 12
    static let unixEpochLabel: UInt64 = (1 << 62) + 10

    /// The TAI64 label (not Unix seconds).
    public let label: UInt64
    /// 0 ..< 1,000,000,000.
    public let nanoseconds: UInt32

    public init(label: UInt64, nanoseconds: UInt32) {
        precondition(nanoseconds < 1_000_000_000)
        self.label = label
        self.nanoseconds = nanoseconds
    }

    /// The timestamp of a wall-clock time given in nanoseconds since the Unix epoch.
    public init(unixNanoseconds: UInt64) {
        self.init(
            label: Self.unixEpochLabel + unixNanoseconds / 1_000_000_000,
            nanoseconds: UInt32(unixNanoseconds % 1_000_000_000))
    }

    /// Parses 12 bytes; nil for a wrong length or nanoseconds out of range.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == Self.byteCount else { return nil }
        var reader = ByteReader(Array(bytes))
        guard let label = try? reader.readU64("TAI64 label"), let nanos = try? reader.readU32("nanoseconds"),
            nanos < 1_000_000_000
        else { return nil }
        self.init(label: label, nanoseconds: nanos)
    }

    public var bytes: [UInt8] { label.bigEndianBytes + nanoseconds.bigEndianBytes }

    /// One nanosecond later: what an initiator sends when its clock has not moved past its last
    /// timestamp, so its timestamps stay strictly increasing.
    public var successor: TAI64N {
        nanoseconds == 999_999_999
            ? TAI64N(label: label + 1, nanoseconds: 0) : TAI64N(label: label, nanoseconds: nanoseconds + 1)
    }

    public static func < (lhs: TAI64N, rhs: TAI64N) -> Bool {
        (lhs.label, lhs.nanoseconds) < (rhs.label, rhs.nanoseconds)
    }

    public var description: String {
        "TAI64N(unix \(Int64(bitPattern: label &- Self.unixEpochLabel)).\(nanoseconds))"
    }
}
