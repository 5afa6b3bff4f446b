internal import COpus

/// An error code from libopus (`OPUS_BAD_ARG`, `OPUS_BUFFER_TOO_SMALL`, ...), with libopus' own text.
public struct OpusError: Error, RawRepresentable, Hashable, CustomStringConvertible, Sendable {
    public let rawValue: Int32

    public init(rawValue: Int32) {
        self.rawValue = rawValue
    }

    public var description: String {
        "opus: " + String(cString: opus_strerror(rawValue)) + " (\(rawValue))"
    }

    public static let badArgument = OpusError(rawValue: OPUS_BAD_ARG)
    public static let bufferTooSmall = OpusError(rawValue: OPUS_BUFFER_TOO_SMALL)
    public static let invalidPacket = OpusError(rawValue: OPUS_INVALID_PACKET)
    public static let unimplemented = OpusError(rawValue: OPUS_UNIMPLEMENTED)

    /// Turns a libopus return value into a result: non-negative values pass through.
    static func check(_ code: Int32) throws(OpusError) -> Int32 {
        guard code >= 0 else { throw OpusError(rawValue: code) }
        return code
    }
}
