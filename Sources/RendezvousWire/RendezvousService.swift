/// A helper the rendezvous offers its admitted members, listed in WELCOME (docs/PROTOCOL.md §4.2).
public enum RendezvousService: Hashable, Sendable {
    /// A STUN server, `host:port` (an IPv6 host in brackets).
    case stun(String)
    /// Short-lived TURN credentials for a TURN server (coturn `use-auth-secret`).
    case turn(TURNCredential)
    /// A kind this version does not know; kept so it can be skipped and re-encoded unchanged.
    case unknown(kind: UInt8, value: [UInt8])

    static let stunKind: UInt8 = 0x01
    static let turnKind: UInt8 = 0x02

    var kind: UInt8 {
        switch self {
        case .stun: Self.stunKind
        case .turn: Self.turnKind
        case .unknown(let kind, _): kind
        }
    }

    /// The entry's value bytes (without kind and length).
    var value: [UInt8] {
        switch self {
        case .stun(let hostPort): return Array(hostPort.utf8)
        case .turn(let credential):
            var writer = WireWriter()
            writer.writeU32(credential.ttlSeconds)
            writer.writeLengthPrefixedUTF8(credential.url)
            writer.writeLengthPrefixedUTF8(credential.username)
            writer.writeLengthPrefixedUTF8(credential.password)
            return writer.bytes
        case .unknown(_, let value): return value
        }
    }

    static func parse(kind: UInt8, value: [UInt8]) throws(RendezvousWireError) -> RendezvousService {
        try value.parse { (raw) throws(RendezvousWireError) -> RendezvousService in
            var reader = WireReader(raw)
            switch kind {
            case stunKind:
                guard !value.isEmpty else { throw .invalid("STUN service has an empty host:port") }
                let hostPort = try reader.readUTF8(value.count, "STUN host:port")
                return .stun(hostPort)
            case turnKind:
                let ttl = try reader.readU32("TURN ttl_seconds")
                let url = try reader.readUTF8(Int(try reader.readU16("TURN url_len")), "TURN url")
                let user = try reader.readUTF8(Int(try reader.readU16("TURN user_len")), "TURN user")
                let pass = try reader.readUTF8(Int(try reader.readU16("TURN pass_len")), "TURN pass")
                try reader.expectEnd("TURN service")
                return .turn(TURNCredential(ttlSeconds: ttl, url: url, username: user, password: pass))
            default:
                return .unknown(kind: kind, value: value)
            }
        }
    }
}

/// TURN credentials in the TURN REST API form (draft-uberti-behave-turn-rest-00 §2.2), which
/// coturn accepts with `use-auth-secret`: `username = expiry ":" random`, `password =
/// base64(HMAC-SHA1(secret, username))`. The password is redacted when printed.
public struct TURNCredential: Hashable, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    /// How long the credential is good for from when it was issued.
    public var ttlSeconds: UInt32
    /// A `turn:` or `turns:` URI (RFC 7065), e.g. `turn:rv.example.org:3478?transport=udp`.
    public var url: String
    public var username: String
    public var password: String

    public init(ttlSeconds: UInt32, url: String, username: String, password: String) {
        self.ttlSeconds = ttlSeconds
        self.url = url
        self.username = username
        self.password = password
    }

    public var description: String {
        "TURNCredential(url: \(url), username: \(username), ttl: \(ttlSeconds) s, password: redacted)"
    }

    public var debugDescription: String { description }
}
