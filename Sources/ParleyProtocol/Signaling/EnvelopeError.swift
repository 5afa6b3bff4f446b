/// Why a signaling envelope was refused (docs/PROTOCOL.md §6.4). Receivers drop the envelope and
/// go on; none of these is fatal to the meeting.
public enum EnvelopeError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Too short or too long to be an envelope, or a header field that makes no sense.
    case malformed(String)
    case unsupportedVersion(UInt8)
    /// Did not decrypt: another room's envelope (wrong room secret) or a tampered one.
    case authenticationFailed
    /// Addressed to another member (the rendezvous misdelivered it).
    case notForUs
    /// Our own envelope echoed back.
    case fromOurselves
    /// The sender's signature does not verify: a member impersonating another, or tampering by a
    /// member who knows the signaling key.
    case badSignature
    /// Already seen, or too old to tell (§6.4).
    case replayed
    /// A type this version does not know (a newer peer): ignored after it authenticated.
    case unknownType(UInt8)
    /// A HELLO whose static key is not bound to its sender's identity.
    case badBinding
    /// A body too large for the largest padding bucket.
    case bodyTooLarge(Int)
    /// The message needs a particular recipient (or the recipient's static key) and has none.
    case needsRecipient(String)

    public var description: String {
        switch self {
        case .malformed(let reason): "malformed envelope: \(reason)"
        case .unsupportedVersion(let version): "envelope version \(version) is not supported"
        case .authenticationFailed: "envelope does not authenticate (another room, or tampered)"
        case .notForUs: "envelope is addressed to another member"
        case .fromOurselves: "envelope is our own"
        case .badSignature: "envelope signature does not verify"
        case .replayed: "envelope was already received (replay)"
        case .unknownType(let type): "envelope of unknown type 0x\(String(type, radix: 16))"
        case .badBinding: "HELLO static key is not bound to the sender's identity"
        case .bodyTooLarge(let size): "envelope body of \(size) bytes is too large"
        case .needsRecipient(let reason): reason
        }
    }
}
