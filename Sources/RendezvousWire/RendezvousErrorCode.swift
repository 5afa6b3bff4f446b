/// An ERROR code (docs/PROTOCOL.md §4.4). Open: a code this version does not know is kept, not
/// rejected, so a newer server's errors still reach the user with their reason text.
public struct RendezvousErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// Unparsable, unknown type, or out of sequence.
    public static let malformed = Self(rawValue: 1)
    /// The join proof did not verify (also the answer for rooms that do not exist: §4.3).
    public static let badProof = Self(rawValue: 2)
    public static let roomFull = Self(rawValue: 3)
    public static let rateLimited = Self(rawValue: 4)
    public static let tooLarge = Self(rawValue: 5)
    public static let tooManyConnections = Self(rawValue: 6)
    public static let timeout = Self(rawValue: 7)
    public static let slowReader = Self(rawValue: 8)
    public static let unsupported = Self(rawValue: 9)
    /// The request path's shard key is not the JOIN's room's (§4.1): a load balancer routed the
    /// member by another room's key, so it would have met an empty copy of its room.
    public static let misrouted = Self(rawValue: 10)

    public static let allKnown: [Self] = [
        .malformed, .badProof, .roomFull, .rateLimited, .tooLarge, .tooManyConnections, .timeout, .slowReader,
        .unsupported, .misrouted,
    ]

    /// The name §4.4 gives the code (`room-full`), or `code-N` for one it does not know.
    public var name: String {
        switch self {
        case .malformed: "malformed"
        case .badProof: "bad-proof"
        case .roomFull: "room-full"
        case .rateLimited: "rate-limited"
        case .tooLarge: "too-large"
        case .tooManyConnections: "too-many-connections"
        case .timeout: "timeout"
        case .slowReader: "slow-reader"
        case .unsupported: "unsupported"
        case .misrouted: "misrouted"
        default: "code-\(rawValue)"
        }
    }

    /// Whether a client should reconnect after this error (§4.4): only when the cause may pass.
    public var isRetryable: Bool { self == .timeout || self == .slowReader }

    public var description: String { name }
}

/// An ERROR message: a code and a human-readable reason (which never carries other members' data).
public struct RendezvousError: Error, Hashable, Sendable, CustomStringConvertible {
    public var code: RendezvousErrorCode
    public var reason: String

    public init(_ code: RendezvousErrorCode, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    public var description: String { "\(code.name): \(reason)" }
}
