/// Why an invite string was refused, in words for the person who pasted it (docs/PROTOCOL.md §2).
public enum InviteError: Error, Hashable, Sendable, CustomStringConvertible {
    case empty
    case notAnInvite
    /// The prefix names a version this Parley does not speak (the text after `parley`).
    case unsupportedVersion(String)
    /// A character outside the base32 alphabet; `position` counts from 1 after `parley1:`, with
    /// whitespace removed.
    case invalidCharacter(Character, position: Int)
    case truncated(characters: Int, expected: Int)
    case extraCharacters(count: Int, expected: Int)
    case checksumMismatch
    case malformed(String)
    case unknownRequiredField(UInt8)
    case duplicateField(String)
    case missingRendezvousURL
    case badRendezvousURL(String)
    case pinWithoutTLS
    case badTLSPin(length: Int)
    case badTURNHint(String)
    case tooLong(bytes: Int)

    /// A stable name for the kind of error (test vectors, logs): `checksum-mismatch` and so on.
    public var code: String {
        switch self {
        case .empty: "empty"
        case .notAnInvite: "not-an-invite"
        case .unsupportedVersion: "unsupported-version"
        case .invalidCharacter: "invalid-character"
        case .truncated: "truncated"
        case .extraCharacters: "extra-characters"
        case .checksumMismatch: "checksum-mismatch"
        case .malformed: "malformed"
        case .unknownRequiredField: "unknown-required-field"
        case .duplicateField: "duplicate-field"
        case .missingRendezvousURL: "missing-rendezvous-url"
        case .badRendezvousURL: "bad-rendezvous-url"
        case .pinWithoutTLS: "pin-without-tls"
        case .badTLSPin: "bad-tls-pin"
        case .badTURNHint: "bad-turn-hint"
        case .tooLong: "too-long"
        }
    }

    public var description: String {
        switch self {
        case .empty:
            "the invite is empty"
        case .notAnInvite:
            "this is not a Parley invite (an invite starts with \"\(Invite.prefix)\")"
        case .unsupportedVersion(let version):
            "this invite is for Parley invite version \(version), but this Parley understands only version 1: update Parley"
        case .invalidCharacter(let character, let position):
            "the invite has a typo: \"\(character)\" (character \(position) after \"\(Invite.prefix)\") cannot occur in an invite, which uses only the letters a-z and the digits 2-7"
        case .truncated(let characters, let expected):
            "the invite is cut short: it has \(characters) of its \(expected) characters; copy the whole invite"
        case .extraCharacters(let count, let expected):
            "the invite has \(count) characters more than its \(expected); was something pasted after it?"
        case .checksumMismatch:
            "the invite has a typo: its checksum does not match; copy it again"
        case .malformed(let reason):
            "the invite is malformed (\(reason)); it was made by a broken program"
        case .unknownRequiredField(let tag):
            "the invite uses a feature this Parley does not know (field 0x\(String(tag, radix: 16))): update Parley"
        case .duplicateField(let field):
            "the invite has more than one \(field)"
        case .missingRendezvousURL:
            "the invite has no rendezvous URL"
        case .badRendezvousURL(let reason):
            "the invite's rendezvous URL is not usable: \(reason)"
        case .pinWithoutTLS:
            "the invite pins a TLS certificate but its rendezvous URL is ws:// (no TLS); use wss://"
        case .badTLSPin(let length):
            "the invite's TLS pin must be a 32-byte SHA-256 digest, not \(length) bytes"
        case .badTURNHint(let reason):
            "the invite's TURN server hint is not usable: \(reason)"
        case .tooLong(let bytes):
            "the invite would be \(bytes) bytes long; the limit is \(Invite.maximumByteCount)"
        }
    }
}
