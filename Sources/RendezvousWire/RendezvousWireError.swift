/// Why a rendezvous message (docs/PROTOCOL.md §4.2) or a STUN message could not be parsed.
/// The description names the field, so a log line or a test failure says what was wrong.
public enum RendezvousWireError: Error, Hashable, Sendable, CustomStringConvertible {
    case empty
    case unknownType(UInt8)
    case truncated(field: String, needed: Int, available: Int)
    case trailingBytes(message: String, count: Int)
    case invalidUTF8(field: String)
    case zeroMemberID(field: String)
    case duplicateMemberID(UInt32)
    case invalid(String)

    public var description: String {
        switch self {
        case .empty: "empty message (no type byte)"
        case .unknownType(let type): "unknown message type 0x\(hex(type))"
        case .truncated(let field, let needed, let available):
            "truncated: \(field) needs \(needed) bytes, \(available) left"
        case .trailingBytes(let message, let count): "\(message) has \(count) unexpected trailing bytes"
        case .invalidUTF8(let field): "\(field) is not valid UTF-8"
        case .zeroMemberID(let field): "\(field) is member id 0, which no member can have"
        case .duplicateMemberID(let id): "member id \(id) is listed twice"
        case .invalid(let what): what
        }
    }
}

/// Two lowercase hex digits.
func hex(_ byte: UInt8) -> String {
    let digits = Array("0123456789abcdef")
    return String([digits[Int(byte >> 4)], digits[Int(byte & 0x0f)]])
}
